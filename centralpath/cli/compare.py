"""`centralpath compare FEATURES.npz`: measured ω_j(epoch) against the renormalised theory (§8)."""

from __future__ import annotations

from ._common import add_run_options, draw_figures, log

HELP = "Compare a network's measured SNR dynamics with the closed-form theory (docs/theory.md §8)."
EXAMPLE = "centralpath compare runs/train/features.npz --json compare.json --out runs/compare"


def register(p) -> None:
    p.add_argument(
        "features",
        nargs="?",
        help="features file with K >= 2 checkpoints (schema in the README; or `features` in --config)",
    )
    p.add_argument("--json", metavar="OUT", help="also write the fit and the metrics as JSON")
    p.add_argument(
        "--flow",
        choices=["renormalised", "whitened"],
        help="closed form to fit: renormalised (F3, the paper's; default) or whitened (F3')",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        metavar="LAMBDA",
        help="ridge λ for the decomposition; default: the file's weight_decay",
    )
    p.add_argument("--rtol", type=float, help="pseudo-inverse cutoff (default 1e-10)")
    add_run_options(p)


# The keys of a compare run's config.toml, which is a valid --config for compare.
DEFAULTS = {"features": None, "flow": "renormalised", "weight_decay": None, "rtol": 1e-10}


def run(args) -> int:
    import sys

    from .._errors import require
    from .._io import write_json
    from .._rundir import RunDir, check_output_file, check_run_path, resolve_config
    from .._stream import open_source
    from ..compare import compare_features
    from ._common import write_output_json

    config = resolve_config(DEFAULTS, args, config_path=args.config)
    features, flow, rtol = config["features"], config["flow"], config["rtol"]
    require(
        isinstance(features, str) and features,
        'give a features file FEATURES.npz (or `features = "..."` in --config)',
    )
    require(
        flow in ("renormalised", "whitened"),
        f"unknown flow {flow!r}; choose renormalised or whitened",
    )
    require(isinstance(rtol, float) and 0 < rtol < 1, f"--rtol must lie in (0, 1), got {rtol}")
    weight_decay = config["weight_decay"]
    require(
        weight_decay is None
        or (isinstance(weight_decay, int | float) and not isinstance(weight_decay, bool)),
        f"weight_decay must be a number, got {weight_decay!r}",
    )
    # Outputs are checked before the work: a bad path fails in a second, not after the fit.
    if args.json:
        check_output_file(args.json, inputs=[features, args.config])
    out = (args.out or "runs/compare") if (args.out or args.config) else None
    if out is not None:
        check_run_path(out, overwrite=args.overwrite, inputs=[features, args.config, args.json])
    ff = open_source(features)  # one checkpoint at a time: memory independent of n and K
    require(
        ff.num_checkpoints >= 2,
        f"{features} has {ff.num_checkpoints} checkpoint; comparing dynamics needs at least 2 "
        "(save features at several epochs)",
    )
    fit, results, summary = compare_features(ff, flow=flow, weight_decay=weight_decay, rtol=rtol)
    from .._records import least_squares_warning

    warning = least_squares_warning(ff, summary["checkpoints"])
    if warning:
        print(f"centralpath compare: warning: {warning}", file=sys.stderr)
    if not summary["balanced"]:
        print(
            "centralpath compare: warning: classes are imbalanced; the closed form assumes "
            "balance and uses the mean class size N",
            file=sys.stderr,
        )
    if args.json:
        write_output_json(args.json, summary)
    if out is not None:
        config = {
            "features": str(features),
            "flow": flow,
            "weight_decay": ff.weight_decay if weight_decay is None else weight_decay,
            "rtol": rtol,
        }
        run_dir = RunDir(
            out,
            "compare",
            config,
            overwrite=args.overwrite,
            inputs=[features, args.config, args.json],
            figures=not args.no_figures,
        )
        with run_dir.running():
            run_dir.save_results(results)
            write_json(run_dir.file("compare.json"), summary)
            draw_figures("compare", run_dir.partial, results, args)
            path = run_dir.finish()
        log(args)(f"run directory: {path}")
    if not args.quiet:
        from ._table import table

        rows = [
            {
                "j": j + 1,
                "a_j": float(fit.a[j]),
                "rel_err": float(fit.relative_error[j]),
                "omega_first": float(fit.omega_measured[0, j]),
                "omega_last": float(fit.omega_measured[-1, j]),
            }
            for j in range(fit.a.shape[0])
        ]
        print(table(rows, ["j", "omega_first", "omega_last", "a_j", "rel_err"]))
        print(
            f"variance of F(omega) explained: {fit.variance_explained:.4f}; "
            f"drift of F(omega_j) - F(omega_k) / max|tau|: {fit.drift_relative:.3g}; "
            f"time map monotone: {fit.time_map_monotone}; NC1 exponent vs tau (late): {fit.nc1_exponent:.3g}"
        )
    return 0
