"""Figures of `compare --model`: measured ω_j against each model's prediction.

Pure functions of a run's saved results (`predict/…` series, written by
`centralpath.measurement.predictive.results_series`): nothing is computed here but what a plot needs, so
`centralpath plot RUN` redraws them identically. As everywhere in `plotting`, a value that is not
data is not drawn: an ω_j beyond float64 resolution (+inf, measured or predicted), a prediction
before the start e0 (NaN), ω_j = 0 (coinciding class means) on a log axis.
"""

from __future__ import annotations

import numpy as np

MODEL_ORDER = ("closed-form", "central-path", "ufm")
MEASURED_STYLE = dict(marker="o", linestyle="none", markersize=3.5, markerfacecolor="none")
PREDICTED_STYLE = dict(linestyle="-", linewidth=1.3)


def models_in(results: dict) -> list[str]:
    """The models whose predictions a run saved, in the ladder's order."""
    return [m for m in MODEL_ORDER if f"predict/{m}/omega" in results]


def _positive(y) -> np.ndarray:
    """`y` as float with NaN where it cannot be drawn on a log axis (not finite, or ≤ 0)."""
    from . import mask_below

    return mask_below(y, np.finfo(np.float64).tiny)


def _title(results: dict, model: str) -> str:
    err = float(np.asarray(results.get(f"predict/{model}/median_relative_error", np.nan)))
    skill = float(np.asarray(results.get(f"predict/{model}/skill", np.nan)))
    if not np.isfinite(err):
        return f"{model}: no prediction"
    text = f"{model}: median error {100 * err:.2f}%"
    return text + (f", skill {skill:.2f}" if np.isfinite(skill) else "")


def figure_models(results: dict) -> object:
    """One panel per model: measured ω_j (circles) and the model's ω̂_j (lines) against the
    epoch (symlog), one colour per j, with a legend; a dotted line marks the start e0."""
    from matplotlib.lines import Line2D

    from . import _beyond_resolution, _plt, _time_axis

    plt = _plt()
    models = models_in(results)
    fig, axes = plt.subplots(
        1,
        len(models),
        figsize=(4.4 * len(models) + 1.6, 4.0),
        squeeze=False,
        sharey=True,
        constrained_layout=True,
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    e = np.asarray(results["predict/epochs"], dtype=np.float64)
    measured = _positive(results["predict/omega_measured"])
    m = measured.shape[1]
    for ax, model in zip(axes[0], models, strict=True):
        predicted = _positive(results[f"predict/{model}/omega"])
        for j in range(m):
            c = colors[j % len(colors)]
            if np.any(np.isfinite(measured[:, j])):
                ax.plot(e, measured[:, j], color=c, **MEASURED_STYLE)
            if np.any(np.isfinite(predicted[:, j])):
                ax.plot(e, predicted[:, j], color=c, **PREDICTED_STYLE)
        e0 = float(np.asarray(results.get(f"predict/{model}/from_epoch", np.nan)))
        if np.isfinite(e0):
            ax.axvline(e0, color="0.4", linestyle=":", linewidth=1.0)
        _beyond_resolution(ax, results, ["train"], label=False)
        ax.set_yscale("log")
        _time_axis(ax, e, "epoch")
        ax.set_title(_title(results, model), fontsize=9)
    axes[0][0].set_ylabel(r"$\omega_j$")
    handles = [
        Line2D([], [], color=colors[j % len(colors)], linewidth=2.5, label=rf"$j={j + 1}$")
        for j in range(m)
    ]
    handles += [
        Line2D([], [], color="0.2", label="measured", **MEASURED_STYLE),
        Line2D([], [], color="0.2", label="model", **PREDICTED_STYLE),
        Line2D([], [], color="0.4", linestyle=":", linewidth=1.0, label="start $e_0$"),
    ]
    axes[0][-1].legend(
        handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False
    )
    fig.suptitle(r"Measured $\omega_j$ against each model started from the network at $e_0$")
    return fig


def figure_clock(results: dict) -> object:
    """Each model's clock: its time at every checkpoint from e0 on (symlog axes; the models'
    time units differ, so one panel each)."""
    from . import _plt, _time_axis

    plt = _plt()
    models = models_in(results)
    fig, axes = plt.subplots(
        1, len(models), figsize=(4.0 * len(models), 3.6), squeeze=False, constrained_layout=True
    )
    e = np.asarray(results["predict/epochs"], dtype=np.float64)
    for ax, model in zip(axes[0], models, strict=True):
        t = np.asarray(results[f"predict/{model}/flow_time"], dtype=np.float64)
        t = np.where(np.isfinite(t), t, np.nan)
        ax.plot(e, t, marker="o", markersize=3)
        _time_axis(ax, e, "epoch")
        if np.any(np.isfinite(t)) and np.nanmin(t) >= 0 and np.nanmax(t) > 0:
            label = _time_axis(ax, t, "model time t", set_label=False, which="y")
            ax.set_ylabel(label.replace("; ", "\n"), fontsize=8)
        ax.set_title(model, fontsize=9)
    fig.suptitle("Clock: model time against epoch")
    return fig


def figures(results: dict) -> dict[str, object]:
    """The figures of a `compare --model` run, by file stem (none without predictions)."""
    if not models_in(results):
        return {}
    return {
        "models_vs_measured": lambda: figure_models(results),
        "model_clock": lambda: figure_clock(results),
    }
