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
        help="float64 (default) or float32 for speed on accelerators",
    )
    p.add_argument(
        "--resume", metavar="RUN", help="continue the interrupted run RUN (bit-identical results)"
    )
    add_run_options(p)


def _set_precision(config: dict) -> str:
    """Take `precision` out of a configuration and switch JAX to it."""
    import jax

    from .._errors import require

    precision = config.pop("precision")
    require(
        precision in ("float64", "float32"),
        f"precision must be float64 or float32, got {precision!r}",
    )
    jax.config.update("jax_enable_x64", precision == "float64")
    return precision


def run(args) -> int:
    from argparse import Namespace

    from .._errors import require
    from .._rundir import RunDir, default_run_path, resolve_config
    from ..simulate import DEFAULTS, simulate, validate
    from ._common import check_resume_flags

    enable_compilation_cache()
    # The keys of config.toml: a run's own config.toml is a valid --config for another run.
    keys = {**DEFAULTS, "precision": "float64"}
    if args.resume:
        require(args.config is None, "--resume continues the saved configuration; drop --config")
        run_dir, _ = RunDir.reopen(args.resume, "simulate")
        with run_dir.running():  # a refusal keeps the partial run and releases its lock
            config = resolve_config(keys, Namespace(), config_path=run_dir.file("config.toml"))
            check_resume_flags(args, config, keys, run_dir)
            _set_precision(config)
    else:
        config = resolve_config(keys, args, config_path=args.config)
        precision = _set_precision(config)
        if precision == "float32":
            # float32 carries ~7 digits: tolerances below ~1e-6 cannot be met.
            config["rtol"] = max(config["rtol"], 1e-6)
            config["atol"] = max(config["atol"], 1e-8)
        validate(config)
        run_dir = RunDir(
            args.out or default_run_path("simulate"),
            "simulate",
            {**config, "precision": precision},
            overwrite=args.overwrite,
            resumable=True,
            inputs=[args.config],
        )
    # Any failure from here on keeps .RUN.partial with its checkpoints (and says so).
    with run_dir.running():
        results = simulate(
            config, progress=not args.quiet, log=log(args), state_dir=run_dir.file("state")
        )
        run_dir.save_results(results)
        draw_figures("simulate", run_dir.partial, results, args)
        run_dir.discard("state")
        path = run_dir.finish()
    emit = log(args)
    for series in ("ode", "gd", "closed_form"):
        if f"{series}/nc1" in results:
            emit(
                f"{series:>12}: t = {results[f'{series}/times'][-1]:.4g}  NC1 = {results[f'{series}/nc1'][-1]:.4g}  "
                f"omega = {', '.join(f'{w:.4g}' for w in results[f'{series}/snr'][-1])}"
            )
    print(path)
    return 0
