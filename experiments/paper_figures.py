"""The paper's empirical figure set, offline: {digits, mnist, mnist1d} × {mlp, cnn} × {mse, ce}.

Every run trains with `centralpath.networks` (held-out test split, features captured at
log-spaced epochs), is measured with `centralpath.measurement.analysis.analyze`, and lands in one results
file; `centralpath.plotting.paper` draws one panel per quantity with every run in it:

    python experiments/paper_figures.py [experiments/paper_figures.toml] [--out DIR]

writes runs/paper/ (or DIR/paper/; `experiments/regenerate_figures.py` writes figures/paper/:
results.npz/csv, summary.json with the per-run table, figures/) and
prints the table of figures/README.md (final NC1, L_⊥LS/L and test accuracy per run) and the
wall time. Sizes and epochs are chosen to finish in under 20 minutes on two CPU cores (the
TOML says which; the measured time is in summary.json).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _runner import DEFAULT_OUT, enable_x64, parse_args

#: The series of one run in results.npz (besides `times`): analyze's collapse measures and loss
#: terms, L_⊥LS/L (the quantities' `figure` flag in centralpath._quantities).
from centralpath._quantities import FIGURE_KEYS as SERIES  # noqa: E402


def run_config(cfg: dict, dataset: str, model: str, loss: str) -> dict:
    """The `train` configuration of one run: defaults ← [common] ← [dataset.X] ← [model.Y] ←
    [loss.Z] ← [run."X-Y"] ← [run."X-Y-Z"] (each optional)."""
    from centralpath.networks.train import DEFAULTS

    name = f"{dataset}-{model}-{loss}"
    out = dict(DEFAULTS)
    for part in (
        cfg.get("common", {}),
        cfg.get("dataset", {}).get(dataset, {}),
        cfg.get("model", {}).get(model, {}),
        cfg.get("loss", {}).get(loss, {}),
        cfg.get("run", {}).get(f"{dataset}-{model}", {}),
        cfg.get("run", {}).get(name, {}),
    ):
        out.update(part)
    out.update(dataset=dataset, model=model, loss=loss)
    return out


def train_and_measure(config: dict) -> tuple[dict, dict]:
    """(series, summary) of one run: train, then analyze the captured features."""
    import numpy as np

    from centralpath.measurement._io import validate_features_arrays
    from centralpath.measurement.analysis import analyze
    from centralpath.networks.train import train_from_config

    start = time.perf_counter()
    training = train_from_config(config)
    ff = validate_features_arrays(training.features_arrays())
    records = analyze(ff)
    series = {"times": training.epochs.astype(np.float64)}
    for key in SERIES:
        if key == "perp_rel":
            loss, perp = series["loss"], series["loss_perp"]
            series[key] = np.divide(perp, loss, out=np.zeros_like(perp), where=loss > 0)
        else:
            series[key] = np.asarray([r[key] for r in records], dtype=np.float64)
    series["train_accuracy"] = np.asarray(training.accuracy, float)
    series["train_loss"] = np.asarray(training.loss, float)
    if training.test_accuracy is not None:
        series["test_accuracy"] = np.asarray(training.test_accuracy, float)
        series["test_loss"] = np.asarray(training.test_loss, float)
    e0 = training.first_zero_error_epoch
    summary = {
        "epochs": int(config["epochs"]),
        "train_samples": int(training.labels.shape[0]),
        "final_train_accuracy": float(training.accuracy[-1]),
        "first_zero_error_epoch": e0,
        "final_test_accuracy": None
        if training.test_accuracy is None
        else float(training.test_accuracy[-1]),
        "nc1_first": float(series["nc1"][0]),
        "nc1_final": float(series["nc1"][-1]),
        "perp_rel_first": float(series["perp_rel"][0]),
        "perp_rel_final": float(series["perp_rel"][-1]),
        "nc4_final": float(series["nc4"][-1]),
        "wall_s": time.perf_counter() - start,
    }
    return series, summary


def markdown_table(summaries: dict[str, dict]) -> str:
    """The table of figures/README.md: per run, the final NC1, L_⊥LS/L and test accuracy."""
    rows = [
        "| run | epochs | train acc. (first 100% epoch) | test acc. | NC1 first → final | "
        "L_⊥LS/L first → final |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        e0 = s["first_zero_error_epoch"]
        train = f"{s['final_train_accuracy']:.4f} ({'never' if e0 is None else e0})"
        test = "–" if s["final_test_accuracy"] is None else f"{s['final_test_accuracy']:.3f}"
        perp = f"{s['perp_rel_first']:.2g} → {s['perp_rel_final']:.2g}"
        if name.endswith("-ce"):
            perp += " (CE: not least-squares)"
        rows.append(
            f"| {name} | {s['epochs']} | {train} | {test} | "
            f"{s['nc1_first']:.3g} → {s['nc1_final']:.3g} | {perp} |"
        )
    return "\n".join(rows)


def flat_tables(cfg: dict) -> dict:
    """The configuration with nested tables as dotted names ([dataset.digits]), which is how
    the run directory's config.toml (one level of tables) writes them and TOML reads them back
    as the same nesting."""
    out: dict = {}
    for k, v in cfg.items():
        if not isinstance(v, dict):
            out[k] = v
            continue
        for k2, v2 in v.items():
            if isinstance(v2, dict):
                out[f"{k}.{k2}"] = v2
            else:
                out.setdefault(k, {})[k2] = v2
    return out


def main(cfg: dict, out_root: Path | None = None, *, log=print) -> Path:
    import numpy as np

    from centralpath._run.rundir import RunDir
    from centralpath.measurement._io import write_json
    from centralpath.plotting.paper import draw_paper

    start = time.perf_counter()
    matrix = cfg.get("matrix", {})
    datasets = matrix.get("datasets", ["digits", "mnist", "mnist1d"])
    models = matrix.get("models", ["mlp", "cnn"])
    losses = matrix.get("losses", ["mse", "ce"])
    results: dict[str, np.ndarray] = {}
    summaries: dict[str, dict] = {}
    for dataset in datasets:
        for model in models:
            for loss in losses:
                name = f"{dataset}-{model}-{loss}"
                series, summary = train_and_measure(run_config(cfg, dataset, model, loss))
                results.update({f"{name}/{k}": v for k, v in series.items()})
                summaries[name] = summary
                log(
                    f"{name}: {summary['wall_s']:.0f} s, train acc "
                    f"{summary['final_train_accuracy']:.4f}, test acc "
                    f"{summary['final_test_accuracy']}, NC1 {summary['nc1_final']:.3g}, "
                    f"L_perp/L {summary['perp_rel_final']:.3g}"
                )
    out = (DEFAULT_OUT if out_root is None else Path(out_root)) / cfg.get("name", "paper")
    run = RunDir(out, "experiment paper_figures", flat_tables(cfg), overwrite=True)
    try:
        run.save_results(results)
        draw_paper(results, run.partial)
        wall = time.perf_counter() - start
        write_json(
            run.file("summary.json"),
            {"runs": summaries, "wall_s": wall, "table": markdown_table(summaries)},
        )
        path = run.finish(extra_metadata={"wall_s": wall})
    except BaseException:
        run.abandon()
        raise
    log(markdown_table(summaries))
    log(f"wall time {wall:.0f} s")
    return path


if __name__ == "__main__":
    from centralpath._run.runtime import configure_cpu_runtime

    configure_cpu_runtime()  # before the JAX backend starts, as the command line does
    enable_x64()
    print(main(*parse_args(__file__, sys.argv)))
