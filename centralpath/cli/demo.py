"""`centralpath demo`: the main job — theory, simulation, a real network, the comparison, a report."""

from __future__ import annotations

from ._common import draw_figures, enable_compilation_cache, log

HELP = (
    "Run the whole story on built-in defaults (about 3 minutes on 2 CPU cores) and write a report."
)
EXAMPLE = "centralpath demo --out runs/demo"


def register(p) -> None:
    p.add_argument(
        "--out", metavar="DIR", default="runs/demo", help="run directory (default runs/demo)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument(
        "--config",
        metavar="FILE.toml",
        help="override [simulation], [convergence] or [training] settings",
    )
    p.add_argument(
        "--no-train",
        dest="train",
        action="store_false",
        help="skip the network part (simulation only)",
    )
    p.add_argument(
        "--no-figures", action="store_true", help="skip figures (the report then has none)"
    )


def _section(source, section: str, values: dict) -> dict:
    """The settings of one [section] of a demo config, each a key of its configuration (a typo
    is an error, as for the other commands), of the type of its default."""
    from .._run.config import TrainConfig
    from ..demo import ConvergenceConfig
    from ..simulate import SimulationConfig

    # [simulation] and [training] take the settings of simulate and train; the demo sets some.
    kind = {
        "simulation": SimulationConfig,
        "convergence": ConvergenceConfig,
        "training": TrainConfig,
    }[section]
    # The process's precision is the command line's, not a setting of the demo's simulation.
    return kind.parse(
        values, f"config file {source}", table=f" in [{section}]", exclude=("precision",)
    )


def run(args) -> int:
    from pathlib import Path

    from .._errors import require
    from .._run.rundir import RunDir, load_config
    from ..demo import DEFAULTS, run_demo, validate, write_report
    from ..measurement._io import write_json

    enable_compilation_cache()
    config = {k: dict(v) for k, v in DEFAULTS.items()}
    if args.config:
        for section, values in load_config(args.config).items():
            require(
                section in config and isinstance(values, dict),
                f"config file {args.config}: unknown section [{section}]; use [simulation], "
                "[convergence] or [training]",
            )
            config[section].update(_section(args.config, section, values))
    validate(config, train=args.train)  # before the run directory and any work
    run_dir = RunDir(
        args.out,
        "demo",
        config,
        overwrite=args.overwrite,
        inputs=[args.config],
        figures=not args.no_figures,
    )
    with run_dir.running():
        results, summary = run_demo(
            Path(run_dir.partial),
            progress=not args.quiet,
            log=log(args),
            train=args.train,
            config=config,
        )
        run_dir.save_results(results)
        write_json(run_dir.file("summary.json"), summary)
        draw_figures("demo", run_dir.partial, results, args)
        write_report(Path(run_dir.partial), summary)
        path = run_dir.finish()
    emit = log(args)
    s = summary["simulation"]
    emit(
        f"closed form vs Diffrax: max relative difference {s['ode_vs_closed_form_max_rel']:.2e}; "
        f"omega_max/omega_min {s['omega_ratio_start']:.3g} -> {s['omega_ratio_end']:.3g}"
    )
    from ..demo import captions, order_verdict, section_verdicts

    emit(f"GD -> flow in eta: {order_verdict(summary['convergence']['slope'])}")
    if "training" in summary:
        caps = captions(summary)
        emit(f"network: {caps['nc_metrics_train']}")
        emit(f"network: {caps['loss_decomposition_train']}")
        emit(f"comparison: {section_verdicts(summary)['comparison']}")
    print(f"report: {path / 'report.html'}")
    return 0
