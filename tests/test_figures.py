"""The shipped figures: each one's claim (figures/README.md) holds on the results it is drawn
from, and the drawing shows no rounding noise as data, no empty panel, no legend entry without a
line, epoch 0, and tick labels that do not overlap.

Every claim is a function returning its violations, run on the committed results (none allowed)
and on a falsified copy (some required), so that a claim check cannot pass vacuously.
"""

import itertools
import tomllib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from centralpath import plotting  # noqa: E402
from centralpath.plotting import RESOLUTION  # noqa: E402

FIGURES = Path(__file__).resolve().parent.parent / "figures"
NAMES = ("closed_form", "gd_convergence", "digits_mlp", "ufm_collapse")


def _committed(name: str) -> dict:
    return dict(np.load(FIGURES / name / "results.npz"))


def _config(name: str) -> dict:
    return tomllib.loads((FIGURES / name / "config.toml").read_text())


# ---------------------------------------------------------------------------------------------
# What every drawn figure must satisfy.


def _finite(a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a[np.isfinite(a)]


def figure_problems(fig) -> list[str]:
    """Empty axes, legend entries without drawn data, overlapping tick labels."""
    problems = []
    fig.canvas.draw()
    for ax in fig.axes:
        name = ax.get_title() or fig.get_suptitle()
        if not any(_finite(line.get_ydata()).size for line in ax.get_lines()):
            problems.append(f"{name}: no line with data")
        handles, labels = ax.get_legend_handles_labels()
        legend = ax.get_legend()
        for text in [t.get_text() for t in legend.get_texts()] if legend else []:
            drawn = [h for h, label in zip(handles, labels, strict=True) if label == text]
            if not drawn:
                problems.append(f"{name}: legend entry {text!r} names no artist")
            for handle in drawn:
                if isinstance(handle, Line2D):
                    if not (_finite(handle.get_xdata()).size and _finite(handle.get_ydata()).size):
                        problems.append(f"{name}: legend entry {text!r} has no drawn data")
                elif not isinstance(handle, Patch):
                    problems.append(f"{name}: legend entry {text!r} is a {type(handle).__name__}")
        # A floor is labelled, in the legend or on the line.
        texts = {t.get_text() for t in ax.texts} | {
            t.get_text() for t in (legend.get_texts() if legend else [])
        }
        for line in ax.get_lines():
            if (
                str(line.get_label()).startswith(plotting.FLOOR_LABEL)
                and line.get_label() not in texts
            ):
                problems.append(f"{name}: the floor {line.get_label()!r} is not labelled")
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [
                t.get_window_extent()
                for t in (*axis.get_ticklabels(), *axis.get_ticklabels(minor=True))
                if t.get_visible() and t.get_text()
            ]
            for a, b in itertools.combinations(boxes, 2):
                if a.overlaps(b):
                    problems.append(f"{name}: tick labels overlap on the {axis.axis_name} axis")
                    break
    return problems


def test_the_drawing_checks_see_what_they_forbid():
    fig, (empty, ax) = plt.subplots(1, 2)
    ax.plot([0.0, 1.0], [1.0, 2.0], label="data")
    ax.plot([0.0, 1.0], [np.nan, np.nan], label="nothing")
    ax.plot([0.0, 1.0], [1e-13, 1e-13], label=plotting.FLOOR_LABEL)
    ax.legend(handles=ax.get_lines()[:2])
    problems = figure_problems(fig)
    assert any("no line with data" in p for p in problems)  # the empty axes
    assert any("'nothing' has no drawn data" in p for p in problems)
    assert any("is not labelled" in p for p in problems)


def _data_lines(ax):
    """The lines that draw data: not the float64 floor, not a marker of the flag."""
    skip = (plotting.FLOOR_LABEL, plotting.BEYOND_LABEL)
    return [
        line
        for line in ax.get_lines()
        if not str(line.get_label()).startswith(skip) and line.get_linestyle() != ":"
    ]


def _draw_all(results, config=None):
    figs = {stem: make() for stem, make in plotting.figures_for("run", results, config).items()}
    return figs


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------------------------------------
# Masking and drawing on synthetic results.


def _synthetic() -> dict:
    t = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
    loss = np.array([1e-1, 5e-2, 2e-2, 1e-2, 1e-2])
    perp = np.array([0.0, 1e-33, 3e-34, 0.0, 1e-33])  # 0 up to rounding, like the central path
    return {
        "gd/times": t,
        "gd/loss": loss,
        "gd/loss_nc1": 0.6 * loss,
        "gd/loss_nc23": 0.4 * loss - perp,
        "gd/loss_perp": perp,
        "gd/perp_rel": perp / loss,
        "gd/nc1": np.array([0.3, 1e-3, 1e-8, 1e-30, 0.0]),  # collapsed, then clamped to 0
        "gd/nc2_equinorm_means": np.array([0.2, 1e-3, 1e-9, 1e-16, 2e-16]),
        "gd/nc2_equiangular_means": np.array([0.1, 1e-4, 1e-10, 3e-17, 0.0]),
        "gd/nc3": np.array([1.0, 1e-6, 1e-20, 1e-30, 1e-31]),
        "gd/nc4": np.full(5, np.nan),  # a moment-reduced run has no NC4
        "gd/snr": np.array([[2.0, 1.0], [5.0, 3.0], [50.0, 20.0], [np.inf, 1e3], [np.inf] * 2]),
        "gd/snr_beyond_resolution": np.array([0.0, 0.0, 0.0, 1.0, 1.0]),
    }


def test_loss_terms_below_resolution_are_not_drawn():
    r = _synthetic()
    fig = plotting.figure_loss_decomposition(r, "gd")
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert r"$L_{\perp LS}$" not in labels  # every point of it is rounding noise
    floor = [line for line in ax.get_lines() if line.get_label().startswith("float64")]
    assert len(floor) == 1 and np.allclose(floor[0].get_ydata(), RESOLUTION * r["gd/loss"])
    for line in _data_lines(ax):
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata(), float)
        floor_at = np.interp(x, r["gd/times"], RESOLUTION * r["gd/loss"])
        assert np.all(y[np.isfinite(y)] >= floor_at[np.isfinite(y)]), line.get_label()
    assert any("below float64 resolution" in t.get_text() for t in ax.texts)
    assert not figure_problems(fig)


def test_collapse_metrics_mask_rounding_and_drop_absent_panels():
    r = _synthetic()
    fig = plotting.figure_nc_metrics(r, "gd")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 5 and not any("NC4" in t for t in titles)  # all-NaN panel dropped
    by_title = {ax.get_title(): ax for ax in fig.axes}
    nc1 = _data_lines(by_title[plotting.NC_PANELS[0][1]])[0]
    np.testing.assert_array_equal(_finite(nc1.get_ydata()), [0.3, 1e-3, 1e-8])
    nc3 = _data_lines(by_title["NC3: self-duality"])[0]
    np.testing.assert_array_equal(_finite(nc3.get_ydata()), [1.0, 1e-6, 1e-20])
    perp = by_title[r"$L_{\perp LS}/L$"]
    assert not _data_lines(perp)  # all below 10³ε: only the floor and a note
    assert any("at every save" in t.get_text() for t in perp.texts)
    for ax in fig.axes:
        for line in _data_lines(ax):
            assert np.all(_finite(line.get_ydata()) >= RESOLUTION**2), ax.get_title()
    assert not figure_problems(fig)


def test_infinite_omega_is_not_drawn_and_the_flag_is_marked():
    r = _synthetic()
    fig = plotting.figure_omega(r)
    ax = fig.axes[0]
    for line in _data_lines(ax):
        y = np.asarray(line.get_ydata(), float)
        assert not np.any(np.isinf(y))
    drawn = np.concatenate([_finite(line.get_ydata()) for line in _data_lines(ax)])
    assert 1e3 in drawn  # the finite ω_2 at a flagged save is still data
    marks = [line for line in ax.get_lines() if line.get_label() == plotting.BEYOND_LABEL]
    assert len(marks) == 1 and np.all(np.asarray(marks[0].get_xdata()) == 100.0)
    assert not figure_problems(fig)


def test_epoch_zero_is_drawn_on_a_symlog_axis():
    r = _synthetic()
    for fig in (plotting.figure_nc_metrics(r, "gd"), plotting.figure_omega(r)):
        for ax in fig.axes:
            assert ax.get_xscale() == "symlog" and ax.get_xlim()[0] <= 0.0
            lines = _data_lines(ax)
            if lines:
                assert any(
                    np.asarray(line.get_xdata())[0] == 0.0
                    and np.isfinite(np.asarray(line.get_ydata(), float)[0])
                    for line in lines
                ), ax.get_title()
        label = fig.axes[0].get_xlabel() or fig.get_supxlabel()
        assert "symlog" in label and "linear on [0, 1]" in label


def test_gd_convergence_ticks_are_the_step_sizes_and_do_not_overlap():
    r = _committed("gd_convergence")
    fig = plotting.figure_gd_convergence(r)
    fig.canvas.draw()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert ticks == [f"{e:g}" for e in sorted(r["convergence/eta"])]
    assert not figure_problems(fig)
    # The check sees overlaps: matplotlib's default labels on this short log axis overlapped.
    fig2, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.loglog(r["convergence/eta"], r["convergence/error"])
    assert any("overlap" in p for p in figure_problems(fig2))


@pytest.mark.parametrize("name", NAMES)
def test_committed_figures_are_drawn_cleanly(name):
    """Every figure of the committed results: stems as committed, no empty axes, legends with
    data, ticks apart, nothing on a log axis below 10³ε² (far under any floor used here)."""
    results = _committed(name)
    config = plotting.read_run_config(FIGURES / name)
    figs = _draw_all(results, config)
    assert set(figs) == {p.stem for p in (FIGURES / name / "figures").glob("*.png")}
    # Each title names the run's configuration (flow and C, N, p; dataset, network, loss).
    caption = plotting.describe_run(config)
    assert caption
    for stem, fig in figs.items():
        titles = [fig.get_suptitle(), *(ax.get_title() for ax in fig.axes)]
        assert any(caption in t for t in titles), (stem, titles)
        assert not figure_problems(fig), (stem, figure_problems(fig))
        for ax in fig.axes:
            if ax.get_yscale() == "log":  # (symlog axes draw 0 as a value: τ(0) = 0)
                for line in _data_lines(ax):
                    assert np.all(_finite(line.get_ydata()) >= RESOLUTION**2), (
                        stem,
                        ax.get_title(),
                    )


# ---------------------------------------------------------------------------------------------
# The claims, each a function returning its violations.


def omega_grow_while_nc1_falls(r: dict, series: str) -> list[str]:
    """ω_j(t) never decrease between saves where NC1 decreases (ω_j resolved at both)."""
    omega, nc1 = np.asarray(r[f"{series}/snr"], float), np.asarray(r[f"{series}/nc1"], float)
    bad = []
    for k in range(len(nc1) - 1):
        if not nc1[k + 1] < nc1[k]:
            continue
        both = np.isfinite(omega[k]) & np.isfinite(omega[k + 1])
        if np.any(omega[k + 1][both] < omega[k][both] * (1 - 1e-12)):
            bad.append(f"{series}: ω fall at save {k + 1} while NC1 falls")
    return bad


def closed_form_ode_gd_agree(r: dict, classes: int, per_class: int) -> list[str]:
    """ODE = closed form to 1e-9; GD (η = 100, first order) within 1% at its own save times."""
    import centralpath as cp

    predict = cp.eigen_dynamics(r["closed_form/snr"][0], classes, per_class)
    bad = []
    for series, tol in (("ode", 1e-9), ("gd", 1e-2)):
        exact = np.asarray(predict(r[f"{series}/times"]))
        err = np.max(np.abs(r[f"{series}/snr"] - exact) / exact)
        if not err <= tol:
            bad.append(f"{series} vs closed form: {err:.2e} > {tol:g}")
    return bad


def test_closed_form_claims():
    r = _committed("closed_form")
    sim = _config("closed_form")["simulation"]
    bad = [p for s in ("closed_form", "ode", "gd") for p in omega_grow_while_nc1_falls(r, s)]
    bad += closed_form_ode_gd_agree(r, sim["classes"], sim["per_class"])
    # NC1 falls throughout and the ω_j equalise (max/min from 2.3 to within 0.1%).
    for s in ("closed_form", "ode", "gd"):
        if not np.all(np.diff(r[f"{s}/nc1"]) < 0):
            bad.append(f"{s}: NC1 does not fall throughout")
    omega = r["closed_form/snr"]
    if not (omega[0].max() / omega[0].min() > 2 and omega[-1].max() / omega[-1].min() < 1.001):
        bad.append("ω_j do not equalise")
    # The flow stays on the central path: L_⊥LS is 0 up to rounding, so the figure draws none.
    for s in ("ode", "gd"):
        if np.any(r[f"{s}/loss_perp"] >= RESOLUTION * r[f"{s}/loss"]):
            bad.append(f"{s}: L_⊥LS above float64 resolution")
    assert not bad, bad
    # Falsified: ω that fall while NC1 falls (the plunge issue 13 reported), GD off by 5%.
    broken = dict(r)
    broken["gd/snr"] = r["gd/snr"].copy()
    broken["gd/snr"][-5:] *= 1e-3
    assert omega_grow_while_nc1_falls(broken, "gd")
    assert closed_form_ode_gd_agree(broken, sim["classes"], sim["per_class"])


def gd_first_order(r: dict) -> list[str]:
    """The error falls with η at slope 1 ± 0.05 in log–log (fitted here and as saved)."""
    eta, err = r["convergence/eta"], r["convergence/error"]
    slope = np.polyfit(np.log(eta), np.log(err), 1)[0]
    bad = []
    if not abs(slope - 1.0) < 0.05:
        bad.append(f"slope {slope:.3f} is not 1")
    if "convergence/slope" in r and not np.isclose(r["convergence/slope"], slope, rtol=1e-12):
        bad.append("the saved slope is not the fit of the saved errors")
    if not np.all(np.diff(err[np.argsort(eta)]) > 0):
        bad.append("the error does not fall with η")
    return bad


def test_gd_convergence_claim():
    r = _committed("gd_convergence")
    assert not gd_first_order(r)
    assert float(r["convergence/t"]) == _config("gd_convergence")["t"]
    second = {**r, "convergence/error": r["convergence/error"] ** 2}
    second.pop("convergence/slope")
    assert gd_first_order(second)  # a second-order method would fail the claim


def ufm_collapse(r: dict, series: str) -> list[str]:
    """Objective falls to the global minimum; NC1 falls below 1e-10 of its start; ω_j grow
    until float64 cannot resolve them, and from the first flagged save on they stay flagged."""
    bad = omega_grow_while_nc1_falls(r, series)
    obj, optimum = r[f"{series}/objective"], float(r["oracle/global_minimum"])
    if not np.all(np.diff(obj) <= 1e-15 * optimum):
        bad.append(f"{series}: the objective rises")
    if not abs(obj[-1] - optimum) <= 1e-12 * optimum:
        bad.append(f"{series}: final gap {obj[-1] - optimum:.2e}")
    nc1 = r[f"{series}/nc1"]
    if not nc1[-1] < 1e-10 * nc1[0]:
        bad.append(f"{series}: NC1 does not collapse")
    flag = r[f"{series}/snr_beyond_resolution"] > 0
    finite = np.all(np.isfinite(r[f"{series}/snr"]), axis=1)
    if not np.array_equal(flag, ~finite):
        bad.append(f"{series}: the flag is not where ω_j are +inf")
    first = int(np.argmax(flag)) if flag.any() else len(flag)
    if not np.all(flag[first:]):
        bad.append(f"{series}: resolved again after the flag")
    omega = r[f"{series}/snr"][:first]
    if not (first > 1 and np.all(omega[-1] > 20 * omega[0])):
        bad.append(f"{series}: ω_j do not grow before the flag")
    return bad


def test_ufm_collapse_claims():
    import centralpath as cp

    r = _committed("ufm_collapse")
    sim = _config("ufm_collapse")["simulation"]
    optimum = float(
        cp.ufm_global_minimum(sim["classes"], sim["per_class"], sim["lam_w"], sim["lam_h"])
    )
    assert float(r["oracle/global_minimum"]) == pytest.approx(optimum, rel=1e-14)
    assert abs(float(r["oracle/gap_final"])) <= 1e-12 * optimum
    assert not (ufm_collapse(r, "ode") + ufm_collapse(r, "gd"))
    # Falsified: the pre-fix behaviour, ω_j plunging to 1e-7 while NC1 falls.
    broken = dict(r)
    broken["gd/snr"] = np.where(np.isfinite(r["gd/snr"]), r["gd/snr"], 1e-7)
    broken["gd/snr_beyond_resolution"] = np.zeros_like(r["gd/snr_beyond_resolution"])
    assert ufm_collapse(broken, "gd")


def digits_mlp(r: dict) -> list[str]:
    """NC1 falls 100-fold; L_⊥LS/L falls 10-fold to below 5%; training accuracy reaches 1;
    ω_j grow 10-fold; the fitted closed form is within 35% of every ω_j (per-j RMS relative
    error); τ(e) is monotone; and the invariant drifts by ≥ 10% of max τ (the network is not on
    the renormalised flow there)."""
    bad = []
    nc1, perp = r["train/nc1"], r["train/perp_rel"]
    if not nc1[-1] < 1e-2 * nc1[0]:
        bad.append("NC1 does not fall 100-fold")
    if not (perp[-1] < 0.1 * perp[0] and perp[-1] < 0.05):
        bad.append(f"L_⊥LS/L from {perp[0]:.3g} to {perp[-1]:.3g}")
    if not r["train/train_accuracy"][-1] == 1.0:
        bad.append("training accuracy below 1")
    omega = r["fit/omega_measured"]
    if not np.all(omega[-1] > 10 * omega[0]):
        bad.append("ω_j do not grow 10-fold")
    if not np.all(r["fit/relative_error"] <= 0.35):
        bad.append(f"fit error {np.max(r['fit/relative_error']):.2f}")
    if not np.all(np.diff(r["fit/time_map"]) >= 0):
        bad.append("τ(e) is not monotone")
    drift = np.max(np.abs(r["fit/drift"])) / np.max(np.abs(r["fit/time_map"]))
    if not drift >= 0.1:
        bad.append(f"invariant drift only {drift:.3f} of max τ")
    return bad


def test_digits_mlp_claims():
    r = _committed("digits_mlp")
    assert not digits_mlp(r)
    broken = {**r, "train/perp_rel": r["train/perp_rel"][::-1]}  # L_⊥LS/L rising
    assert digits_mlp(broken)
