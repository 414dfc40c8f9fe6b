"""`centralpath predict`: the closed-form ω_j(t) of the renormalised flow (docs/theory.md §6 F3)."""

from __future__ import annotations

from ._common import float_list

HELP = "Closed-form SNR singular values ω_j(t) of the renormalised central-path flow."
EXAMPLE = "centralpath predict --classes 10 --per-class 500 --omega0 0.5,1,2 --times 0,1e3,1e6 --json omega.json"


def register(p) -> None:
    p.add_argument("--classes", type=int, required=True, help="C, number of classes")
    p.add_argument(
        "--per-class", dest="per_class", type=float, required=True, help="N, samples per class"
    )
    p.add_argument(
        "--omega0",
        type=float_list,
        required=True,
        help="initial ω_j > 0, comma-separated (at most C-1), in any order: they are sorted "
        "largest first, so omega_1 is the largest, as everywhere in centralpath",
    )
    p.add_argument("--times", type=float_list, required=True, help="times t >= 0, comma-separated")
    p.add_argument(
        "--kappa",
        type=float,
        default=1.0,
        help="time factor κ of the constants' convention (default 1)",
    )
    p.add_argument(
        "--flow",
        choices=["renormalised", "whitened"],
        default="renormalised",
        help="renormalised (F3, default) or whitened (F3')",
    )
    p.add_argument(
        "--json",
        metavar="OUT",
        help='write {"times": [...], "omega0": [...], "omega": [[...], ...]} (largest first)',
    )


def run(args) -> int:
    import math

    from .._errors import require

    C, N = args.classes, args.per_class
    require(C >= 2, f"--classes must be >= 2, got {C}")
    require(math.isfinite(N) and N >= 2, f"--per-class must be >= 2, got {N}")
    om, ts = args.omega0, args.times
    require(len(om) >= 1, "--omega0 needs at least one value")
    require(
        len(om) <= C - 1,
        f"--omega0 has {len(om)} values but C = {C} classes have at most C-1 = {C - 1}",
    )
    require(
        all(math.isfinite(w) and w > 0 for w in om),
        f"--omega0 values must be finite and > 0, got {om}",
    )
    require(len(ts) >= 1, "--times needs at least one value")
    require(
        all(math.isfinite(t) and t >= 0 for t in ts), f"--times must be finite and >= 0, got {ts}"
    )
    require(math.isfinite(args.kappa) and args.kappa > 0, f"--kappa must be > 0, got {args.kappa}")
    # ω_1 ≥ … ≥ ω_{C−1} everywhere (analyze, compare, the library): the columns follow. F is
    # increasing, so the order at t = 0 is the order at every t.
    om = sorted(om, reverse=True)

    if args.json:
        from .._run.rundir import check_output_file

        check_output_file(args.json)

    import jax
    import numpy as np

    from .._eigen import eigen_dynamics
    from ._common import write_output_json

    # One compiled call: op-by-op evaluation compiles every primitive of the Newton iteration
    # separately (~1.2 s of a cold start against ~0.4 s for one jit; inputs checked above).
    evaluate = jax.jit(lambda w, t: eigen_dynamics(w, C, N, kappa=args.kappa, flow=args.flow)(t))
    omega = np.asarray(evaluate(np.asarray(om, float), np.asarray(ts, float)))
    if args.json:
        write_output_json(
            args.json, {"times": list(ts), "omega0": list(om), "omega": omega.tolist()}
        )
    if not args.quiet:
        from ._table import table

        cols = ["t"] + [f"omega_{j + 1}" for j in range(len(om))]
        rows = [
            {"t": t, **{c: float(w) for c, w in zip(cols[1:], row, strict=True)}}
            for t, row in zip(ts, omega, strict=True)
        ]
        print(table(rows, cols))
    return 0
