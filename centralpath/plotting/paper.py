"""The paper's figure set for a matrix of trained networks: one panel per quantity, every run
in it (Han, Papyan & Donoho 2022, Figs. 2–7 in spirit: accuracy, NC1–NC4, and L_⊥LS/L for the
MSE runs). Pure functions of saved results; nothing is computed here but what a plot needs.

Results are flat, `"<run>/<quantity>"` with `"<run>/times"` the captured epochs, runs named
`<dataset>-<model>-<loss>` (`experiments/paper_figures.py` writes them). Colour is the
dataset and network; the line style is the loss (solid MSE, dashed cross-entropy).

What is drawn as data: a value below its float64 resolution (`RESOLUTION` rules of
`centralpath.plotting`: × the first value for NC1, 1 for ratios of order-one quantities,
squared for NC3) is masked, and that run's floor is drawn dotted where something was masked;
exact zeros of NC4 (a fraction of samples) are data, on a symlog axis whose linear part ends at
one sample in a thousand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import RESOLUTION, _plt, first_value_floor, mask_below

#: (key, panel title, y scale, floor rule, MSE runs only). Floor rules as in
#: `centralpath.plotting.NC_PANELS`: "first", "unit", "squared"; None = no floor (linear).
PAPER_PANELS = (
    ("train_accuracy", "train accuracy", "linear", None, False),
    ("test_accuracy", "test accuracy", "linear", None, False),
    ("nc1", r"NC1: Tr$(\Sigma_W\Sigma_B^\dagger)/C$", "log", "first", False),
    ("nc2_equinorm_means", "NC2 equinorm: class means", "log", "unit", False),
    ("nc2_equinorm_classifier", "NC2 equinorm: classifier rows", "log", "unit", False),
    ("nc2_equiangular_means", "NC2 equiangularity: class means", "log", "unit", False),
    ("nc2_equiangular_classifier", "NC2 equiangularity: classifier rows", "log", "unit", False),
    ("nc3", "NC3: self-duality", "log", "squared", False),
    ("nc4", "NC4: mismatch with the nearest class mean", "symlog", None, False),
    ("perp_rel", r"$L_{\perp LS}/L$ (MSE runs)", "log", "unit", True),
)

LOSS_STYLE = {"mse": dict(linestyle="-"), "ce": dict(linestyle="--")}
LOSS_LABEL = {"mse": "MSE", "ce": "CE"}
NC4_LINTHRESH = 1e-3


def paper_runs(results: dict) -> list[str]:
    """Run names in the results, in the order they were saved."""
    return [k[: -len("/times")] for k in results if k.endswith("/times")]


def _parts(run: str) -> tuple[str, str, str]:
    dataset, model, loss = (run.rsplit("-", 2) + ["", "", ""])[:3]
    return dataset, model, loss


def _colours(runs: list[str]) -> dict[str, str]:
    """One colour per (dataset, model), shared by its MSE and CE runs."""
    plt = _plt()
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    pairs: list[tuple[str, str]] = []
    for r in runs:
        pair = _parts(r)[:2]
        if pair not in pairs:
            pairs.append(pair)
    return {r: cycle[pairs.index(_parts(r)[:2]) % len(cycle)] for r in runs}


def _floor(y: np.ndarray, rule: str | None) -> float:
    if rule == "first":
        return first_value_floor(y)
    if rule == "unit":
        return RESOLUTION
    if rule == "squared":
        return RESOLUTION**2
    return -np.inf


def _epoch_axis(ax, epochs: np.ndarray) -> None:
    """Symlog epochs, linear on [0, 1], so that epoch 0 (initialisation) is drawn."""
    top = float(np.max(epochs)) if epochs.size else 1.0
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
    ax.set_xlim(0.0, top * 1.15)


def _label(run: str) -> str:
    dataset, model, loss = _parts(run)
    return f"{dataset} {model.upper()} {LOSS_LABEL.get(loss, loss)}"


def draw_panel(ax, results: dict, key: str, title: str, scale: str, rule, mse_only: bool) -> int:
    """Every run's `key` against epoch on `ax`; returns how many runs were drawn."""
    runs = paper_runs(results)
    colours = _colours(runs)
    drawn = 0
    all_t = []
    for run in runs:
        loss = _parts(run)[2]
        y = results.get(f"{run}/{key}")
        if y is None or (mse_only and loss != "mse"):
            continue
        t = np.asarray(results[f"{run}/times"], dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        floor = _floor(y, rule)
        shown = mask_below(y, floor)
        if not np.any(np.isfinite(shown)):
            continue
        style = LOSS_STYLE.get(loss, {})
        ax.plot(
            t,
            shown,
            color=colours[run],
            marker=".",
            markersize=2.5,
            linewidth=1.1,
            label=_label(run),
            **style,
        )
        masked = np.isfinite(y) & ~np.isfinite(shown)
        if np.any(masked):
            ax.plot(
                t,
                np.full_like(t, floor),
                color=colours[run],
                linestyle=":",
                linewidth=0.9,
                label=f"{_label(run)}: float64 resolution",
            )
        all_t.append(t)
        drawn += 1
    _epoch_axis(ax, np.concatenate(all_t) if all_t else np.zeros(1))
    if scale == "log":
        ax.set_yscale("log")
    elif scale == "symlog":
        # Exact zeros are data here (no sample mismatched): linear below one in a thousand.
        ax.set_yscale("symlog", linthresh=NC4_LINTHRESH, linscale=0.5)
        ax.set_ylim(bottom=0.0)
        ax.set_ylabel(r"fraction of samples (linear below $10^{-3}$)", fontsize=7)
    else:
        ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="major", alpha=0.25)
    if not drawn:
        ax.text(0.5, 0.5, "no run has this quantity", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)  # fmt: skip
    return drawn


def figure_paper_quantity(results: dict, key: str) -> object:
    """One quantity of `PAPER_PANELS`, every run, with a legend of the runs."""
    plt = _plt()
    spec = next(p for p in PAPER_PANELS if p[0] == key)
    fig, ax = plt.subplots(figsize=(7.4, 4.0), constrained_layout=True)
    draw_panel(ax, results, *spec)
    ax.set_title(spec[1], fontsize=11)
    ax.set_xlabel("epoch (symlog axis: linear on [0, 1])", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def figure_paper_set(results: dict) -> object:
    """All of `PAPER_PANELS` in one figure (4 × 3 grid), one legend for the runs."""
    plt = _plt()
    fig, axes = plt.subplots(4, 3, figsize=(11.5, 12.0), constrained_layout=True)
    axes = axes.ravel()
    most, handles, labels = -1, [], []
    for ax, spec in zip(axes, PAPER_PANELS, strict=False):
        draw_panel(ax, results, *spec)
        h, lab = ax.get_legend_handles_labels()
        runs = [(x, y) for x, y in zip(h, lab, strict=True) if "float64" not in y]
        if len(runs) > most:  # the legend of the panel that has every run
            most, handles, labels = len(runs), [x for x, _ in runs], [y for _, y in runs]
    for ax in axes[len(PAPER_PANELS) :]:
        fig.delaxes(ax)
    fig.legend(
        handles,
        labels,
        fontsize=8,
        loc="lower right",
        bbox_to_anchor=(0.97, 0.04),
        title="dataset, network, loss\n(colour: data and network;\nline: solid MSE, dashed CE)",
        title_fontsize=8,
        ncol=2,
    )
    fig.supxlabel("epoch (symlog axis: linear on [0, 1])", fontsize=9)
    fig.suptitle("Neural collapse under MSE and cross-entropy: every run, one panel per quantity")
    return fig


def paper_figures(results: dict) -> dict[str, object]:
    """Figure makers by file stem: `paper_set` and one per quantity the results hold."""
    figs: dict[str, object] = {"paper_set": lambda: figure_paper_set(results)}
    for spec in PAPER_PANELS:
        key = spec[0]
        if any(f"{r}/{key}" in results for r in paper_runs(results)):
            figs[key] = lambda key=key: figure_paper_quantity(results, key)
    return figs


def draw_paper(results: dict, run_path) -> list[Path]:
    """Write the paper's figure set under RUN/figures as PNG and PDF; return the paths."""
    from . import draw_run

    return draw_run("experiment paper_figures", results, run_path)


__all__ = [
    "PAPER_PANELS",
    "draw_paper",
    "draw_panel",
    "figure_paper_quantity",
    "figure_paper_set",
    "paper_figures",
    "paper_runs",
]
