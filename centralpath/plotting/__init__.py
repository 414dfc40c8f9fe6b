"""Figures in the paper's style, drawn from saved results only (nothing is computed here but
what a plot needs: no flow, no fit). Needs the `plot` extra (matplotlib).

Every figure function takes the flat results dictionary of a run (`results.npz`) and returns a
`matplotlib.figure.Figure`; `draw_run` writes the figures of a run as PNG and PDF.

What is drawn as data (and what is not):

- **Rounding noise is not data.** A quantity that is 0 in exact arithmetic up to rounding
  (L_⊥LS on the central path, ~1e-33·L; NC1 after collapse; the exact zeros the core's clamping
  at 0 leaves) would otherwise be drawn on a log axis as a curve 30 decades down. Points below
  the quantity's float64 resolution are masked, and the floor is drawn as a dotted line
  ("float64 resolution") wherever a point was masked. The floor is `RESOLUTION` = 10³·ε times
  the scale the quantity is a part of: the loss L for the loss terms; 1 for ratios of order-one
  quantities (NC2, L_⊥LS/L, a relative error); the first value for NC1; and RESOLUTION² for the
  squared distance NC3 (the distance itself resolves to ~ε).
- **ω_j = +inf** (the core's "beyond float64 resolution") is not drawn; the saves where the run
  flags it (`<series>/snr_beyond_resolution`) are shaded, and a dashed line marks the first.
- **t = 0 / epoch 0 is drawn**: time axes are symlog, linear on [0, t₁] (t₁ the first positive
  save) and logarithmic beyond; the axis label says so.
- **No empty panels, no legend entry without a line**: a panel whose series is absent (or all
  NaN) is left out; one whose every point is below resolution keeps its floor line and says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Float64 resolution with a safety factor: a value that is 0 up to rounding comes out as a few
#: ε times its scale (L_⊥LS ≈ 1e-33 for L ≈ 1e-1 is ~1e2·ε·L once squared terms add up), so
#: 10³·ε separates rounding from data with a margin, and is still ~1e-13: nothing a run
#: resolves is lost.
RESOLUTION = 1e3 * float(np.finfo(np.float64).eps)

SERIES_STYLE = {
    "closed_form": dict(label="closed form", linestyle="-", linewidth=1.6),
    "ode": dict(
        label="ODE (Diffrax)", linestyle="none", marker="o", markersize=3.5, markerfacecolor="none"
    ),
    "gd": dict(label="gradient descent", linestyle="--", linewidth=1.0),
}

FLOOR_STYLE = dict(color="0.35", linestyle=":", linewidth=1.3)
FLOOR_LABEL = "float64 resolution"
BEYOND_LABEL = "beyond float64 resolution from here:\n" + r"some $\omega_j$ = +inf (not drawn)"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------------
# Masking: the only thing done to the data here.


def mask_below(y, floor) -> np.ndarray:
    """`y` as float with NaN where it is not finite or below `floor` (scalar or per point)."""
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(y) & (y >= np.asarray(floor, dtype=np.float64))
    return np.where(keep, y, np.nan)


def first_value_floor(y) -> float:
    """RESOLUTION times the first finite positive value of a decaying metric (NaN if none)."""
    y = np.asarray(y, dtype=np.float64)
    ok = y[np.isfinite(y) & (y > 0)]
    return RESOLUTION * float(ok[0]) if ok.size else np.nan


def _masked_something(y, shown) -> bool:
    """A finite value of `y` was hidden as below resolution (NaN inputs are not "masked")."""
    return bool(np.any(np.isfinite(np.asarray(y, float)) & ~np.isfinite(shown)))


# ---------------------------------------------------------------------------------------------
# Axes helpers.


def _time_axis(ax, t, label: str, set_label: bool = True, which: str = "x") -> str:
    """Symlog axis, linear on [0, t₁] (t₁ the smallest positive value), so that t = 0 (epoch 0)
    is drawn; plain log if all t > 0. Returns the axis label (which says which scale), set on
    `ax` unless `set_label` is False. `which="y"` does the same for a non-negative y quantity."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    set_scale, set_lim = (
        (ax.set_xscale, ax.set_xlim) if which == "x" else (ax.set_yscale, ax.set_ylim)
    )
    t = np.asarray(t, dtype=np.float64)
    positive = t[np.isfinite(t) & (t > 0)]
    if positive.size and np.any(t <= 0):
        t1, t_end = float(positive.min()), float(positive.max())
        # linscale 0.5: [0, t₁] takes half a decade, enough to keep the label "0" clear of the
        # next one but not to waste the axis on the one interval that has no save inside.
        set_scale("symlog", linthresh=t1, linscale=0.5)
        top = t_end * 1.15
        set_lim(0.0, top)
        # Ticks at 0 and at the decades ≥ t₁ only: matplotlib's symlog locator also puts
        # decades inside the linear part (10⁰ next to 0 for t₁ = 2), whose labels overlap.
        lo, hi = int(np.ceil(np.log10(t1) - 1e-9)), int(np.floor(np.log10(top) + 1e-9))
        step = max(1, -(-(hi - lo + 1) // 6))  # at most ~6 decade labels
        axis.set_major_locator(FixedLocator([0.0] + [10.0**k for k in range(lo, hi + 1, step)]))
        axis.set_major_formatter(
            FuncFormatter(lambda v, _: "0" if v == 0 else rf"$10^{{{int(round(np.log10(v)))}}}$")
        )
        minor = [
            m * 10.0**k
            for k in range(int(np.floor(np.log10(t1))), hi + 1)
            for m in range(1, 10)
            if t1 <= m * 10.0**k <= top and (m > 1 or (k - lo) % step)
        ]
        axis.set_minor_locator(FixedLocator(minor))
        axis.set_minor_formatter(NullFormatter())
        label = f"{label}; symlog axis: linear on [0, {t1:.3g}]"
    elif positive.size:
        set_scale("log")
    if set_label:
        axis.set_label_text(label)
    return label


def _floor_line(ax, t, floor, label: str = FLOOR_LABEL, inline: bool = False) -> None:
    """The dotted floor, labelled in the legend or (`inline`, for a constant floor) by a text
    just above it at the left, where decaying metrics are still on their plateau."""
    t = np.asarray(t, dtype=np.float64)
    floor = np.broadcast_to(np.asarray(floor, dtype=np.float64), t.shape)
    ax.plot(t, floor, label=label, **FLOOR_STYLE)
    if inline:
        ax.annotate(
            label,
            xy=(0.02, float(floor[0])),
            xycoords=("axes fraction", "data"),
            xytext=(0, 2),
            textcoords="offset points",
            va="bottom",
            fontsize=7,
            color=FLOOR_STYLE["color"],
        )


def _note(ax, text: str, y: float = 0.5) -> None:
    ax.text(
        0.5,
        y,
        text,
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=8,
        bbox=dict(facecolor="white", edgecolor="0.7", boxstyle="round,pad=0.3"),
    )


def _beyond_resolution(ax, results: dict, series: list[str], label: bool = True) -> bool:
    """Shade the saves where a series flags some ω_j as beyond float64 resolution; a dashed line
    at the first. Returns whether anything was flagged."""
    firsts = []
    for s in series:
        flag = results.get(f"{s}/snr_beyond_resolution")
        if flag is None:
            continue
        t = np.asarray(results[f"{s}/times"], dtype=np.float64)
        on = np.asarray(flag, dtype=np.float64) > 0
        if not np.any(on):
            continue
        firsts.append(float(t[on][0]))
        # Contiguous runs of flagged saves, each shaded from its first to its last save.
        edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(int), [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            ax.axvspan(t[a], t[b - 1], color="0.6", alpha=0.18, linewidth=0)
    if not firsts:
        return False
    ax.axvline(
        min(firsts),
        color="0.3",
        linestyle="--",
        linewidth=1.0,
        label=BEYOND_LABEL if label else None,
    )
    return True


def _time_label(series: str) -> str:
    return "epoch" if series == "train" else "time t"


SERIES_NAME = {"ode": "ODE (Diffrax)", "gd": "gradient descent", "train": "trained network"}


# ---------------------------------------------------------------------------------------------
# Figures.


def figure_omega(results: dict) -> object:
    """ω_j(t): the closed form against the Diffrax solve and gradient descent (log y; symlog t).

    +inf ω_j (beyond float64 resolution) are not drawn; the saves that carry them are shaded."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.0), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn, times = [], []
    for series, style in SERIES_STYLE.items():
        if f"{series}/snr" not in results:
            continue
        t = np.asarray(results[f"{series}/times"], dtype=np.float64)
        omega = mask_below(results[f"{series}/snr"], 0.0)
        if omega.ndim == 1:
            omega = omega[:, None]
        labelled = False
        for j in range(omega.shape[1]):
            if not np.any(np.isfinite(omega[:, j])):
                continue
            ax.plot(
                t,
                omega[:, j],
                color=colors[j % len(colors)],
                **{**style, "label": None if labelled else style["label"]},
            )
            labelled = True
        if labelled:
            drawn.append(series)
            times.append(t)
    if not drawn:
        _note(ax, r"no finite $\omega_j$ to draw")
    _beyond_resolution(ax, results, drawn)
    ax.set_yscale("log")
    _time_axis(ax, np.concatenate(times) if times else [0.0], "time t (= kη for GD)")
    names = " vs ".join(SERIES_STYLE[s]["label"].split(" (")[0] for s in drawn)
    ax.set(
        ylabel=r"SNR singular values $\omega_j$ (colour: $j$)",
        title=rf"$\omega_j(t)$: {names}" if names else r"$\omega_j(t)$",
    )
    if ax.get_legend_handles_labels()[0]:
        # Upper left: ω_j grow with t, so that corner is empty.
        ax.legend(fontsize=7.5, loc="upper left")
    return fig


LOSS_TERMS = {
    "loss": r"$L$",
    "loss_nc1": r"$L_{NC1}$",
    "loss_nc23": r"$L_{NC2/3}$",
    "loss_perp": r"$L_{\perp LS}$",
}


def figure_loss_decomposition(results: dict, series: str = "ode") -> object:
    """L, L_NC1, L_NC2/3 and L_⊥LS along a trajectory (log y; symlog t).

    A term below 10³·ε·L at a save is rounding of the sum L, not data: it is masked there and
    the floor 10³·ε·L is drawn as a dotted line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.4, 4.0), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    t = np.asarray(results[f"{series}/times"], dtype=np.float64)
    loss = np.asarray(results[f"{series}/loss"], dtype=np.float64)
    floor = RESOLUTION * np.abs(loss)
    masked_any, unresolved = False, []
    for i, (key, label) in enumerate(LOSS_TERMS.items()):
        name = f"{series}/{key}"
        if name not in results:
            continue
        y = np.asarray(results[name], dtype=np.float64)
        if not np.any(np.isfinite(y)):
            continue
        shown = mask_below(y, floor)
        masked_any |= _masked_something(y, shown)
        if np.any(np.isfinite(shown)):
            # Colours fixed per term, so a term left out does not recolour the others.
            # L in black and wider, under its terms: where L_NC1 ≈ L (late on the central path)
            # both stay visible.
            style = dict(color="k", linewidth=2.6, zorder=1) if key == "loss" else {}
            ax.plot(t, shown, **{"color": colors[i], "label": label, "zorder": 2, **style})
        else:
            unresolved.append(label)
    objective = results.get(f"{series}/objective")
    if objective is not None and not np.allclose(objective, loss, rtol=1e-12, atol=0):
        # With weight decay GD minimises the objective, not L: L may rise while it falls.
        ax.plot(t, mask_below(objective, 0.0), "--", color="0.4", label="objective (L + decay)")
        if "oracle/global_minimum" in results:
            ax.axhline(
                float(results["oracle/global_minimum"]),
                color="0.4",
                linestyle="-.",
                linewidth=0.9,
                label="global minimum of the objective",
            )
    if masked_any:
        _floor_line(ax, t, floor, rf"{FLOOR_LABEL} ($10^3\varepsilon\,L$)")
    if unresolved:
        _note(
            ax,
            f"{', '.join(unresolved)} below float64 resolution at every save\n"
            "(0 up to rounding: not drawn)",
            y=0.27,  # just above the floor
        )
    ax.set_yscale("log")
    _time_axis(ax, t, _time_label(series))
    ax.set(ylabel="loss", title=f"Loss decomposition: {SERIES_NAME.get(series, series)}")
    # Outside the axes: the terms cross each other over the whole range, so any corner inside
    # covers one of them.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


#: (key, title, floor rule) for figure_nc_metrics. Floor rules: "first" = RESOLUTION × the first
#: value (NC1: a variance ratio that falls from its start); "unit" = RESOLUTION (ratios of
#: order-one quantities); "squared" = RESOLUTION² (NC3 is a squared distance between unit-norm
#: matrices, each accurate to ~ε, so the distance resolves to ~ε and its square to ~ε²);
#: None = linear axis, exact zeros are data (NC4 is a fraction of samples).
NC_PANELS = (
    ("nc1", r"NC1: Tr$(\Sigma_W\Sigma_B^\dagger)/C$", "first"),
    ("nc2_equinorm_means", "NC2: equinorm (means)", "unit"),
    ("nc2_equiangular_means", "NC2: equiangularity (means)", "unit"),
    ("nc3", "NC3: self-duality", "squared"),
    ("nc4", "NC4: NCC mismatch", None),
    ("perp_rel", r"$L_{\perp LS}/L$", "unit"),
)

FLOOR_RULE_LABEL = {
    "first": r"$10^3\varepsilon\times$ first value",
    "unit": r"$10^3\varepsilon$",
    "squared": r"$(10^3\varepsilon)^2$",
}


def _nc_floor(y, rule) -> float:
    if rule == "first":
        return first_value_floor(y)
    if rule == "unit":
        return RESOLUTION
    if rule == "squared":
        return RESOLUTION**2
    return -np.inf


def figure_nc_metrics(results: dict, series: str = "ode") -> object:
    """NC1–NC4 and the relative distance to the central path, one panel each (log y but NC4;
    symlog t). Panels whose series the run does not have are left out."""
    plt = _plt()
    t = np.asarray(results[f"{series}/times"], dtype=np.float64)
    panels = []
    for key, title, rule in NC_PANELS:
        y = results.get(f"{series}/{key}")
        if y is not None and np.any(np.isfinite(np.asarray(y, dtype=np.float64))):
            panels.append((key, title, rule, np.asarray(y, dtype=np.float64)))
    ncols = 3 if len(panels) > 4 else 2
    nrows = max(1, -(-len(panels) // ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.5 * ncols, 2.9 * nrows + 0.3), constrained_layout=True
    )
    axes = np.atleast_1d(axes).ravel()
    for ax in axes[max(1, len(panels)) :]:
        fig.delaxes(ax)
    xlabel = _time_label(series)
    if not panels:
        _note(axes[0], f"no neural-collapse metric in the {series} series")
        axes[0].set_axis_off()
    for ax, (_key, title, rule, y) in zip(axes, panels, strict=False):
        if rule is None:
            ax.plot(t, np.where(np.isfinite(y), y, np.nan), marker=".", markersize=3)
            ax.set_ylim(bottom=min(0.0, float(np.nanmin(y))))
        else:
            floor = _nc_floor(y, rule)
            shown = mask_below(y, floor)
            if np.any(np.isfinite(shown)):
                ax.plot(t, shown, marker=".", markersize=3)
            if _masked_something(y, shown):
                # Labelled on the line: a legend in a panel this small covers the curve.
                _floor_line(ax, t, floor, f"{FLOOR_LABEL} ({FLOOR_RULE_LABEL[rule]})", True)
            if not np.any(np.isfinite(shown)):
                _note(ax, "below float64 resolution at every save\n(0 up to rounding)", y=0.7)
                ax.set_ylim(floor * 1e-2, floor * 1e2)
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        xlabel = _time_axis(ax, t, _time_label(series), set_label=False)
    fig.supxlabel(xlabel, fontsize=9)
    fig.suptitle(f"Neural-collapse metrics: {SERIES_NAME.get(series, series)}")
    return fig


def figure_measured_vs_predicted(results: dict) -> object:
    """Measured ω_j(epoch) (markers) against the fitted closed form ω̂_j (lines); symlog epochs.

    The first two lines are ω_1 measured and predicted, as saved (an ω_j beyond float64
    resolution, +inf, is NaN here and not drawn)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.0), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    e = np.asarray(results["fit/times"], dtype=np.float64)
    meas = mask_below(results["fit/omega_measured"], 0.0)
    pred = mask_below(results["fit/omega_predicted"], 0.0)
    labelled = set()
    for j in range(meas.shape[1]):
        c = colors[j % len(colors)]
        for y, kw, label in (
            (
                meas[:, j],
                dict(marker="o", linestyle="none", markersize=3.5, mfc="none"),
                "measured",
            ),
            (pred[:, j], dict(linestyle="-", linewidth=1.2), "theory, free time map (fitted)"),
        ):
            has = bool(np.any(np.isfinite(y)))
            ax.plot(e, y, color=c, label=label if has and label not in labelled else None, **kw)
            if has:
                labelled.add(label)
    _beyond_resolution(ax, results, ["train"])
    ax.set_yscale("log")
    _time_axis(ax, e, "epoch")
    ax.set(ylabel=r"$\omega_j$ (colour: $j$)", title=r"Measured vs predicted $\omega_j$")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def figure_invariant(results: dict) -> object:
    """Drift of F(ω_j) − mean_i F(ω_i) from its first value: zero along the theory (symlog
    epochs). Non-finite drifts (an ω_j beyond resolution) are not drawn."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.0), constrained_layout=True)
    e = np.asarray(results["fit/times"], dtype=np.float64)
    drift = np.asarray(results["fit/drift"], dtype=np.float64)
    tau = np.asarray(results["fit/time_map"], dtype=np.float64)
    finite_tau = np.abs(tau[np.isfinite(tau)])
    scale = float(finite_tau.max()) if finite_tau.size and finite_tau.max() > 0 else 1.0
    few = drift.shape[1] <= 10
    for j in range(drift.shape[1]):
        y = mask_below(drift[:, j] / scale, -np.inf)
        if np.any(np.isfinite(y)):
            ax.plot(e, y, marker=".", label=rf"$j={j + 1}$" if few else None)
    ax.axhline(0.0, color="k", linewidth=0.8, label="theory: 0 (the flow keeps it)")
    _beyond_resolution(ax, results, ["train"], label=False)
    _time_axis(ax, e, "epoch")
    ax.set(
        ylabel=r"drift of $F(\omega_j)-\overline{F}$ / max $|\tau|$",
        title="The invariant of the renormalised flow",
    )
    ax.legend(fontsize=7, ncol=2)
    return fig


def figure_time_map(results: dict) -> object:
    """The fitted time map τ(epoch) (symlog epochs)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.0), constrained_layout=True)
    e = np.asarray(results["fit/times"], dtype=np.float64)
    tau = mask_below(results["fit/time_map"], -np.inf)
    ax.plot(
        e,
        tau,
        marker="o",
        markersize=3,
        label=r"free time map $\tau(e)$, fitted to the measured $\omega_j$",
    )
    ax.legend(fontsize=8, loc="upper left")
    _time_axis(ax, e, "epoch")
    # τ spans many decades from τ(0) = 0 (the fit's origin): symlog keeps both visible; a
    # time map that goes negative keeps a linear axis.
    if np.all(tau[np.isfinite(tau)] >= 0):
        label = _time_axis(ax, tau, r"fitted time $\tau$ of the theory", set_label=False, which="y")
        head, _, scale = label.partition("; ")
        ax.set_ylabel(f"{head}\n({scale})" if scale else head, fontsize=9)
    else:
        ax.set_ylabel(r"fitted time $\tau$ of the theory")
    ax.set_title("Time map: theory time against epoch")
    return fig


def figure_gd_convergence(results: dict) -> object:
    """Error of gradient descent at a fixed time against the step size η (log–log; slope 1 is
    first order). Errors below float64 resolution (10³·ε, relative) are not drawn."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.0), constrained_layout=True)
    eta = np.asarray(results["convergence/eta"], dtype=np.float64)
    err = np.asarray(results["convergence/error"], dtype=np.float64)
    shown = mask_below(err, RESOLUTION)
    order = np.argsort(eta)
    eta, err, shown = eta[order], err[order], shown[order]
    slope = results.get("convergence/slope")
    label = "GD vs closed form"
    if slope is not None and np.isfinite(float(slope)):
        label += f" (fitted slope {float(slope):.3f})"
    ax.plot(eta, shown, "o-", label=label)
    ok = np.flatnonzero(np.isfinite(shown))
    if ok.size:
        # The reference line goes through the smallest step's point (the most converged one).
        k = ok[0]
        ax.plot(
            eta, shown[k] * eta / eta[k], "k--", linewidth=0.8, label=r"slope 1 ($\propto\eta$)"
        )
    if _masked_something(err, shown):
        _floor_line(ax, eta, RESOLUTION, rf"{FLOOR_LABEL} ($10^3\varepsilon$)")
    ax.set(xscale="log", yscale="log")
    # Ticks at the step sizes themselves, labelled plainly: matplotlib's default labels the
    # minor ticks of a short log axis as 3×10¹, 4×10¹, … and they overlap.
    ax.xaxis.set_major_locator(FixedLocator(eta))
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    t = results.get("convergence/t")
    at = f"t = {float(t):g}" if t is not None else "fixed t"
    ax.set(
        xlabel=r"step size $\eta$",
        ylabel=rf"max$_j$ relative error of $\omega_j$ at {at}",
        title="Gradient descent converges to the flow at first order",
    )
    ax.legend(fontsize=8, loc="upper left")
    return fig


#: What the title's configuration line calls each flow.
FLOW_TITLE = {
    "renormalised": "F3 renormalised flow",
    "whitened": "F3′ whitened flow",
    "central-path": "F2 central-path flow",
    "ufm": "F1 UFM flow",
}


def _flow_line(c: dict) -> str:
    flow = c.get("flow", "renormalised")
    text = f"{FLOW_TITLE.get(flow, flow)}: C = {c.get('classes')}, N = {c.get('per_class')}"
    text += f", p = {c.get('dim')}"
    if flow == "ufm":
        text += f", λ_W = {c.get('lam_w', 0):g}, λ_H = {c.get('lam_h', 0):g}"
    elif flow == "central-path" and c.get("lam"):
        text += f", λ = {c['lam']:g}"
    return text


def _training_line(c: dict) -> str:
    loss = {"mse": "MSE", "ce": "cross-entropy"}.get(c.get("loss"), c.get("loss"))
    text = f"{c.get('dataset')}, {str(c.get('model')).upper()}, {loss} loss"
    return text + (f", {c['epochs']} epochs" if c.get("epochs") else "")


def describe_run(config: dict | None) -> str:
    """One line saying what a run is, from its config.toml: the flow and C, N, p of a
    simulation; the dataset, network and loss of a training run; the features file of a
    comparison; the matrix of the paper's figure set. Empty when the configuration is unknown."""
    if not config:
        return ""
    if isinstance(config.get("matrix"), dict):  # the paper's figure set
        m = config["matrix"]
        return " × ".join(
            ", ".join(map(str, m.get(k, []))) for k in ("datasets", "models", "losses")
        )
    if isinstance(config.get("simulation"), dict):  # an experiment with a [simulation] table
        return _flow_line(config["simulation"])
    if isinstance(config.get("training"), dict):
        return _training_line(config["training"])
    if "features" in config:  # compare
        text = f"features {Path(str(config['features'])).name}"
        return text + (f", model {config['model']}" if config.get("model") else "")
    if "dataset" in config:
        return _training_line(config)
    if "classes" in config:
        return _flow_line(config)
    return ""


def read_run_config(run_path) -> dict | None:
    """A run directory's config.toml (None when it has none or it cannot be read)."""
    import tomllib

    path = Path(run_path) / "config.toml"
    try:
        return tomllib.loads(path.read_text()) if path.is_file() else None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def captioned(make, caption: str):
    """A figure maker whose figure's title gains a second line: the run's configuration."""
    if not caption:
        return make

    def made():
        fig = make()
        top = fig.get_suptitle()
        if top:
            fig.suptitle(f"{top}\n{caption}", fontsize=10)
        elif fig.axes:
            ax = fig.axes[0]
            ax.set_title(f"{ax.get_title()}\n{caption}" if ax.get_title() else caption, fontsize=9)
        return fig

    return made


def figures_for(kind: str, results: dict, config: dict | None = None) -> dict[str, object]:
    """The figures of a run of `kind` (simulate, train, compare, demo, experiment), by file
    stem; with the run's `config`, each title names the configuration (`describe_run`)."""
    if kind == "experiment paper_figures":
        from .paper import paper_figures

        figs = paper_figures(results)
    else:
        figs = _figures_of(results)
    caption = describe_run(config)
    return {stem: captioned(make, caption) for stem, make in figs.items()}


def _figures_of(results: dict) -> dict[str, object]:
    figs: dict[str, object] = {}
    series = [s for s in ("ode", "gd", "train") if f"{s}/times" in results]
    if any(f"{s}/snr" in results for s in ("closed_form", "ode", "gd")):
        figs["omega"] = lambda: figure_omega(results)
    for s in series:
        if f"{s}/loss_nc1" in results:
            figs[f"loss_decomposition_{s}"] = lambda s=s: figure_loss_decomposition(results, s)
        if f"{s}/nc1" in results:
            figs[f"nc_metrics_{s}"] = lambda s=s: figure_nc_metrics(results, s)
    if "fit/omega_measured" in results:
        figs["measured_vs_predicted"] = lambda: figure_measured_vs_predicted(results)
        figs["invariant"] = lambda: figure_invariant(results)
        figs["time_map"] = lambda: figure_time_map(results)
    if "convergence/eta" in results:
        figs["gd_convergence"] = lambda: figure_gd_convergence(results)
    from .compare import figures as model_figures  # compare --model: the models' predictions

    figs.update(model_figures(results))
    return figs


def draw_run(kind: str, results: dict, run_path, config: dict | None = None) -> list[Path]:
    """Write every figure of a run as PNG and PDF under RUN/figures; return the paths.

    `config` (default: RUN/config.toml) names the configuration in each title. Results that
    hold nothing a figure of `kind` draws are refused (`InputError`): no empty folder."""
    from .._errors import InputError

    config = read_run_config(run_path) if config is None else config
    figs = figures_for(kind, results, config)
    if not figs:
        raise InputError(
            f"the results of this {kind} run hold no series a figure draws; re-run the command "
            "that made it"
        )
    return write_figures(figs, run_path)


def write_figures(figs: dict, run_path) -> list[Path]:
    """Write figures (makers by file stem) as PNG and PDF under RUN/figures; return the paths."""
    plt = _plt()
    from ..measurement._io import atomic_path

    out = Path(run_path) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, make in figs.items():
        fig = make()
        for ext in ("png", "pdf"):
            path = out / f"{stem}.{ext}"
            with atomic_path(path, suffix=f".tmp.{ext}") as tmp:
                # Fixed metadata so that a redraw from the same results gives the same file.
                meta = (
                    {"Software": "centralpath"}
                    if ext == "png"
                    else {"Creator": "centralpath", "Producer": "centralpath", "CreationDate": None}
                )
                fig.savefig(tmp, dpi=150, metadata=meta)
            written.append(path)
        plt.close(fig)
    return written
