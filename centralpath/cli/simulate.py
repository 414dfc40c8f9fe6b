"""`centralpath simulate`: integrate a flow (Diffrax), run gradient descent, and the closed form."""

from __future__ import annotations

from ._common import add_run_options, draw_figures, enable_compilation_cache, log

HELP = "Simulate a flow of the UFM: ODE (Diffrax) vs gradient descent vs the closed form."
EXAMPLE = "centralpath simulate --flow renormalised --classes 4 --per-class 10 --dim 8 --t-end 1e4 --out runs/sim"


def register(p) -> None:
    p.add_argument(
        "--flow", help="renormalised (F3, default) | whitened (F3') | central-path (F2) | ufm (F1)"
    )
    p.add_argument("--classes", type=int, help="C, number of classes (default 4)")
    p.add_argument(
        "--per-class", dest="per_class", type=int, help="N, samples per class (default 10)"
    )
    p.add_argument("--dim", type=int, help="p, feature dimension (default 8)")
    p.add_argument(
        "--lam",
        type=float,
        help="ridge λ of the least-squares classifier (central-path; default 0)",
    )
    p.add_argument("--lam-w", dest="lam_w", type=float, help="UFM weight decay on W (default 5e-3)")
    p.add_argument("--lam-h", dest="lam_h", type=float, help="UFM weight decay on H (default 5e-3)")
    p.add_argument("--lam-b", dest="lam_b", type=float, help="UFM weight decay on b (default 0)")
    p.add_argument(
        "--no-bias", dest="bias", action="store_const", const=False, help="classifier without bias"
    )
    p.add_argument(
        "--t-end", dest="t_end", type=float, help="final time, t = kη for GD (default 1e4)"
    )
    p.add_argument(
        "--num-saves", dest="num_saves", type=int, help="log-spaced save times (default 40)"
    )
    p.add_argument("--seed", type=int, help="PRNG seed of the initial state (default 0)")
    p.add_argument(
        "--methods", type=lambda s: [m.strip() for m in s.split(",")], help="ode,gd (default both)"
    )
    p.add_argument(
        "--eta",
        type=float,
        help="GD step size (default 0: half the stable step, at most t-end/100)",
    )
    p.add_argument(
        "--representation", help="reduced (moments, default; exact) | full (every sample)"
    )
    p.add_argument(
        "--nc1-target", dest="nc1_target", type=float, help="stop the ODE when NC1 falls below this"
    )
    p.add_argument("--rtol", type=float, help="ODE relative tolerance (default 1e-10)")
    p.add_argument("--atol", type=float, help="ODE absolute tolerance (default 1e-12)")
    p.add_argument(
        "--max-steps", dest="max_steps", type=int, help="ODE step limit (default 200000)"
    )
    p.add_argument(
        "--precision",
        choices=["float64", "float32"],
        default="float64",
        help="float64 (default) or float32 for speed on accelerators",
    )
    p.add_argument(
        "--resume", metavar="RUN", help="continue the interrupted run RUN (bit-identical results)"
    )
    add_run_options(p)


def run(args) -> int:
    import shutil
    import sys

    import jax

    from .._errors import require
    from .._rundir import RunDir, default_run_path, resolve_config
    from ..simulate import DEFAULTS, simulate, validate

    enable_compilation_cache()
    if args.resume:
        require(args.config is None, "--resume continues the saved configuration; drop --config")
        run_dir, config = RunDir.reopen(args.resume, "simulate")
        precision = config.pop("precision", "float64")
        jax.config.update("jax_enable_x64", precision == "float64")
    else:
        config = resolve_config(DEFAULTS, args, config_path=args.config)
        precision = args.precision
        if precision == "float32":
            # float32 carries ~7 digits: tolerances below ~1e-6 cannot be met.
            config["rtol"] = max(config["rtol"], 1e-6)
            config["atol"] = max(config["atol"], 1e-8)
        validate(config)
        out = args.out or default_run_path("simulate")
        run_dir = RunDir(
            out, "simulate", {**config, "precision": precision}, overwrite=args.overwrite
        )
    state_dir = run_dir.file("state")
    try:
        results = simulate(config, progress=not args.quiet, log=log(args), state_dir=state_dir)
        run_dir.save_results(results)
        draw_figures("simulate", run_dir.partial, results, args)
        shutil.rmtree(state_dir, ignore_errors=True)
        path = run_dir.finish()
    except KeyboardInterrupt:
        print(
            "centralpath simulate: interrupted; no finished output was written — continue with "
            f"`centralpath simulate --resume {run_dir.path}`",
            file=sys.stderr,
        )
        return 130
    except BaseException:
        run_dir.abandon()
        raise
    emit = log(args)
    for series in ("ode", "gd", "closed_form"):
        if f"{series}/nc1" in results:
            emit(
                f"{series:>12}: t = {results[f'{series}/times'][-1]:.4g}  NC1 = {results[f'{series}/nc1'][-1]:.4g}  "
                f"omega = {', '.join(f'{w:.4g}' for w in results[f'{series}/snr'][-1])}"
            )
    print(path)
    return 0
