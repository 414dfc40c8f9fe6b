"""`centralpath simulate`: integrate a flow (Diffrax), run gradient descent, and the closed form."""

from __future__ import annotations

from ._common import add_run_options, draw_figures, enable_compilation_cache, log

HELP = "Simulate a flow of the UFM: ODE (Diffrax) vs gradient descent vs the closed form."
EXAMPLE = "centralpath simulate --flow renormalised --classes 4 --per-class 10 --dim 8 --t-end 1e4 --out runs/sim"

#: How to pick --t-end: the closed form's NC1(t) ≈ ((C−1)/2)·√(N/t) for large t (docs/theory.md
#: §5, `asymptotic_nc1`), solved for t.
T_END_GUIDE = """\
choosing --t-end:
  on F3 (renormalised) NC1 falls as ((C-1)/2)*sqrt(N/t) once the omega_j are large, so NC1
  reaches a target x at about t = N*(C-1)^2/(4*x^2): NC1 = 1e-2 with C = 4, N = 10 needs
  t ~ 2e5; each tenfold lower NC1 costs 100x in t. The saves are log-spaced up to --t-end.
  Exact times for a given start: centralpath predict --omega0 ... --times ..."""


def register(p) -> None:
    from ..simulate import SimulationConfig

    # Every key of a simulate configuration is a flag, from the one declaration of its default
    # and help (SimulationConfig); the same keys are the TOML keys of --config and config.toml.
    SimulationConfig.add_arguments(p)
    p.epilog = f"{T_END_GUIDE}\n\n{p.epilog}"
    p.add_argument(
        "--resume", metavar="RUN", help="continue the interrupted run RUN (bit-identical results)"
    )
    from ._simulate_from import add_from_options

    add_from_options(p)  # --from FEATURES.npz --epoch E: start from a network's state
    add_run_options(p)


def _set_precision(config) -> None:
    """Switch JAX to the configuration's precision (before any array is created)."""
    from .._float64 import set_precision

    set_precision(config.precision)


def saved_config(path):
    """The configuration of an interrupted run, as it ran. A run started before `initial_draw`
    existed drew its features whatever its size: its closed form must start from the state its
    checkpoints continue, not from a statistics draw that `auto` would now choose."""
    from .._run.rundir import load_config
    from ..simulate import SimulationConfig

    saved = load_config(path)
    saved.setdefault("initial_draw", "features")
    return SimulationConfig.from_mapping(saved, f"config file {path}")


def run(args) -> int:
    from .._errors import require
    from .._run.rundir import RunDir, default_run_path
    from ..simulate import SimulationConfig, distinct_gd_saves, initial_draw, simulate
    from ._common import check_resume_flags

    enable_compilation_cache()
    from ._simulate_from import refuse_without_from, run_from

    if getattr(args, "from_features", None):
        return run_from(args)
    refuse_without_from(args)
    # A run's own config.toml is a valid --config for another run: the same keys.
    keys = SimulationConfig.defaults()
    if args.resume:
        require(args.config is None, "--resume continues the saved configuration; drop --config")
        run_dir, _ = RunDir.reopen(args.resume, "simulate")
        with run_dir.running():  # a refusal keeps the partial run and releases its lock
            config = saved_config(run_dir.file("config.toml"))
            check_resume_flags(args, config.as_dict(), keys, run_dir)
            _set_precision(config)
    else:
        config = SimulationConfig.resolve(args, config_path=args.config)
        if config.precision == "float32":
            # float32 carries ~7 digits: tolerances below ~1e-6 cannot be met.
            config = config.replace(rtol=max(config.rtol, 1e-6), atol=max(config.atol, 1e-8))
        # config.toml names the draw `auto` resolved to: the file then reruns (and --resume
        # continues) this run's draw whatever later releases make of `auto`.
        config = config.replace(initial_draw=initial_draw(config))
        _set_precision(config)
        run_dir = RunDir(
            args.out or default_run_path("simulate"),
            "simulate",
            config.as_dict(),
            overwrite=args.overwrite,
            resumable=True,
            inputs=[args.config],
            figures=not args.no_figures,
        )
    # Any failure from here on keeps .RUN.partial with its checkpoints (and says so).
    with run_dir.running():
        results = simulate(
            config, progress=not args.quiet, log=log(args), state_dir=run_dir.file("state")
        )
        results = distinct_gd_saves(results)  # one row per GD time in results.csv
        run_dir.save_results(results)
        draw_figures("simulate", run_dir.partial, results, args)
        run_dir.discard("state")
        path = run_dir.finish(extra_metadata={"initial_draw": initial_draw(config)})
    emit = log(args)
    for series in ("ode", "gd", "closed_form"):
        if f"{series}/nc1" in results:
            emit(
                f"{series:>12}: t = {results[f'{series}/times'][-1]:.4g}  NC1 = {results[f'{series}/nc1'][-1]:.4g}  "
                f"omega = {', '.join(f'{w:.4g}' for w in results[f'{series}/snr'][-1])}"
            )
    moved = omega_moved(results)
    if moved is not None and moved < STILL:
        # Only the renormalised flows have the closed-form clock t ~ N(C-1)^2/(4 NC1^2) that
        # `--help` states; for the others the note says no more than what was measured.
        why = (
            f": their clock slows as N grows (N = {config.per_class})"
            if config.flow in ("renormalised", "whitened")
            else ""
        )
        emit(
            f"note: omega_j moved by at most {100 * moved:.2g}% over the run, so t-end = "
            f"{config.t_end:g} is early for it{why}; raise --t-end (see 'choosing --t-end' in "
            "centralpath simulate --help)"
        )
    print(path)
    return 0


#: Below this largest relative change of ω_j over a run, its figures are flat lines: the output
#: says so, with the fix, rather than leave a reader to take them for a stalled solver.
STILL = 0.01


def omega_moved(results) -> float | None:
    """max_j |ω_j(t_end)/ω_j(0) − 1| of the first series of the run (None where not finite)."""
    import numpy as np

    for series in ("closed_form", "ode", "gd"):
        snr = results.get(f"{series}/snr")
        if snr is not None and len(snr) > 1:
            first, last = np.asarray(snr[0], float), np.asarray(snr[-1], float)
            if not (np.all(np.isfinite(first)) and np.all(np.isfinite(last)) and np.all(first > 0)):
                return None
            return float(np.max(np.abs(last / first - 1)))
    return None
