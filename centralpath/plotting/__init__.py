"""Figures in the paper's style, drawn from saved results only (nothing is computed here but
what a plot needs: no flow, no fit). Needs the `plot` extra (matplotlib).

Every figure function takes the flat results dictionary of a run (`results.npz`) and returns a
`matplotlib.figure.Figure`; `draw_run` writes the figures of a run as PNG and PDF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SERIES_STYLE = {
    "closed_form": dict(label="closed form", linestyle="-", linewidth=1.6),
    "ode": dict(
        label="ODE (Diffrax)", linestyle="none", marker="o", markersize=3.5, markerfacecolor="none"
    ),
    "gd": dict(label="gradient descent", linestyle="--", linewidth=1.0),
}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _positive_times(t, *ys):
    """Drop t = 0 (log axes) and keep the arrays aligned."""
    keep = np.asarray(t) > 0
    return (np.asarray(t)[keep], *(np.asarray(y)[keep] for y in ys))


def figure_omega(results: dict) -> object:
    """ω_j(t): the closed form against the Diffrax solve and gradient descent (log–log)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for series, style in SERIES_STYLE.items():
        if f"{series}/snr" not in results:
            continue
        t, omega = _positive_times(results[f"{series}/times"], results[f"{series}/snr"])
        for j in range(omega.shape[1]):
            ax.plot(
                t,
                omega[:, j],
                color=colors[j % len(colors)],
                **{**style, "label": style["label"] if j == 0 else None},
            )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="time t (= kη for GD)",
        ylabel=r"SNR singular values $\omega_j$",
        title=r"$\omega_j(t)$: closed form vs ODE vs GD",
    )
    ax.legend(fontsize=8)
    return fig


def figure_loss_decomposition(results: dict, series: str = "ode") -> object:
    """L, L_NC1, L_NC2/3 and L_⊥LS along a trajectory (log scale)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), constrained_layout=True)
    x = results[f"{series}/times"]
    labels = {
        "loss": r"$L$",
        "loss_nc1": r"$L_{NC1}$",
        "loss_nc23": r"$L_{NC2/3}$",
        "loss_perp": r"$L_{\perp LS}$",
    }
    for key, label in labels.items():
        name = f"{series}/{key}"
        if name in results:
            t, y = _positive_times(x, results[name])
            ax.plot(t, np.where(y > 0, y, np.nan), label=label)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="time t" if series != "train" else "epoch",
        ylabel="loss",
        title=f"Loss decomposition ({series})",
    )
    ax.legend(fontsize=8)
    return fig


NC_PANELS = (
    ("nc1", r"NC1: Tr$(\Sigma_W\Sigma_B^\dagger)/C$"),
    ("nc2_equinorm_means", "NC2: equinorm (means)"),
    ("nc2_equiangular_means", "NC2: equiangularity (means)"),
    ("nc3", "NC3: self-duality"),
    ("nc4", "NC4: NCC mismatch"),
    ("perp_rel", r"$L_{\perp LS}/L$"),
)


def figure_nc_metrics(results: dict, series: str = "ode") -> object:
    """NC1–NC4 and the relative distance to the central path, one panel each."""
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.4), constrained_layout=True)
    x = results[f"{series}/times"]
    for ax, (key, title) in zip(axes.ravel(), NC_PANELS, strict=True):
        name = f"{series}/{key}"
        y = np.asarray(results.get(name, np.full(len(x), np.nan)), dtype=float)
        t, y = _positive_times(x, y)
        if key == "nc4" and np.any(np.isfinite(y)):
            # A fraction that reaches exactly 0: a linear axis shows it, a log axis would not.
            ax.plot(t, y, marker=".", markersize=3)
        elif np.any(np.isfinite(y) & (y > 0)):
            ax.plot(t, np.where(y > 0, y, np.nan), marker=".", markersize=3)
            ax.set_yscale("log")
        else:
            ax.text(
                0.5,
                0.5,
                "zero or not available\n(moment-reduced state, or on the central path)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set(xscale="log", title=title, xlabel="epoch" if series == "train" else "time t")
    fig.suptitle(f"Neural-collapse metrics ({series})")
    return fig


def figure_measured_vs_predicted(results: dict) -> object:
    """Measured ω_j(epoch) (markers) against the fitted closed form ω̂_j (lines)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    e = np.asarray(results["fit/times"])
    meas, pred = (
        np.asarray(results["fit/omega_measured"]),
        np.asarray(results["fit/omega_predicted"]),
    )
    for j in range(meas.shape[1]):
        c = colors[j % len(colors)]
        ax.plot(
            e,
            meas[:, j],
            "o",
            color=c,
            markersize=3.5,
            markerfacecolor="none",
            label="measured" if j == 0 else None,
        )
        ax.plot(
            e, pred[:, j], "-", color=c, linewidth=1.2, label="theory (fitted)" if j == 0 else None
        )
    ax.set(
        yscale="log",
        xlabel="epoch",
        ylabel=r"$\omega_j$",
        title=r"Measured vs predicted $\omega_j$",
    )
    if np.all(e > 0):
        ax.set_xscale("log")
    ax.legend(fontsize=8)
    return fig


def figure_invariant(results: dict) -> object:
    """Drift of F(ω_j) − mean_i F(ω_i) from its first value: zero along the theory."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), constrained_layout=True)
    e = np.asarray(results["fit/times"])
    drift, tau = np.asarray(results["fit/drift"]), np.asarray(results["fit/time_map"])
    scale = np.max(np.abs(tau)) or 1.0
    for j in range(drift.shape[1]):
        ax.plot(
            e,
            drift[:, j] / scale,
            marker=".",
            label=rf"$j={j + 1}$" if drift.shape[1] <= 10 else None,
        )
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set(
        xlabel="epoch",
        ylabel=r"drift of $F(\omega_j)-\overline{F}$ / max $|\tau|$",
        title="The invariant of the renormalised flow",
    )
    if drift.shape[1] <= 10:
        ax.legend(fontsize=7, ncol=2)
    return fig


def figure_time_map(results: dict) -> object:
    """The fitted time map τ(epoch)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), constrained_layout=True)
    e, tau = np.asarray(results["fit/times"]), np.asarray(results["fit/time_map"])
    ax.plot(e, tau, marker="o", markersize=3)
    ax.set(xlabel="epoch", ylabel=r"fitted time $\tau$", title="Time map of the theory")
    return fig


def figure_gd_convergence(results: dict) -> object:
    """Error of gradient descent at a fixed time against the step size η (slope 1: Euler)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), constrained_layout=True)
    eta, err = np.asarray(results["convergence/eta"]), np.asarray(results["convergence/error"])
    ax.loglog(eta, err, "o-", label="GD vs ODE")
    ref = err[-1] * (eta / eta[-1])
    ax.loglog(eta, ref, "k--", linewidth=0.8, label="slope 1")
    ax.set(
        xlabel=r"step size $\eta$",
        ylabel=r"relative error of $\omega$ at fixed t",
        title="Gradient descent converges to the flow",
    )
    ax.legend(fontsize=8)
    return fig


def figures_for(kind: str, results: dict) -> dict[str, object]:
    """The figures of a run of `kind` (simulate, train, compare, demo), by file stem."""
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
    return figs


def draw_run(kind: str, results: dict, run_path) -> list[Path]:
    """Write every figure of a run as PNG and PDF under RUN/figures; return the paths."""
    plt = _plt()
    from .._io import atomic_path

    out = Path(run_path) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, make in figures_for(kind, results).items():
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
