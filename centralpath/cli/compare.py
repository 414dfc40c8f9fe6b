"""`centralpath compare FEATURES.npz`: measured ω_j(epoch) against the renormalised theory (§8)."""

from __future__ import annotations

from ._common import (
    KAPPA_CLOCKS_HELP,
    add_kappa_options,
    add_run_options,
    check_kappa_scale,
    draw_figures,
    log,
)

HELP = (
    "Does the theory predict my network? Each model runs forward from the network's own state "
    "and is scored against the measured omega_j and NC1, with the no-change baseline and a "
    "verdict (docs/guides/predict.md)."
)
EXAMPLE = "centralpath compare runs/train/features.npz --json compare.json --out runs/compare"


def register(p) -> None:
    p.add_argument(
        "features",
        nargs="?",
        help="features or statistics file (or folder of checkpoints) with K >= 2 checkpoints "
        "(schemas in docs/reference/file-formats.md; or `features` in --config)",
    )
    p.add_argument(
        "--json",
        metavar="OUT",
        help="also write the verdict, the scores and the metrics (with --fit: the fit) as JSON",
    )
    p.add_argument(
        "--fit",
        action="store_true",
        default=None,
        help="instead of predicting: fit the closed form's free time map to the whole run "
        "(docs/theory.md §8; almost any growing omega fits, so this is no test of the theory)",
    )
    p.add_argument(
        "--flow",
        choices=["renormalised", "whitened"],
        help="with --fit, the closed form to fit: renormalised (F3, the paper's; default) or "
        "whitened (F3')",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        metavar="LAMBDA",
        help="ridge λ for the decomposition; default: the file's weight_decay",
    )
    p.add_argument("--rtol", type=float, help="pseudo-inverse cutoff (default 1e-10)")
    p.add_argument(
        "--model",
        choices=["closed-form", "central-path", "ufm", "all"],
        help="the model predicting omega_j and NC1 from the network's own state at e0: "
        "closed-form (F3), central-path (ridge flow at the weight decay), ufm (from the "
        "measured W, b), all (default: the ladder; the verdict is the central path's)",
    )
    p.add_argument(
        "--from-epoch",
        dest="from_epoch",
        metavar="{auto,N}",
        help="start e0 of the prediction: auto (default; the first checkpoint at which the "
        "trend of L_perp/L (its non-increasing fit) is <= 0.2, with the training accuracy "
        "within 0.01 of its largest from there on) or an epoch of the file",
    )
    p.add_argument(
        "--clock",
        choices=["monotone", "lr", "lr-loss", "lr-grad", "lr-loss-epoch", "speed", "displacement"],
        help="epochs -> model time: monotone (default; the best non-decreasing map, fitted); "
        f"{KAPPA_CLOCKS_HELP}; speed (no kappa: the model's class means travel as far as the "
        "network's, epoch by epoch); displacement (no kappa: as far from e0 as the network's at each "
        "checkpoint). lr* and speed need the training record (docs/guides/predict.md)",
    )
    add_kappa_options(p, kappa_default="default: fitted to this run")
    add_run_options(p)


def run(args) -> int:
    import sys

    import numpy as np

    from .._errors import require
    from .._run.config import CompareConfig
    from .._run.rundir import check_output_file, check_run_path
    from ..measurement._stream import open_source
    from ..measurement.compare import compare_features
    from ._common import write_output_json

    # The keys of a compare run's config.toml (a valid --config for compare): CompareConfig.
    config = CompareConfig.resolve(args, config_path=args.config).as_dict()
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
    fitting = bool(config["fit"])
    require(
        not (fitting and config["model"] is not None),
        "--fit fits the free time map, --model predicts from the network's state; give one",
    )
    if not fitting:
        config["model"] = config["model"] or "all"
        check_model_options(config)
    # Outputs are checked before the work: a bad path fails in a second, not after the fit.
    if args.json:
        check_output_file(args.json, inputs=[features, args.config, config["kappa_from"]])
    out = (args.out or "runs/compare") if (args.out or args.config) else None
    if out is not None:
        check_run_path(out, overwrite=args.overwrite, inputs=[features, args.config, args.json])
    ff = open_source(features)  # one checkpoint at a time: memory independent of n and K
    require(
        ff.num_checkpoints >= 2,
        f"{features} has {ff.num_checkpoints} checkpoint; comparing dynamics needs at least 2 "
        "(save features at several epochs)",
    )
    if not fitting:
        return run_models(args, config, ff, out)
    fit, results, summary = compare_features(ff, flow=flow, weight_decay=weight_decay, rtol=rtol)
    from ..measurement._report import least_squares_warning

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
            "fit": True,
            "flow": flow,
            "weight_decay": ff.weight_decay if weight_decay is None else weight_decay,
            "rtol": rtol,
        }
        _write_run(out, config, results, summary, args, inputs=[features, args.config, args.json])
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
        exponent = (
            f"{fit.nc1_exponent:.3g} (theory: -1/2)"
            if np.isfinite(fit.nc1_exponent)
            else "not measured (fewer than 3 late checkpoints with tau > 0)"
        )
        print(
            f"variance of F(omega) explained: {fit.variance_explained:.4f}; "
            f"drift of F(omega_j) - F(omega_k) / max|tau|: {fit.drift_relative:.3g}; "
            f"time map monotone: {fit.time_map_monotone}; NC1 exponent vs tau (late): {exponent}"
        )
        print(
            "note: the free time map is fitted to this run, so a good fit is no test; "
            "`centralpath compare` without --fit predicts and gives a verdict"
        )
    return 0


def _write_run(out, config: dict, results: dict, summary: dict, args, *, inputs) -> None:
    """The run directory of a comparison: config.toml, results, compare.json, figures."""
    from .._run.rundir import RunDir
    from ..measurement._io import write_json

    run_dir = RunDir(
        out,
        "compare",
        config,
        overwrite=args.overwrite,
        inputs=inputs,
        figures=not args.no_figures,
    )
    with run_dir.running():
        run_dir.save_results(results)
        write_json(run_dir.file("compare.json"), summary)
        draw_figures("compare", run_dir.partial, results, args)
        path = run_dir.finish()
    log(args)(f"run directory: {path}")


def check_model_options(config: dict) -> None:
    """One-line refusals of the predictive options, before any work (`--model` given)."""
    from .._errors import InputError, require, require_real
    from ..measurement.predictive import CLOCKS, MODELS

    model, clock = config["model"], config["clock"] or "monotone"
    require(
        model in (*MODELS, "all"),
        f"unknown model {model!r}; choose one of {', '.join(MODELS)}, or all",
    )
    require(clock in CLOCKS, f"unknown clock {clock!r}; choose one of {', '.join(CLOCKS)}")
    fe = config["from_epoch"]
    if isinstance(fe, str) and fe != "auto":
        try:
            fe = float(fe)
        except ValueError:
            raise InputError(f"--from-epoch must be auto or an epoch number, got {fe!r}") from None
    if fe is not None and fe != "auto":
        require_real("--from-epoch", fe, 0)
    config["from_epoch"] = "auto" if fe is None else fe
    config["clock"] = clock
    kappa, source = config["kappa"], config["kappa_from"]
    check_kappa_scale(kappa, source, clock)
    if kappa is not None:
        require(
            model != "all",
            "--kappa K is one model's time scale, and the models' times differ; with --model "
            "all pass --kappa-from the JSON of another --model all run with the same clock",
        )
    if source is not None:
        require(isinstance(source, str) and source, "--kappa-from needs a path to a JSON file")


def run_models(args, config: dict, ff, out) -> int:
    """`compare --model …`: the prediction of each model from e0, scored, with a verdict."""
    import sys

    from ..measurement._report import checkpoint_records, least_squares_warning
    from ..measurement.compare import check_epochs, measured_series
    from ..measurement.predictive import (
        LADDER_COLUMNS,
        MODELS,
        compare_models,
        ladder_rows,
        results_series,
        summary_json,
    )
    from ._common import write_output_json

    weight_decay = config["weight_decay"]
    if weight_decay is not None:
        from .._errors import require_real

        require_real("--weight-decay", weight_decay, 0)
    check_epochs(ff.epochs)  # a prediction runs forward in time: epochs must increase
    models = list(MODELS) if config["model"] == "all" else [config["model"]]
    measurement, records, predictions = compare_models(
        ff,
        models,
        from_epoch=config["from_epoch"],
        clock=config["clock"],
        kappa=config["kappa"],
        kappa_from=config["kappa_from"],
        weight_decay=weight_decay,
        rtol=config["rtol"],
    )
    rows = checkpoint_records(ff, records)
    warning = least_squares_warning(ff, rows)
    if warning:
        print(f"centralpath compare: warning: {warning}", file=sys.stderr)
    summary = summary_json(predictions, rows)
    results = measured_series(ff, records)
    results.update(results_series(measurement, predictions))
    if args.json:
        write_output_json(args.json, summary)
    if out is not None:
        saved = {
            "features": str(config["features"]),
            "weight_decay": ff.weight_decay if weight_decay is None else weight_decay,
            "rtol": config["rtol"],
            "model": config["model"],
            "from_epoch": config["from_epoch"],
            "clock": config["clock"],
        }
        if config["kappa"] is not None:
            saved["kappa"] = config["kappa"]
        if config["kappa_from"] is not None:
            saved["kappa_from"] = str(config["kappa_from"])
        inputs = [config["features"], args.config, args.json, config["kappa_from"]]
        _write_run(out, saved, results, summary, args, inputs=inputs)
    if not args.quiet:
        from ._table import table

        first = predictions[0]
        print(f"start e0: {first.from_epoch_rule}; clock: {first.clock}")
        print(table(ladder_rows(predictions), list(LADDER_COLUMNS)))
        print(
            "errors: median |omega_j predicted - measured| / measured over the scored "
            "checkpoints; baseline: the same for no change from e0; skill = 1 - error / "
            "baseline; nc1_factor: median max(r, 1/r) of NC1 predicted / measured (nc1_baseline: "
            "of NC1(e0)); kappa: the clock's scale (- for a clock without one); other '-': not "
            "scored (see the verdict)"
        )
        if len(predictions) > 1:  # the ladder: say which model's verdict is the answer
            print(
                f"verdict: {summary['verdict']} (the {summary['verdict_of']} model's, the "
                "theory under test; each model's below)"
            )
        for p in predictions:
            print(f"{p.model}: {p.verdict}: {p.reason}")
            last = p.numbers.get("last")
            if last:
                print(f"  at epoch {last['epoch']:g}, measured / predicted: {_pair(last)}")
            for note in p.notes:
                print(f"  note: {note}")
    return 0


def _pair(last: dict) -> str:
    def show(x):
        return "-" if x is None else f"{x:.3g}"

    return "; ".join(
        f"{name} {show(last[f'{key}_measured'])} / {show(last[f'{key}_predicted'])}"
        for key, name in (
            ("omega_ratio", "omega_max/omega_min"),
            ("nc1", "NC1"),
            ("perp_rel", "L_perp/L"),
        )
    )
