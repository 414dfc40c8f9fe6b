"""`centralpath simulate --from FEATURES.npz [--epoch E]`: a flow started from a network's own
state at one checkpoint (`centralpath.measurement._initial_state`), instead of a random one."""

from __future__ import annotations


def add_from_options(p) -> None:
    p.add_argument(
        "--from",
        dest="from_features",
        metavar="FEATURES.npz",
        help="start the flow from the class statistics (and W, b for ufm) of a features file's "
        "checkpoint, dead directions dropped; central-path and ufm use the file's weight decay "
        "unless --lam is given; ODE only",
    )
    p.add_argument(
        "--epoch", type=float, help="with --from: the checkpoint's epoch (default: the last)"
    )


def run_from(args) -> int:
    """The whole `simulate --from` command: resolve, start from the checkpoint, solve, write."""

    from .._errors import require
    from .._float64 import set_precision
    from .._run.rundir import RunDir, default_run_path
    from ..measurement._initial_state import measured_state, simulate_measured
    from ..simulate import SimulationConfig
    from ._common import draw_figures, log

    require(args.resume is None, "--resume continues a saved run; drop --from (or --resume)")
    config = SimulationConfig.resolve(args, config_path=args.config)
    require(
        config.precision == "float64",
        "simulate --from runs in float64 (measured states are analysed in float64); drop "
        "--precision float32",
    )
    set_precision("float64")
    given = [f"--{k.replace('_', '-')}" for k in ("lam_w", "lam_h", "lam_b", "eta", "seed")]
    given = [flag for flag in given if getattr(args, flag[2:].replace("-", "_"), None) is not None]
    require(
        not given,
        f"simulate --from takes the ufm's decays from the file's weight decay (or --lam) and "
        f"its state from the file; drop {', '.join(given)}",
    )
    require(
        args.methods is None or list(args.methods) == ["ode"],
        "simulate --from solves the ODE (Diffrax) only; drop --methods or pass --methods ode",
    )
    require(
        config.representation == "reduced",
        "simulate --from starts from the class statistics (--representation reduced)",
    )
    measured = measured_state(args.from_features, args.epoch)
    results = simulate_measured(
        measured,
        config.flow,
        t_end=config.t_end,
        num_saves=config.num_saves,
        lam=args.lam,
        rtol=config.rtol,
        atol=config.atol,
        max_steps=config.max_steps,
    )
    saved = {
        "from": str(args.from_features),
        "epoch": measured.epoch,
        "flow": config.flow,
        "lam": measured.weight_decay if args.lam is None else args.lam,
        "t_end": config.t_end,
        "num_saves": config.num_saves,
        "rtol": config.rtol,
        "atol": config.atol,
        "max_steps": config.max_steps,
    }
    run_dir = RunDir(
        args.out or default_run_path("simulate"),
        "simulate",
        saved,
        overwrite=args.overwrite,
        inputs=[args.config, args.from_features],
        figures=not args.no_figures,
    )
    with run_dir.running():
        run_dir.save_results(results)
        draw_figures("simulate", run_dir.partial, results, args)
        path = run_dir.finish()
    emit = log(args)
    emit(
        f"from epoch {measured.epoch:g} of {args.from_features} ({measured.dropped} dead "
        f"direction(s) dropped, p = {measured.stats.dim})"
    )
    for series in ("ode", "closed_form"):
        if f"{series}/nc1" in results:
            omega = results[f"{series}/snr"][-1]
            emit(
                f"{series:>12}: t = {results[f'{series}/times'][-1]:.4g}  "
                f"NC1 = {results[f'{series}/nc1'][-1]:.4g}  "
                f"omega = {', '.join(f'{w:.4g}' for w in omega)}"
            )
    print(path)
    return 0
