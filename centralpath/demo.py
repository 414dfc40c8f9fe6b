"""The whole story on embedded defaults: `centralpath demo`.

1. Simulate the paper's renormalised central-path flow: closed form vs Diffrax vs gradient
   descent, and the first-order convergence of gradient descent to the flow in η.
2. Train a small network with MSE on the built-in real digits data, capturing features.
3. Measure it (NC1–NC4, L_⊥LS/L) and compare its ω_j(epoch) with the closed form.
4. Write a run directory with figures and a one-page report (Markdown and self-contained HTML).
"""

from __future__ import annotations

import base64
import dataclasses
import html
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._errors import require
from ._run.config import Config, option

SIMULATION = {
    "flow": "renormalised",
    "classes": 5,
    "per_class": 20,
    "dim": 16,
    "t_end": 1e7,
    "num_saves": 41,
    "seed": 0,
    "methods": ["ode", "gd"],
    "eta": 100.0,
    "representation": "reduced",
    "mean_scale": 1.0,
    "noise_scale": 1.0,
}
TRAINING = {"dataset": "digits", "model": "mlp", "loss": "mse"}


def _validate_convergence(conv: ConvergenceConfig) -> None:
    """[convergence]'s horizon t and step sizes etas: at least two distinct steps in (0, t],
    for the slope."""
    from ._errors import require_real
    from .simulate import MAX_STEPS

    require_real("[convergence] t", conv.t, 0, lo_open=True)
    etas = conv.etas
    require(
        isinstance(etas, list | tuple) and len(etas) >= 2,
        f"[convergence] etas must list at least two step sizes (the slope of the error against "
        f"eta needs two), got {etas!r}; e.g. etas = [800.0, 400.0, 200.0]",
    )
    for eta in etas:
        require_real(
            "each of [convergence] etas",
            eta,
            conv.t / MAX_STEPS,
            conv.t,
            fix=f"a step in [t/{MAX_STEPS:.0e}, t] takes 1 to {MAX_STEPS:.0e} steps to reach t",
        )
    require(
        len(set(float(e) for e in etas)) >= 2,
        f"[convergence] etas must hold at least two different step sizes, got {etas!r}",
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvergenceConfig(Config):
    """The demo's [convergence] table: gradient descent's first-order convergence to the flow."""

    command: ClassVar[str] = "demo"

    t: float = option(2e4, "the time the errors are measured at", flag=False)
    etas: list = option([800.0, 400.0, 200.0, 100.0, 50.0], "GD step sizes", flag=False)

    validator: ClassVar = staticmethod(lambda c: _validate_convergence(c))


#: The demo's settings, by table: its own choices for simulate and train over theirs.
DEFAULTS: dict[str, Any] = {
    "simulation": SIMULATION,
    "convergence": ConvergenceConfig.defaults(),
    "training": TRAINING,
}


def resolve(config: Mapping[str, Mapping[str, Any]] | None = None, *, train: bool = True):
    """(simulation, convergence, training or None) as typed configurations: the demo's
    settings over each command's defaults, under `config`'s tables; each validated on
    construction, before any work (a one-line `InputError`)."""
    from .simulate import SimulationConfig

    config = config or {}
    sim = SimulationConfig(**{**SIMULATION, **config.get("simulation", {})})
    conv = ConvergenceConfig(**config.get("convergence", {}))
    training = None
    if train:
        from ._run.config import TrainConfig

        training = TrainConfig(**{**TRAINING, **config.get("training", {})})
    return sim, conv, training


def validate(config: Mapping[str, Mapping[str, Any]], *, train: bool = True) -> None:
    """One-line `InputError` for a demo configuration, before any work: each table as its
    command checks it ([simulation] as simulate, [training] as train), and [convergence]."""
    resolve(config, train=train)


def gd_convergence(config, t: float, etas: list[float]) -> dict[str, np.ndarray]:
    """Relative error of GD's ω at time t against the closed form, for each step size η
    (`config`: a `SimulationConfig` or a dict of its keys)."""
    from ._discrete import gradient_descent
    from ._eigen import eigen_dynamics
    from ._metrics import snr_singular_values
    from .simulate import as_config, build

    config = as_config(config)
    flow, y0, omega0 = build(config)
    exact = np.asarray(eigen_dynamics(omega0, config.classes, config.per_class)(t))
    errors = []
    for eta in etas:
        steps = int(round(t / eta))
        tr = gradient_descent(flow, y0, eta, steps)
        omega = np.asarray(snr_singular_values(flow.class_stats(tr.final_state)))
        errors.append(float(np.max(np.abs(omega - exact) / exact)))
    eta = np.asarray(etas, float)
    err = np.asarray(errors)
    slope = float(np.polyfit(np.log(eta), np.log(err), 1)[0])
    return {
        "convergence/eta": eta,
        "convergence/error": err,
        "convergence/slope": np.asarray(slope),
    }


def summarise_simulation(results: dict) -> dict[str, float]:
    cf = results["closed_form/snr"]
    ode_err = float(np.max(np.abs(results["ode/snr"] - cf) / cf))
    t_gd = results["gd/times"]
    cf_at_gd = np.stack(
        [np.interp(t_gd, results["closed_form/times"], cf[:, j]) for j in range(cf.shape[1])], 1
    )
    return {
        "ode_vs_closed_form_max_rel": ode_err,
        "gd_vs_closed_form_final_rel": float(
            np.max(np.abs(results["gd/snr"][-1] - cf_at_gd[-1]) / cf_at_gd[-1])
        ),
        "omega_ratio_start": float(cf[0].max() / cf[0].min()),
        "omega_ratio_end": float(cf[-1].max() / cf[-1].min()),
        "nc1_start": float(results["closed_form/nc1"][0]),
        "nc1_end": float(results["closed_form/nc1"][-1]),
        "loss_start": float(results["closed_form/loss"][0]),
        "loss_end": float(results["closed_form/loss"][-1]),
        "t_end": float(results["closed_form/times"][-1]),
        # L_⊥LS/L of the ODE (0 on the central path up to rounding).
        "perp_rel_max_ode": float(
            np.max(results["ode/loss_perp"] / np.maximum(results["ode/loss"], 1e-300))
        ),
    }


def run_demo(
    run_path: Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    train: bool = True,
    config: dict | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run the demo into `run_path` (a directory under construction); return (results, summary)."""
    from .simulate import simulate

    sim, conv, tcfg = resolve(config, train=train)
    log("1/3 simulating the renormalised central-path flow (closed form, Diffrax, GD)")
    results = simulate(sim, progress=progress, log=log)
    summary: dict[str, Any] = {"simulation": summarise_simulation(results)}
    results.update(gd_convergence(sim, float(conv.t), list(conv.etas)))
    summary["convergence"] = {
        "t": conv.t,
        "eta": list(conv.etas),
        "error": results["convergence/error"].tolist(),
        "slope": float(results["convergence/slope"]),
    }
    if train:
        log("2/3 training an MLP with MSE on the real digits data (features captured per epoch)")
        from .measurement._io import load_features
        from .measurement.compare import compare_features
        from .networks.train import train_from_config

        training = train_from_config(tcfg, state_dir=run_path / "state", progress=progress)
        features_path = run_path / "features.npz"
        training.save_features(features_path)
        log("3/3 measuring the network and comparing with the closed form")
        ff = load_features(features_path)
        fit, cmp_results, cmp_summary = compare_features(ff)
        results.update(cmp_results)
        results["train/train_loss"] = np.asarray(training.loss, float)
        results["train/train_accuracy"] = np.asarray(training.accuracy, float)
        checkpoints = cmp_summary["checkpoints"]
        nc1 = np.asarray([c["nc1"] for c in checkpoints])
        perp = [c["perp_rel"] for c in checkpoints]
        e0 = training.first_zero_error_epoch
        epochs = np.asarray(training.epochs)
        drop = None
        if e0 is not None and e0 in epochs:
            drop = float(nc1[int(np.flatnonzero(epochs == e0)[0])] / nc1[-1])
        summary["training"] = {
            "dataset": tcfg.dataset,
            "model": tcfg.model,
            "epochs": int(tcfg.epochs),
            "weight_decay": float(tcfg.weight_decay),
            "final_train_accuracy": float(training.accuracy[-1]),
            "final_test_accuracy": None
            if training.test_accuracy is None
            else float(training.test_accuracy[-1]),
            "first_zero_error_epoch": e0,
            "nc1_first": float(nc1[0]),
            "nc1_last": float(nc1[-1]),
            "nc1_drop_from_first_zero_error": drop,
            "perp_rel_first": perp[0],
            "perp_rel_last": perp[-1],
        }
        # The predictive test (compare --model all): each model from the network's own state.
        from .measurement.predictive import MODELS, compare_models, report_numbers, results_series

        log("    ... and predicting it with the closed form, the central path and the UFM")
        measurement, _, predictions = compare_models(ff, MODELS, records=checkpoints)
        results.update(results_series(measurement, predictions))
        summary["prediction"] = report_numbers(predictions)
        summary["comparison"] = {
            "variance_explained": fit.variance_explained,
            "drift_relative": fit.drift_relative,
            "relative_error_median": float(np.median(fit.relative_error)),
            "relative_error_max": float(np.max(fit.relative_error)),
            "time_map_monotone": fit.time_map_monotone,
            "nc1_exponent": fit.nc1_exponent,
        }
        import shutil

        shutil.rmtree(run_path / "state", ignore_errors=True)
    return results, summary


# --------------------------------------------------------------------------- the report
#
# One section per part of the story: its figures, each with a caption computed from the run's
# own numbers (what rose, what fell, by how much, and what that means against the theory), and
# one table of those numbers. Nothing is fixed text that a run could contradict.

#: (section, title, figure stems in order).
SECTIONS = (
    ("simulation", "The renormalised flow: closed form, Diffrax, gradient descent",
     ("omega", "loss_decomposition_ode", "nc_metrics_ode")),
    ("convergence", "Gradient descent converges to the flow", ("gd_convergence",)),
    ("training", "A network trained with MSE on real digits",
     ("nc_metrics_train", "loss_decomposition_train")),
    ("comparison", "The network against the closed form",
     ("measured_vs_predicted", "invariant", "time_map")),
    ("prediction", "Does the theory predict the network?", ("models_vs_measured",)),
)  # fmt: skip

FIGURE_TITLES = {
    "omega": "Closed form vs ODE vs gradient descent",
    "loss_decomposition_ode": "Loss decomposition along the flow",
    "nc_metrics_ode": "Neural-collapse metrics along the flow",
    "gd_convergence": "Error of gradient descent against the step size",
    "nc_metrics_train": "Neural collapse in the trained network",
    "loss_decomposition_train": "Loss decomposition of the network",
    "measured_vs_predicted": "Measured vs predicted ω_j(epoch)",
    "invariant": "The invariant F(ω_j) − F(ω_k)",
    "time_map": "Fitted time map τ(epoch)",
    "models_vs_measured": "Measured ω_j against each model started from the network",
}

#: The theory's NC1 exponent against the flow's time: NC1 ≈ ((C − 1)/2)·√(N/τ) (docs/theory.md
#: §6, F3, large τ).
NC1_EXPONENT_THEORY = -0.5


def _num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int | np.integer):
        return str(int(x))
    return f"{float(x):.{digits}g}"


def change(name: str, first, last, *, digits: int = 3) -> str:
    """ "NAME fell from A to B (F-fold)" / "rose …" / "stayed at A" — the words follow the
    numbers."""
    a, b = float(first), float(last)
    if not (np.isfinite(a) and np.isfinite(b)):
        return f"{name} went from {_num(a, digits)} to {_num(b, digits)}"
    if a == b or (a != 0 and abs(b - a) <= 1e-3 * abs(a)):
        return f"{name} stayed at {_num(a, digits)}"
    verb = "fell" if b < a else "rose"
    text = f"{name} {verb} from {_num(a, digits)} to {_num(b, digits)}"
    lo, hi = sorted((abs(a), abs(b)))
    if lo > 0 and a * b > 0 and hi / lo >= 2:
        fold = hi / lo
        text += f" ({fold:.3g}-fold)" if fold < 100 else f" ({fold:,.0f}-fold)"
    return text


def drift_verdict(drift: float) -> str:
    """The comparison's verdict from the drift of F(ω_j) − F(ω_k) relative to the fitted time
    span (0 along the renormalised theory)."""
    if not np.isfinite(drift):
        return "the drift could not be measured (an ω_j is beyond float64 resolution)"
    if drift < 0.05:
        return (
            f"the network keeps the theory's invariant (drift {drift:.2g} of the fitted time "
            "span, against 0 along the renormalised flow): its ω_j move together as the "
            "closed form says"
        )
    if drift < 0.3:
        return (
            f"the network keeps the invariant only roughly (drift {drift:.2g} of the fitted "
            "time span; 0 along the renormalised flow): the closed form describes the trend of "
            "its ω_j, not their spread"
        )
    return (
        f"the network does not keep the invariant (drift {drift:.2g} of the fitted time span, "
        "against 0 along the renormalised flow): its ω_j spread where the closed form moves "
        "them together, so it is not on the renormalised central-path dynamics"
    )


def exponent_verdict(exponent: float) -> str:
    """The late NC1 exponent against τ, read against the theory's −1/2."""
    if not np.isfinite(exponent):
        return "the late NC1 exponent could not be fitted (fewer than 3 late checkpoints)"
    gap = exponent - NC1_EXPONENT_THEORY
    if abs(gap) <= 0.1:
        how = "consistent with the theory's −1/2"
    elif gap < 0:
        how = f"steeper than the theory's −1/2 (by {-gap:.2g}): NC1 falls faster than on the flow"
    else:
        how = f"shallower than the theory's −1/2 (by {gap:.2g}): NC1 falls slower than on the flow"
    return f"late NC1 ∝ τ^{exponent:.3f}, {how}"


def order_verdict(slope: float) -> str:
    if abs(slope - 1.0) <= 0.15:
        return f"fitted order {slope:.3f}: first order in η (Euler's method), as it should be"
    return f"fitted order {slope:.3f}, not the first order (1) of Euler's method: check the steps"


def captions(summary: dict[str, Any]) -> dict[str, str]:
    """One caption per figure, computed from the summary's numbers."""
    out: dict[str, str] = {}
    s = summary.get("simulation")
    if s:
        out["omega"] = (
            f"The SNR singular values ω_j(t) up to t = {_num(s['t_end'])}: closed form (lines), "
            f"Diffrax (circles), gradient descent (dashed). "
            f"{change('ω_max/ω_min', s['omega_ratio_start'], s['omega_ratio_end'], digits=4)}: "
            + (
                "the ω_j equalise, so the class means approach a simplex ETF. "
                if s["omega_ratio_end"] < s["omega_ratio_start"]
                else "the ω_j do not equalise. "
            )
            + f"Diffrax agrees with the closed form to {s['ode_vs_closed_form_max_rel']:.1e} "
            f"(max relative difference), gradient descent to "
            f"{s['gd_vs_closed_form_final_rel']:.1e} at the last save."
        )
        perp = s["perp_rel_max_ode"]
        on_path = (
            "the flow stays on the central path (L_⊥LS is 0 up to rounding)"
            if perp < 1e-10
            else f"L_⊥LS/L reaches {perp:.2g}: the flow leaves the central path"
        )
        out["loss_decomposition_ode"] = (
            f"L = L_NC1 + L_NC2/3 + L_⊥LS along the ODE: {change('L', s['loss_start'], s['loss_end'])}; "
            f"{on_path}."
        )
        out["nc_metrics_ode"] = (
            f"NC1–NC3 and L_⊥LS/L against time: {change('NC1', s['nc1_start'], s['nc1_end'])}."
        )
    c = summary.get("convergence")
    if c:
        out["gd_convergence"] = (
            f"Max relative error of gradient descent's ω_j at t = {_num(c['t'])} against the "
            f"closed form, for η = {', '.join(_num(e) for e in c['eta'])}: "
            f"{order_verdict(c['slope'])}; the error {change('', c['error'][0], c['error'][-1]).strip()} "
            "from the largest step to the smallest."
        )
    t = summary.get("training")
    if t:
        e0 = t["first_zero_error_epoch"]
        reached = (
            f"training accuracy reached 100% at epoch {e0}"
            if e0 is not None
            else f"training accuracy ended at {t['final_train_accuracy']:.4f} (never 100%)"
        )
        test = t.get("final_test_accuracy")
        drop = t.get("nc1_drop_from_first_zero_error")
        out["nc_metrics_train"] = (
            f"{change('NC1', t['nc1_first'], t['nc1_last'])} over {t['epochs']} epochs; "
            f"{reached}"
            + ("" if test is None else f" (held-out accuracy {test:.3f} at the end)")
            + (
                ""
                if drop is None
                else f"; NC1 fell {drop:.3g}-fold after that (the terminal phase)"
            )
            + "."
        )
        pl = t["perp_rel_last"]
        if pl is None:
            out["loss_decomposition_train"] = "The file has no classifier: no decomposition."
        else:
            where = (
                "the network ends close to the central path (its classifier near the "
                "least-squares one)"
                if pl < 0.05
                else "the classifier stays away from the least-squares one"
            )
            out["loss_decomposition_train"] = (
                f"{change('L_⊥LS/L', t['perp_rel_first'], pl)} (ridge classifier at the training "
                f"weight decay λ = {t['weight_decay']:g}): {where}; L_⊥LS is {pl:.1%} of L at "
                "the end."
            )
    m = summary.get("comparison")
    if m:
        out["measured_vs_predicted"] = (
            f"The closed form fitted to the measured ω_j (docs/theory.md §8) explains "
            f"{m['variance_explained']:.1%} of the variance of F(ω_j); the per-j RMS relative "
            f"error is {m['relative_error_median']:.0%} (median) to "
            f"{m['relative_error_max']:.0%} (worst)."
        )
        out["invariant"] = f"F(ω_j) − F̄ along the epochs: {drift_verdict(m['drift_relative'])}."
        out["time_map"] = (
            "The fitted theory time τ(epoch) is "
            + (
                "monotone, as the theory requires"
                if m["time_map_monotone"]
                else "not monotone, which the theory forbids: the fit is not a time map"
            )
            + f"; {exponent_verdict(m['nc1_exponent'])}."
        )
    p = summary.get("prediction")
    if p:
        from .measurement.predictive import report_caption

        out["models_vs_measured"] = report_caption(p)
    return out


#: Rows of each section's table: (key, label).
TABLE_ROWS = {
    "simulation": (
        ("omega_ratio_start", "ω_max/ω_min at t = 0"),
        ("omega_ratio_end", "ω_max/ω_min at the end"),
        ("nc1_start", "NC1 at t = 0"),
        ("nc1_end", "NC1 at the end"),
        ("loss_start", "L at t = 0"),
        ("loss_end", "L at the end"),
        ("perp_rel_max_ode", "max L_⊥LS/L along the ODE (0 on the central path)"),
        ("ode_vs_closed_form_max_rel", "ODE vs closed form, max relative difference"),
        ("gd_vs_closed_form_final_rel", "GD vs closed form at the end, relative"),
    ),
    "convergence": (
        ("t", "time t of the comparison"),
        ("eta", "step sizes η"),
        ("error", "max relative error of ω_j"),
        ("slope", "fitted order (1 = first order)"),
    ),
    "training": (
        ("dataset", "dataset"),
        ("model", "network"),
        ("epochs", "epochs"),
        ("weight_decay", "weight decay λ (paper scale)"),
        ("final_train_accuracy", "final training accuracy"),
        ("final_test_accuracy", "final held-out accuracy"),
        ("first_zero_error_epoch", "first epoch with 100% training accuracy"),
        ("nc1_first", "NC1 at epoch 0"),
        ("nc1_last", "NC1 at the end"),
        ("nc1_drop_from_first_zero_error", "NC1 drop after the first zero-error epoch"),
        ("perp_rel_first", "L_⊥LS/L at epoch 0"),
        ("perp_rel_last", "L_⊥LS/L at the end"),
    ),
    "comparison": (
        ("variance_explained", "variance of F(ω_j) explained by the fit"),
        ("relative_error_median", "per-j RMS relative error, median"),
        ("relative_error_max", "per-j RMS relative error, worst"),
        ("drift_relative", "drift of F(ω_j) − F(ω_k) / fitted time span (theory: 0)"),
        ("time_map_monotone", "time map monotone (theory: yes)"),
        ("nc1_exponent", f"late NC1 exponent against τ (theory: {NC1_EXPONENT_THEORY:g})"),
    ),
    # The model ladder of compare --model all (centralpath.measurement.predictive.report_numbers).
    "prediction": (
        ("start", "start e0"),
        ("clock", "clock"),
        ("closed-form", "closed form (F3, λ = 0, from ω(e0))"),
        ("central-path", "central path at λ = the weight decay"),
        ("ufm", "UFM from the measured W, b"),
    ),
}


def section_table(section: str, numbers: dict) -> list[tuple[str, str]]:
    """(label, value) rows of one section's numbers."""
    rows = []
    for key, label in TABLE_ROWS.get(section, ()):
        if key not in numbers:
            continue
        v = numbers[key]
        if isinstance(v, list | tuple):
            value = ", ".join(_num(x) for x in v)
        elif isinstance(v, str):
            value = v
        else:
            value = _num(v, 4)
        rows.append((label, value))
    return rows


def section_verdicts(summary: dict[str, Any]) -> dict[str, str]:
    """A sentence per section that reads its numbers (the interpretation of the table)."""
    # The convergence caption already carries its verdict (one figure, one number).
    out = {}
    p = summary.get("prediction")
    if p:
        out["prediction"] = f"Verdict ({p['verdict_of']}): {p['verdict']} — {p['reason']}."
    m = summary.get("comparison")
    if m:
        out["comparison"] = (
            f"Verdict: {drift_verdict(m['drift_relative'])}; {exponent_verdict(m['nc1_exponent'])}."
        )
    return out


def write_report(run_path: Path, summary: dict[str, Any]) -> None:
    """report.md and a self-contained report.html: per section its figures, each with a caption
    computed from the numbers, then one table of those numbers and its verdict."""
    from .measurement._io import write_text

    figures = run_path / "figures"
    intro = (
        "Neural collapse under MSE loss: the renormalised central-path flow in closed form, "
        "checked against Diffrax and gradient descent, and compared with a network trained on "
        "real digits."
    )
    md = ["# centralpath demo", "", intro, ""]
    body = ["<h1>centralpath demo</h1>", f"<p>{html.escape(intro)}</p>"]
    caps, verdicts = captions(summary), section_verdicts(summary)
    for section, title, stems in SECTIONS:
        numbers = summary.get(section)
        if not numbers:
            continue
        md += [f"## {title}", ""]
        body.append(f"<h2>{html.escape(title)}</h2>")
        for stem in stems:
            png = figures / f"{stem}.png"
            caption = caps.get(stem, "")
            if not png.exists():
                if caption:  # no figure drawn (--no-figures): the caption still says the numbers
                    md += [caption, ""]
                    body.append(f"<p>{html.escape(caption)}</p>")
                continue
            name = FIGURE_TITLES[stem]
            md += [f"### {name}", "", f"![{name}](figures/{stem}.png)", "", caption, ""]
            data = base64.b64encode(png.read_bytes()).decode()
            body += [
                f"<h3>{html.escape(name)}</h3>",
                f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}" '
                'style="max-width:640px">',
                f"<p>{html.escape(caption)}</p>",
            ]
        rows = section_table(section, numbers)
        if verdicts.get(section):
            md += [verdicts[section], ""]
            body.append(f"<p><b>{html.escape(verdicts[section])}</b></p>")
        md += ["| quantity | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]
        cells = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows
        )
        body.append(f"<table><tr><th>quantity</th><th>value</th></tr>{cells}</table>")
    write_text(run_path / "report.md", "\n".join(md) + "\n")
    style = (
        "body{font-family:sans-serif;max-width:760px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;font-size:90%}"
    )
    write_text(
        run_path / "report.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>centralpath demo</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n",
    )
