"""Fit the renormalised-flow theory to a measured trajectory of ω_j (docs/theory.md §8).

Theory F3 says there is one monotone time map τ(e) with F(ω_j(e)) = a_j + τ(e) for every j.
Given measured ω_j(e_k) and F_jk = F(ω_j(e_k)), a_j and τ_k (with τ(e_0) = 0 fixing the
additive constant) are fitted by weighted least squares on this two-way additive model, and the
predicted ω̂_j(e_k) = F⁻¹(a_j + τ_k).

Weights: F grows like ω⁴, so plain least squares on F lets the largest ω dictate the fit. By
default each residual is weighted by 1/(dF/d log ω), so that a residual δF counts as the
relative error δω/ω it causes — the quantity reported. `weighting="uniform"` gives the plain
fit, whose solution is closed-form (row and column means). The invariant D_jk(e) = F(ω_j(e)) − F(ω_k(e)) is
constant along the theory; its drift measures how far the network is from the renormalised
central-path dynamics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .._eigen import potential
from .._errors import InputError, require


@dataclass(frozen=True)
class TheoryFit:
    """The fit of docs/theory.md §8 (arrays are numpy; m = number of singular values compared).

    - `epochs` [K]; `omega_measured`, `omega_predicted` [K, m]; `a` [m]; `time_map` τ [K].
    - `relative_error` [m]: RMS over checkpoints of |ω̂ − ω|/ω per j;
      `relative_error_by_checkpoint` [K, m].
    - `variance_explained`: 1 − SS_res/SS_tot of the additive model on F(ω) (1 = exact).
    - `drift` [K, m]: F(ω_j(e)) − mean_i F(ω_i(e)) minus its value at e_0 (0 along the theory);
      `drift_relative`: max |drift| / max |τ| (scale-free; 0 along the theory).
    - `time_map_monotone`: whether τ is non-decreasing, as the theory requires.
    - `nc1_exponent`: slope of log NC1 against log τ over the late half of the checkpoints with
      τ > 0 (theory: −1/2 in the late phase), or NaN when there are fewer than 3 such points.
    """

    epochs: np.ndarray
    omega_measured: np.ndarray
    omega_predicted: np.ndarray
    a: np.ndarray
    time_map: np.ndarray
    relative_error: np.ndarray
    relative_error_by_checkpoint: np.ndarray
    variance_explained: float
    drift: np.ndarray
    drift_relative: float
    time_map_monotone: bool
    nc1_exponent: float
    num_classes: int
    per_class: float
    flow: str
    weighting: str

    def to_dict(self) -> dict:
        return {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()
        }


def _weighted_additive_fit(Fv: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """min Σ_jk w_jk² (F_jk − a_j − τ_k)² with τ_0 = 0, by a least-squares solve."""
    K, m = Fv.shape
    # Unknowns: a_1..a_m, τ_1..τ_{K−1}; row (k, j) has a 1 for a_j and, for k ≥ 1, for τ_k.
    A = np.zeros((K * m, m + K - 1))
    rows = np.arange(K * m)
    k_idx, j_idx = np.divmod(rows, m)
    A[rows, j_idx] = 1.0
    later = k_idx >= 1
    A[rows[later], m + k_idx[later] - 1] = 1.0
    wf = w.reshape(-1)
    scale = np.max(np.abs(Fv))  # solve on O(1) numbers
    sol = np.linalg.lstsq(A * wf[:, None], wf * Fv.reshape(-1) / scale, rcond=None)[0] * scale
    return sol[:m], np.concatenate([[0.0], sol[m:]])


def check_epochs(epochs) -> None:
    """`InputError` unless the checkpoints' epochs are finite and strictly increasing: the fit's
    time map τ(e) and its monotonicity are defined along time, not along file order."""
    e = np.asarray(epochs, dtype=float)
    require(
        e.ndim == 1 and bool(np.all(np.isfinite(e))),
        "the checkpoints' epochs must be finite numbers; re-save them",
    )
    bad = np.flatnonzero(np.diff(e) <= 0)
    if bad.size:
        k = int(bad[0]) + 1
        raise InputError(
            f"the checkpoints' epochs must increase strictly for a comparison of dynamics, but "
            f"checkpoint {k} (epoch {e[k]:g}) follows epoch {e[k - 1]:g}; save the checkpoints in "
            "epoch order, without repeats"
        )


def fit_theory(
    epochs,
    omega,
    num_classes: int,
    per_class: float,
    *,
    flow: str = "renormalised",
    nc1=None,
    weighting: str = "relative",
) -> TheoryFit:
    """Fit a_j and τ(e) to measured ω_j(e) (docs/theory.md §8).

    **Arguments:**

    - `epochs`: [K] checkpoint epochs (increasing).
    - `omega`: [K, m] measured SNR singular values (> 0), any consistent column order.
    - `num_classes`, `per_class`: C and N of the training set (F depends on them).
    - `flow`: the closed form to fit, `"renormalised"` (F3) or `"whitened"` (F3′).
    - `nc1`: optional [K] measured NC1, for the late-phase exponent against τ.
    - `weighting`: `"relative"` (default; residuals in units of δω/ω) or `"uniform"` (plain
      least squares on F).

    **Returns:** a `TheoryFit`.
    """
    epochs = np.asarray(epochs, dtype=float)
    omega = np.asarray(omega, dtype=float)
    require(omega.ndim == 2, f"omega must be [K checkpoints, m values], got shape {omega.shape}")
    K, m = omega.shape
    require(K >= 2, f"comparing dynamics needs at least 2 checkpoints, got {K}")
    require(m >= 1, "omega has no singular values to compare")
    require(epochs.shape == (K,), f"epochs must be [K] = [{K}], got {epochs.shape}")
    check_epochs(epochs)
    require(
        bool(np.all(np.isfinite(omega)) and np.all(omega > 0)),
        "measured omega must be finite and > 0 (collapsed or degenerate features give 0 or inf); "
        "drop those checkpoints",
    )
    require(
        weighting in ("relative", "uniform"),
        f"unknown weighting {weighting!r}; use relative or uniform",
    )
    F = potential(num_classes, per_class, flow=flow)
    Fv = np.asarray(F(omega))
    row = Fv.mean(axis=1)  # mean over j at each checkpoint
    if weighting == "uniform":
        tau = row - row[0]
        a = Fv.mean(axis=0) - tau.mean()
    else:
        a, tau = _weighted_additive_fit(Fv, 1.0 / np.asarray(F.derivative_log(np.log(omega))))
    fitted = a[None, :] + tau[:, None]
    omega_hat = np.asarray(F.inverse(fitted))
    rel = np.abs(omega_hat - omega) / omega
    ss_res = float(np.sum((Fv - fitted) ** 2))
    ss_tot = float(np.sum((Fv - Fv.mean()) ** 2))
    explained = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    centred = Fv - row[:, None]
    drift = centred - centred[0]
    scale = float(np.max(np.abs(tau)))
    drift_rel = float(np.max(np.abs(drift)) / scale) if scale > 0 else float("inf")
    exponent = float("nan")
    if nc1 is not None:
        nc1 = np.asarray(nc1, dtype=float)
        late = np.flatnonzero(tau > 0)
        late = late[len(late) // 2 :]
        if late.size >= 3 and np.all(nc1[late] > 0):
            exponent = float(np.polyfit(np.log(tau[late]), np.log(nc1[late]), 1)[0])
    return TheoryFit(
        epochs=epochs,
        omega_measured=omega,
        omega_predicted=omega_hat,
        a=a,
        time_map=tau,
        relative_error=np.sqrt(np.mean(rel**2, axis=0)),
        relative_error_by_checkpoint=rel,
        variance_explained=explained,
        drift=drift,
        drift_relative=drift_rel,
        time_map_monotone=bool(np.all(np.diff(tau) >= 0)),
        nc1_exponent=exponent,
        num_classes=int(num_classes),
        per_class=float(per_class),
        flow=flow,
        weighting=weighting,
    )


#: Per-checkpoint series of the fit, added to each checkpoint's record (name in the record,
#: attribute of `TheoryFit`).
FIT_SERIES = (
    ("omega_predicted", "omega_predicted"),
    ("time_map", "time_map"),
    ("drift", "drift"),
    ("relative_error", "relative_error_by_checkpoint"),
)


def measured_series(ff, records: list[dict]) -> dict:
    """The `train/…` series of a compare run's results.npz: every record key of `analyze` over
    the checkpoints, L_⊥LS/L, and the file's accuracies and test loss when it has them."""
    import numpy as np

    results = {"train/times": np.asarray([r["epoch"] for r in records], float)}
    for key in records[0]:
        if key == "epoch":
            continue
        vals = [np.nan if r[key] is None else r[key] for r in records]
        results[f"train/{key}"] = np.asarray(vals, dtype=float)
    if records[0]["loss"] is not None:
        results["train/perp_rel"] = results["train/loss_perp"] / results["train/loss"]
    for key in ("train_accuracy", "test_accuracy", "test_loss"):
        if getattr(ff, key, None) is not None:
            results[f"train/{key}"] = np.asarray(getattr(ff, key), dtype=float)
    return results


def compare_features(ff, *, flow="renormalised", weight_decay=None, rtol=1e-10):
    """(fit, results, summary) for a features file: analysis per checkpoint and the §8 fit.

    `summary` is the JSON of `compare --json`: the fit's own numbers at the top level (`a`,
    `relative_error` per j, `variance_explained`, `drift_relative`, `time_map_monotone`,
    `nc1_exponent`, …) and `checkpoints`, one record per checkpoint in the shape of
    `analyze --json` (its keys, `perp_rel`, the file's accuracies) plus the fit's series there
    (`omega_predicted`, `time_map`, `drift`, `relative_error`)."""
    import numpy as np

    from .._errors import require_real
    from ._report import checkpoint_records
    from .analysis import analyze

    if weight_decay is not None:
        require_real("--weight-decay", weight_decay, 0)
    # Before the analysis: the fit needs checkpoints in time order, and a file whose epochs run
    # backwards or repeat would otherwise be fitted and reported (as "monotone: true").
    check_epochs(ff.epochs)
    records = analyze(ff, weight_decay=weight_decay, rtol=rtol)
    epochs = np.asarray([r["epoch"] for r in records], float)
    omega = np.asarray([r["snr"] for r in records], float)
    # A streamed source or statistics file has no labels in memory; it knows its counts.
    counts = (
        ff.class_counts()
        if hasattr(ff, "class_counts")
        else np.bincount(ff.labels, minlength=ff.num_classes)
    )
    per_class = float(counts.mean())
    nc1 = np.asarray([r["nc1"] for r in records], float)
    fit = fit_theory(epochs, omega, ff.num_classes, per_class, flow=flow, nc1=nc1)
    results = measured_series(ff, records)
    results.update(
        {
            "fit/times": epochs,
            "fit/omega_measured": fit.omega_measured,
            "fit/omega_predicted": fit.omega_predicted,
            "fit/time_map": fit.time_map,
            "fit/drift": fit.drift,
            "fit/relative_error_by_checkpoint": fit.relative_error_by_checkpoint,
            "fit/a": fit.a,
            "fit/relative_error": fit.relative_error,
        }
    )
    full = fit.to_dict()
    per_checkpoint = {"epochs", "omega_measured"} | {attr for _, attr in FIT_SERIES}
    summary = {k: v for k, v in full.items() if k not in per_checkpoint}
    summary["balanced"] = bool(np.all(counts == counts[0]))
    rows = checkpoint_records(ff, records)
    for k, row in enumerate(rows):  # ω measured is the record's `snr`
        for name, attr in FIT_SERIES:
            row[name] = full[attr][k]
    summary["checkpoints"] = rows
    return fit, results, summary
