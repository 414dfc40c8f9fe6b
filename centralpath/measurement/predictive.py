"""Does the theory predict a network's collapse? Models simulated forward from a measured state.

`compare --model …` (docs/theory.md §8): from the checkpoint e0 a model is started from the
network's own state and run forward; a clock maps epochs to the model's time; the predicted
ω̂_j(e) is scored against the measured ω_j(e) at every later checkpoint, and against the
no-change baseline ω(e) = ω(e0).

**Models** (`MODELS`), all from the state at e0 (`_measured`):

- `closed-form`: F3's ω_j(t) = F⁻¹(F(ω_j(e0)) + t) with N = the mean class size (λ = 0);
- `central-path`: the ridge central-path flow F2 at λ = the file's weight decay, on the measured
  class statistics (dead directions dropped, not whitened);
- `ufm`: the UFM F1 from the measured W, b and statistics, λ_W = λ_H = λ_b = the weight decay.

**Clocks** (`CLOCKS`; docs/guides/predict.md):

- `monotone`: for each checkpoint after e0, the model time t_k* that minimises
  Σ_j (log ω̂_j(t) − log ω_j(e_k))² (found on a log-spaced grid of the model's own trajectory,
  refined on a cubic spline of log ω̂ in log t, then polished by Gauss–Newton steps on the exact
  model); then the isotonic (non-decreasing) regression of t_k* over the checkpoints by
  pool-adjacent-violators, each t_k* weighted by Σ_j (∂ log ω̂_j/∂t)² at t_k* — the curvature of
  the same error, so that pooling minimises its quadratic approximation. t(e0) = 0.
- κ clocks (`KAPPA_CLOCKS`): t(e) = κ · Σ_{e′=e0+1}^{e} step(e′), one scalar κ, given or fitted
  to minimise the same error summed over checkpoints (grid, spline, Gauss–Newton); the step is
  η_eff = lr · steps_per_epoch / (1 − momentum) (`lr`), η_eff · the epoch's mean training loss
  (`lr-loss`), η_eff · its mean squared feature gradient (`lr-grad`), lr/(1 − momentum) · loss
  (`lr-loss-epoch`).
- `speed` and `displacement`, no κ: the model time at which the model's centred class means
  have travelled the network's path length (per-epoch record `class_mean_step`) or are as far
  from e0 as the network's (`speed_matched_times`).

**Scores** over the checkpoints after e0 and every j (a measured ω_j beyond float64 resolution,
+inf, is left out: its value is not known; a predicted +inf where the measurement is finite counts
as an infinite error): `median_relative_error` = median |ω̂_j − ω_j|/ω_j;
`baseline_relative_error`, the same for ω̂ = ω(e0); `skill` = 1 − median/baseline; the level
error (of the geometric mean over j) and the shape error (of ω_j / that mean).

**Verdict** (thresholds below, with the measurements that set them in docs/guides/predict.md):
`not-applicable` when the network was trained with cross-entropy (`loss = "ce"`), or, without
that key, when L_⊥LS/L ≥ 0.5 at every checkpoint after e0 (every checkpoint when there is none),
or when there is no start (`choose_from_epoch`), or fewer than 4 scored checkpoints after it,
or when ω does not grow (its trend over the scored window, `trend_growth`, below ×1.1), or when
the model cannot start from the state; otherwise `consistent` when median_relative_error ≤ 5%,
skill ≥ 0.85 and the NC1 factor (median of max(r, 1/r), r = NC1̂/NC1) ≤ 1.5, else
`inconsistent`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import InputError, require, require_real
from .._linalg import DEFAULT_RTOL

# Without a `loss` key: L_⊥LS/L at or above this at every checkpoint means the classifier is
# not least-squares (the threshold of analyze's warning, docs/theory.md §7½).
from ._report import FAR_FROM_LEAST_SQUARES

MODELS = ("closed-form", "central-path", "ufm")
#: The model of `MODELS` whose time each flow of `simulate --from` (`MEASURED_FLOWS`) runs on, so
#: that a κ fitted by compare carries to it: the central path and the UFM are the same flows;
#: the renormalised flow from the whitened state moves ω_j exactly as F3's closed form does
#: (docs/theory.md §6). The whitened flow F3′ is no model of compare's: it has no κ.
FLOW_MODELS = {"central-path": "central-path", "ufm": "ufm", "renormalised": "closed-form"}
#: Clocks with one scale κ: t(e) = κ·S(e), S the sum over epochs e0 < e′ ≤ e of a step
#: (`CLOCK_STEPS`); fitted, given (`--kappa`) or carried from another run (`--kappa-from`).
KAPPA_CLOCKS = ("lr", "lr-loss", "lr-grad", "lr-loss-epoch")
CLOCKS = ("monotone", *KAPPA_CLOCKS, "speed", "displacement")
#: What each κ clock sums per epoch (η_eff = lr·steps_per_epoch/(1 − momentum), the epoch's
#: total step of gradient descent; L the epoch's mean minibatch loss; |g|² the epoch's mean
#: squared loss gradient per sample with respect to the features) and the record it needs.
CLOCK_STEPS = {
    "lr": ("eta_eff", ("learning_rate", "momentum", "steps_per_epoch")),
    "lr-loss": ("eta_eff * L", ("learning_rate", "momentum", "steps_per_epoch", "epoch_loss")),
    "lr-grad": (
        "eta_eff * |g|^2",
        ("learning_rate", "momentum", "steps_per_epoch", "feature_grad_sq"),
    ),
    "lr-loss-epoch": ("lr / (1 - momentum) * L", ("learning_rate", "momentum", "epoch_loss")),
}

#: The start e0 (`--from-epoch auto`): the first checkpoint at which the trend of L_⊥LS/L —
#: its closest non-increasing sequence in log (`perp_trend`) — is at most this …
AUTO_PERP_REL = 0.2
#: … with the training accuracy (where recorded) within this of its largest value from there
#: on: on its plateau (an MNIST-1D MLP dipped below 0.1 by chance at 42% training accuracy).
AUTO_ACCURACY_PLATEAU = 0.01
#: A verdict needs at least this many scored checkpoints after e0.
MIN_SCORED_CHECKPOINTS = 4
#: `consistent` needs all three: the median relative error of ω_j at most this …
CONSISTENT_ERROR = 0.05
#: … at least this much of the no-change baseline's error removed (0.7 let a control with the
#: later half of a run reversed through at 0.706) …
CONSISTENT_SKILL = 0.85
#: … and the predicted NC1 within this factor of the measured (median over the scored
#: checkpoints of max(r, 1/r), r = NC1̂/NC1).
CONSISTENT_NC1_FACTOR = 1.5
#: No collapse to predict when ω's trend over the scored window (least-squares line of the
#: mean log ω_j against the epoch, from e0 to the last checkpoint) grows it by less than this.
MIN_GROWTH = 1.1

THRESHOLDS = {
    "auto_perp_rel": AUTO_PERP_REL,
    "auto_accuracy_plateau": AUTO_ACCURACY_PLATEAU,
    "far_from_least_squares": FAR_FROM_LEAST_SQUARES,
    "min_scored_checkpoints": MIN_SCORED_CHECKPOINTS,
    "consistent_error": CONSISTENT_ERROR,
    "consistent_skill": CONSISTENT_SKILL,
    "consistent_nc1_factor": CONSISTENT_NC1_FACTOR,
    "min_growth": MIN_GROWTH,
}

#: Save times per integration: every solve uses this many, so one program is compiled per flow.
_SAVES = 64
#: The model's trajectory is searched on this many log-spaced times per decade.
_PER_DECADE = 24
#: Decades of model time per integration chunk, and the most decades searched.
_CHUNK_DECADES = 64 / 24
_MAX_DECADES = 24.0
#: The search stops once the model's level (mean log ω) passes the largest measured one by this.
_LEVEL_MARGIN = math.log(1.1)
_GAUSS_NEWTON_STEPS = 3
#: Solver steps per chunk of save times. A chunk that needs more is stiff because the model's
#: within-class spread has collapsed past what float64 resolves (the ω_j there are +inf anyway):
#: a UFM took minutes to exhaust 100,000 steps there, for nothing.
_MAX_STEPS = 20_000


# --------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class Measurement:
    """What a features file says about its network, per checkpoint (arrays are numpy).

    `omega` [K, m] (+inf beyond resolution), `nc1` [K], `perp_rel` [K] (None without W), and the
    training record (`loss`, `learning_rate` [E], `momentum`, `steps_per_epoch`; None if absent).
    """

    epochs: np.ndarray
    omega: np.ndarray
    nc1: np.ndarray
    perp_rel: np.ndarray | None
    num_classes: int
    per_class: float
    weight_decay: float
    loss: str | None = None
    learning_rate: np.ndarray | None = None
    momentum: float | None = None
    steps_per_epoch: int | None = None
    train_accuracy: np.ndarray | None = None
    epoch_loss: np.ndarray | None = None
    feature_grad_sq: np.ndarray | None = None
    class_mean_step: np.ndarray | None = None

    @classmethod
    def from_records(cls, ff, records: list[dict], weight_decay: float | None = None):
        """From `analyze`'s records of the features file (or streamed source) `ff`."""
        counts = (
            np.asarray(ff.class_counts(), float)
            if hasattr(ff, "class_counts")
            else np.bincount(ff.labels, minlength=ff.num_classes).astype(float)
        )
        perp = None
        if records and records[0].get("loss") is not None:
            perp = np.asarray(
                [r["loss_perp"] / r["loss"] if r["loss"] else 0.0 for r in records], float
            )
        omega = np.asarray([[np.inf if w is None else w for w in r["snr"]] for r in records], float)

        def series(key):
            v = getattr(ff, key, None)
            return None if v is None else np.asarray(v, float)

        return cls(
            epochs=np.asarray([r["epoch"] for r in records], float),
            omega=omega,
            nc1=np.asarray([np.nan if r["nc1"] is None else r["nc1"] for r in records], float),
            perp_rel=perp,
            num_classes=int(ff.num_classes),
            per_class=float(counts.mean()),
            weight_decay=float(ff.weight_decay if weight_decay is None else weight_decay),
            loss=getattr(ff, "loss", None),
            learning_rate=series("learning_rate"),
            momentum=getattr(ff, "momentum", None),
            steps_per_epoch=getattr(ff, "steps_per_epoch", None),
            train_accuracy=series("train_accuracy"),
            epoch_loss=series("epoch_loss"),
            feature_grad_sq=series("feature_grad_sq"),
            class_mean_step=series("class_mean_step"),
        )


def perp_trend(perp_rel: np.ndarray) -> np.ndarray:
    """The trend of L_⊥LS/L over the checkpoints: the non-increasing sequence closest to it in
    log (least squares, every checkpoint weighted alike; pool-adjacent-violators).

    At a constant learning rate SGD moves the classifier around the least-squares one from
    checkpoint to checkpoint: on a digits MLP L_⊥LS/L wanders between 0.1 and 0.25 for tens of
    epochs while it falls on average, so a threshold on the raw values ("stays below 0.2") waits
    for the last excursion, which lands at a different epoch for every seed (28 and 19 on two
    seeds of one network). The trend averages the excursions out of the decision. In log, a
    ratio's excursions count alike above and below; a zero (a classifier exactly least-squares)
    counts as the smallest positive float."""
    logs = np.log(np.maximum(np.asarray(perp_rel, float), np.finfo(float).tiny))
    return np.exp(-isotonic(-logs, np.ones(len(logs))))


def choose_from_epoch(
    measurement: Measurement,
    from_epoch="auto",
    *,
    flag: str = "--from-epoch",
    alternative: str | None = "fit the free time map with --fit",
) -> tuple[int | None, str]:
    """(index of e0 or None, how it was chosen). `auto`: the first checkpoint before the last at
    which the trend of L_⊥LS/L (`perp_trend`) is at most `AUTO_PERP_REL`, with the training
    accuracy (where the file records it) within `AUTO_ACCURACY_PLATEAU` of its largest value at
    it and every later checkpoint. Both conditions hold from some checkpoint on, so thinning the
    checkpoints moves the start by at most one stored checkpoint (tested). None when there is
    none (the verdict is then not-applicable). `flag` names the option that gave `from_epoch` in
    the messages (compare's `--from-epoch`, `simulate --from`'s `--epoch`); `alternative`:
    another way out, if any."""
    epochs = measurement.epochs
    if from_epoch == "auto":
        perp = measurement.perp_rel
        require(
            perp is not None,
            f"{flag} auto needs L_perp/L (the start is where its trend falls to "
            f"{AUTO_PERP_REL:g}), which needs the classifier W, b in the features file; save them"
            + (f", give {flag} N, or {alternative}" if alternative else f", or give {flag} N"),
        )
        trend = perp_trend(perp)
        settled = trend <= AUTO_PERP_REL  # non-increasing: once true, true at every later one
        acc = measurement.train_accuracy
        plateau = (
            np.ones(len(epochs), bool)
            if acc is None
            else np.flip(
                np.logical_and.accumulate(np.flip(acc >= np.max(acc) - AUTO_ACCURACY_PLATEAU))
            )
        )
        ok = np.flatnonzero((settled & plateau)[:-1])
        accuracy_rule = (
            ""
            if acc is None
            else f" and training accuracy within {AUTO_ACCURACY_PLATEAU:g} of its largest "
            f"({np.max(acc):.4g}) from there on"
        )
        if not ok.size:
            return None, (
                f"auto: no checkpoint before the last at which the trend of L_perp/L is <= "
                f"{AUTO_PERP_REL:g}{accuracy_rule} (the trend at the last: {trend[-1]:.2g}): "
                "the network does not settle near the central path; train longer (more "
                f"checkpoints after it settles), or pass {flag} N"
            )
        k = int(ok[0])
        return k, (
            f"auto: epoch {epochs[k]:g}, the first checkpoint at which the trend of L_perp/L "
            f"(its non-increasing fit) is <= {AUTO_PERP_REL:g} ({trend[k]:.3g} there, "
            f"{perp[k]:.3g} measured){accuracy_rule}"
        )
    require_real(flag, from_epoch)
    hits = np.flatnonzero(np.isclose(epochs, float(from_epoch), rtol=0, atol=1e-9))
    require(
        hits.size > 0,
        f"{flag} {float(from_epoch):g} is not a checkpoint epoch of the file (its epochs "
        f"run {epochs[0]:g}..{epochs[-1]:g}); pass one of them, or auto",
    )
    k = int(hits[0])
    require(
        k < len(epochs) - 1,
        f"{flag} {epochs[k]:g} is the last checkpoint: nothing after it to predict; pass "
        "an earlier epoch, or auto",
    )
    return k, f"given: epoch {epochs[k]:g}"


def clock_units(
    measurement: Measurement, k0: int, clock: str = "lr", *, instead: str = "use --clock monotone"
) -> np.ndarray:
    """S(e) = Σ_{e′=e0+1}^{e} step(e′) at every checkpoint (0 at e0 and before) for a κ clock
    (`CLOCK_STEPS`): t = κ·S. One-line refusal naming what is missing, and `instead`: what the
    command offers without the record."""
    m = measurement
    what, needs = CLOCK_STEPS[clock]
    missing = [k for k in needs if getattr(m, k) is None]
    require(
        not missing,
        f"--clock {clock} (t = kappa * sum of {what}) needs the training record's "
        f"{', '.join(missing)}, which the features file lacks; train with centralpath train or "
        f"the PyTorch FeatureRecorder (they record them), or {instead}",
    )
    epochs = m.epochs
    require(
        bool(np.all(epochs == np.round(epochs))) and epochs[0] >= 0,
        f"--clock {clock} sums over whole epochs, but the checkpoints' epochs are not whole "
        f"numbers >= 0; {instead}",
    )
    per_epoch = [k for k in needs if k in ("learning_rate", "epoch_loss", "feature_grad_sq")]
    E = min(len(getattr(m, k)) for k in per_epoch)
    require(
        epochs[-1] <= E,
        f"--clock {clock} needs the record of every epoch up to {epochs[-1]:g}, but the file "
        f"records {E}; re-save {', '.join(per_epoch)}, or {instead}",
    )
    step = np.asarray(m.learning_rate[:E], float) / (1.0 - float(m.momentum))
    if "steps_per_epoch" in needs:
        step = step * float(m.steps_per_epoch)
    if "epoch_loss" in needs:
        step = step * m.epoch_loss[:E]
    if "feature_grad_sq" in needs:
        step = step * m.feature_grad_sq[:E]
    cumulative = np.concatenate([[0.0], np.cumsum(step)])  # cumulative[e] = Σ_{e′ ≤ e}
    S = cumulative[epochs.astype(int)] - cumulative[int(epochs[k0])]
    return np.where(np.arange(len(epochs)) > k0, S, 0.0)


def lr_clock_units(measurement: Measurement, k0: int) -> np.ndarray:
    """The lr clock's S(e) = Σ lr·steps_per_epoch/(1 − momentum) (`clock_units`)."""
    return clock_units(measurement, k0, "lr")


def measured_distance(measurement: Measurement, k0: int) -> np.ndarray:
    """D(e) = Σ_{e′=e0+1}^{e} √class_mean_step(e′) at every checkpoint (0 at e0 and before):
    the path length of the centred class means, epoch by epoch, that the speed clock matches."""
    m = measurement
    require(
        m.class_mean_step is not None,
        "--clock speed matches the distance the class means travel each epoch, which needs the "
        "training record's class_mean_step; train with centralpath train or the PyTorch "
        "FeatureRecorder (capturing epoch 0), or use another clock",
    )
    epochs = m.epochs
    require(
        bool(np.all(epochs == np.round(epochs))) and epochs[0] >= 0,
        "--clock speed sums over whole epochs, but the checkpoints' epochs are not whole "
        "numbers >= 0; use --clock monotone",
    )
    E = len(m.class_mean_step)
    require(
        epochs[-1] <= E,
        f"--clock speed needs class_mean_step of every epoch up to {epochs[-1]:g}, but the "
        f"file records {E}; re-save it, or use --clock monotone",
    )
    cumulative = np.concatenate([[0.0], np.cumsum(np.sqrt(m.class_mean_step))])
    D = cumulative[epochs.astype(int)] - cumulative[int(epochs[k0])]
    return np.where(np.arange(len(epochs)) > k0, D, 0.0)


# --------------------------------------------------------------------------- models


class _ClosedForm:
    """F3 in closed form from ω(e0): exact at any time, no integration."""

    name = "closed-form"

    def __init__(self, omega0, num_classes: int, per_class: float):
        from .._eigen import eigen_dynamics

        self.omega0 = np.asarray(omega0, float)
        self.C, self.N = num_classes, per_class
        self._predict = eigen_dynamics(self.omega0, num_classes, per_class)
        self.note = ""

    def time_scale(self) -> float:
        # d log ω_j/dt = 1/(N (C + ω_j²)²): the fastest ω_j changes by e in this time.
        return float(np.min(self.N * (self.C + self.omega0**2) ** 2))

    def evaluate(self, times, full: bool = False, resume: bool = False) -> dict:
        import jax.numpy as jnp

        from .._eigen import nc1_from_snr

        times = np.asarray(times, float)
        # Padded to a multiple of `_SAVES` times: F⁻¹ compiles once per shape, not per call.
        padded = np.concatenate([times, np.full(-len(times) % _SAVES, times[-1])])
        omega = np.asarray(self._predict(jnp.asarray(padded)), float)[: len(times)]
        out = {"omega": np.sort(omega.reshape(len(times), -1), axis=1)[:, ::-1]}
        if full:
            out["nc1"] = np.asarray(nc1_from_snr(omega), float)
            out["perp_rel"] = np.zeros(len(times))  # on the central path by construction
        return out


class _FlowModel:
    """A moment-reduced flow from a measured state, solved with Diffrax (`integrate`)."""

    def __init__(
        self,
        name: str,
        flow,
        y0,
        rtol: float = 1e-10,
        atol: float = 1e-12,
        max_steps: int = _MAX_STEPS,
    ):
        self.name, self.flow, self.y0 = name, flow, y0
        self.rtol, self.atol, self.max_steps = rtol, atol, max_steps
        self.note = ""
        self._last = (0.0, y0)  # where the latest solve ended: `_trace_path` goes on from there

    def time_scale(self) -> float:
        # The within-class spread along the classifier decays at rate ~‖W‖²/n (§6 F4): its
        # inverse is the time in which anything can happen.
        W, _ = self.flow.classifier(self.y0)
        n = float(np.sum(np.asarray(self.flow.class_stats(self.y0).counts)))
        top = float(np.linalg.norm(np.asarray(W, float), 2)) ** 2
        return n / top if top > 0 else 1.0

    def evaluate(
        self, times, full: bool = False, resume: bool = False, means: bool = False
    ) -> dict:
        """ω (and NC1, L_⊥LS/L; with `means` the centred class means [T, C, p]) at `times` ≥ 0
        (any order). The solve runs over the sorted
        distinct times in chunks of `_SAVES` save times, each from the state where the last
        ended (one compiled program); `resume` starts from where the previous call ended (its
        times must not be earlier). Times past a failed solve are NaN, and `note` says why."""
        from .._errors import NumericalError
        from .._integrate import integrate

        times = np.asarray(times, float)
        uniq, inverse = np.unique(times, return_inverse=True)
        T, m = len(uniq), self.flow.class_stats(self.y0).num_classes - 1
        out = {"omega": np.full((T, m), np.nan)}
        if full:
            out["nc1"], out["perp_rel"] = np.full(T, np.nan), np.full(T, np.nan)
        if means:
            p = self.flow.class_stats(self.y0).class_means.shape[0]
            out["means"] = np.full((T, m + 1, p), np.nan)
        t_now, y = self._last if resume else (0.0, self.y0)
        require(uniq[0] >= t_now, "internal: a resumed solve cannot go back in time")
        start = 0
        while start < T:
            chunk = uniq[start : start + _SAVES]
            rel = chunk - t_now
            # Only the current state itself: a solve over a negligible time saves it at t = 0
            # exactly, with the one compiled program of every other call.
            span = rel[-1] if rel[-1] > 0 else 1e-12 * self.time_scale()
            ts = _pad(rel if rel[-1] > 0 else np.array([0.0, span]), _SAVES)
            try:
                tr = integrate(
                    self.flow,
                    y,
                    float(ts[-1]),
                    ts=ts,
                    rtol=self.rtol,
                    atol=self.atol,
                    max_steps=self.max_steps,
                    progress=False,
                )
            except NumericalError as e:  # ODEFailure says where and why
                where = getattr(e, "t_reached", None)
                at = "" if where is None else f" at t = {t_now + where:.3g}"
                self.note = f"the {self.name} model's solve stopped{at}: {getattr(e, 'reason', e)}"
                break
            values = _snapshot_values(tr, full, means)
            keep = np.searchsorted(ts, rel)
            t1 = tr.final_state if rel[-1] > 0 else None
            for key in out:
                out[key][start : start + len(chunk)] = values[key][keep]
            if t1 is not None:
                y, t_now = t1, float(chunk[-1])
            start += len(chunk)
        self._last = (t_now, y)
        return {key: value[inverse] for key, value in out.items()}


def _pad(rel: np.ndarray, size: int) -> np.ndarray:
    """`rel` (sorted, distinct, ≥ 0, last > 0) padded to `size` strictly increasing times in
    [0, rel[-1]] by halving the widest gaps: every solve then has the same number of save
    times, and the requested ones are among them exactly."""
    pts = [float(x) for x in rel]
    while len(pts) < size:
        anchors = pts if pts[0] == 0 else [0.0, *pts]
        i = int(np.argmax(np.diff(anchors)))
        pts = sorted({*pts, 0.5 * (anchors[i] + anchors[i + 1])})
    return np.asarray(pts, float)


def _snapshot_values(tr, full: bool, means: bool = False) -> dict:
    out = {"omega": tr.snr()}
    if means:
        stats = tr.snapshots.stats
        M = np.asarray(stats.class_means, float)  # [T, p, C]
        counts = np.asarray(stats.counts, float)  # [T, C]
        mu_G = np.einsum("tpc,tc->tp", M, counts) / counts.sum(1, keepdims=True)
        out["means"] = np.transpose(M - mu_G[:, :, None], (0, 2, 1))
    if full:
        import jax
        import jax.numpy as jnp

        # λ as an array: one compiled program for every ridge.
        lam = jnp.asarray(tr.decomposition_lambda, float)
        nc1, perp = jax.device_get(_nc1_perp(tr.snapshots, lam))
        out["nc1"], out["perp_rel"] = np.asarray(nc1), np.asarray(perp)
    return out


def _nc1_perp_impl(snapshots, lam):
    import jax

    from .._loss import loss_decomposition
    from .._metrics import nc1

    def one(s):
        d = loss_decomposition(s.stats, s.W, s.b, lam)
        return nc1(s.stats), d.perp / d.loss

    return jax.lax.map(one, snapshots)


def _nc1_perp(snapshots, lam):
    import equinox as eqx

    global _nc1_perp_jit
    if _nc1_perp_jit is None:
        _nc1_perp_jit = eqx.filter_jit(_nc1_perp_impl)
    return _nc1_perp_jit(snapshots, lam)


_nc1_perp_jit = None


def build_model(name: str, state, measurement: Measurement, omega0=None, *, lam=None):
    """The model `name` (`MODELS`) started from the `MeasuredState` at e0."""
    from ._initial_state import initial_state

    require(name in MODELS, f"unknown model {name!r}; choose one of {', '.join(MODELS)}, or all")
    if name == "closed-form":
        om = np.asarray(omega0 if omega0 is not None else _stats_omega(state.stats), float)
        require(
            bool(np.all(np.isfinite(om)) and np.all(om > 0)),
            "the closed form starts from omega(e0), which is not finite and > 0 there (collapsed "
            "beyond float64 resolution, or coinciding class means); start at an earlier epoch",
        )
        return _ClosedForm(om, measurement.num_classes, measurement.per_class)
    flow, y0 = initial_state(state, name, lam=lam)
    return _FlowModel(name, flow, y0)


def _stats_omega(stats) -> np.ndarray:
    from .._metrics import snr_singular_values

    return np.asarray(snr_singular_values(stats), float)


# --------------------------------------------------------------------------- the model's path


@dataclass
class _Path:
    """The model's log ω̂ on a grid of times (t = 0 first), and a spline of it in u = log t."""

    times: np.ndarray  # [G], times[0] = 0
    log_omega: np.ndarray  # [G, m], finite
    spline: Any = None

    def __post_init__(self):
        from scipy.interpolate import CubicSpline

        self.u = np.log(self.times[1:])
        self.spline = CubicSpline(self.u, self.log_omega[1:], axis=0)
        self.slope = self.spline.derivative()

    def at(self, u):
        """log ω̂ at u = log t (clamped to the grid: the start below it, the end above)."""
        u = np.clip(np.asarray(u, float), self.u[0], self.u[-1])
        return self.spline(u)

    def grad(self, u):
        """∂ log ω̂/∂u, zero outside the grid (where `at` is clamped)."""
        u = np.asarray(u, float)
        inside = (u >= self.u[0]) & (u <= self.u[-1])
        g = self.slope(np.clip(u, self.u[0], self.u[-1]))
        return np.where(inside[..., None], g, 0.0)


def _trace_path(model, target_level: float) -> _Path:
    """Run the model forward on log-spaced times (`_PER_DECADE` a decade, from three decades
    below its time scale) until its level (mean_j log ω̂_j) passes `target_level` + margin, ω̂
    leaves float64 resolution or stops growing, or `_MAX_DECADES` are searched. Each chunk of
    `_SAVES` times is one solve, resumed from where the last ended."""
    t0 = model.time_scale() * 1e-3
    times: list[float] = []
    logs: list[np.ndarray] = []
    lo, decades = t0, 0.0
    while True:
        hi = lo * 10**_CHUNK_DECADES
        if not times:  # t = 0 and the first chunk: one solve
            grid = np.concatenate([[0.0], np.geomspace(lo, hi, _SAVES - 1)])
        else:
            grid = np.geomspace(lo, hi, _SAVES + 1)[1:]
        omega = model.evaluate(grid, resume=bool(times))["omega"]
        finite = np.all(np.isfinite(omega) & (omega > 0), axis=1)
        n_ok = len(grid) if np.all(finite) else int(np.argmin(finite))
        times += list(grid[:n_ok])
        logs += list(np.log(omega[:n_ok]))
        if n_ok < len(grid):
            if len(times) > 1:  # where exactly resolution ends: a fine grid up to there
                fine = np.geomspace(times[-1], grid[n_ok], _SAVES + 2)[1:-1]
                more = model.evaluate(fine)["omega"]
                ok = np.all(np.isfinite(more) & (more > 0), axis=1)
                n_fine = len(fine) if np.all(ok) else int(np.argmin(ok))
                times += list(fine[:n_fine])
                logs += list(np.log(more[:n_fine]))
            model.note = model.note or (
                f"the {model.name} model's omega leave float64 resolution by t = {times[-1]:.3g}"
            )
            break
        level = float(np.mean(logs[-1]))
        if level >= target_level + _LEVEL_MARGIN:
            break
        if len(logs) > _SAVES and abs(level - float(np.mean(logs[-_SAVES - 1]))) < 1e-9:
            model.note = f"the {model.name} model's omega stop growing by t = {hi:.3g}"
            break
        lo, decades = hi, decades + _CHUNK_DECADES
        if decades >= _MAX_DECADES:
            model.note = (
                f"the {model.name} model does not reach the measured omega within "
                f"{_MAX_DECADES:g} decades of its time (t = {hi:.3g})"
            )
            break
    require(
        len(times) >= 4,
        f"the {model.name} model leaves float64 resolution at once (by t = {t0:.3g}); start "
        "it at an earlier checkpoint",
    )
    return _Path(np.asarray(times), np.asarray(logs))


# --------------------------------------------------------------------------- clocks


def _residual_weights(target: np.ndarray) -> np.ndarray:
    """1 where the measured ω_j is known (finite, > 0), else 0."""
    return (np.isfinite(target) & (target > -np.inf)).astype(float)


def _best_times(path: _Path, model, target: np.ndarray) -> np.ndarray:
    """Per checkpoint (rows of `target` = measured log ω), the model time minimising
    Σ_j (log ω̂_j(t) − target_j)²: grid, then the spline (bounded Brent), then Gauss–Newton
    steps on the exact model."""
    from scipy.optimize import minimize_scalar

    w = _residual_weights(target)
    tgt = np.where(w > 0, target, 0.0)
    err = np.einsum("gkj->gk", w[None] * (path.log_omega[:, None, :] - tgt[None]) ** 2)
    best = np.argmin(err, axis=0)
    u = np.full(len(target), -np.inf)  # −inf: t = 0
    G = len(path.times)
    for k, i in enumerate(best):
        if i == 0:
            continue
        a, b = path.u[max(i - 2, 0)], path.u[min(i, G - 2)]
        if a == b:
            u[k] = a
            continue
        res = minimize_scalar(
            lambda x, k=k: float(np.sum(w[k] * (path.at(x) - tgt[k]) ** 2)),
            bounds=(a, b),
            method="bounded",
            options={"xatol": 1e-12},
        )
        u[k] = res.x
    return _gauss_newton_times(path, model, u, tgt, w)


def _gauss_newton_times(path, model, u, tgt, w) -> np.ndarray:
    moving = np.isfinite(u)
    for _ in range(_GAUSS_NEWTON_STEPS):
        if not np.any(moving):
            break
        exact = np.log(model.evaluate(np.exp(u[moving]))["omega"])
        r = np.where(w[moving] > 0, exact - tgt[moving], 0.0)
        g = path.grad(u[moving]) * w[moving]
        gg = np.sum(g * g, axis=1)
        step = np.where(gg > 0, -np.sum(r * g, axis=1) / np.where(gg > 0, gg, 1.0), 0.0)
        step = np.where(np.isfinite(step), step, 0.0)
        u[moving] = np.clip(u[moving] + step, path.u[0], path.u[-1])
        if np.max(np.abs(step)) < 1e-13:
            break
    return np.where(np.isfinite(u), np.exp(u), 0.0)


def isotonic(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to `values` in weighted least squares
    (pool-adjacent-violators)."""
    blocks: list[list[float]] = []  # [weighted mean, weight, count]
    for v, w in zip(np.asarray(values, float), np.asarray(weights, float), strict=True):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            wt = w1 + w2
            mean = (v1 * w1 + v2 * w2) / wt if wt > 0 else 0.5 * (v1 + v2)
            blocks.append([mean, wt, n1 + n2])
    return np.concatenate([np.full(n, v) for v, _, n in blocks]) if blocks else np.zeros(0)


def fit_monotone_clock(path: _Path, model, target: np.ndarray) -> tuple[np.ndarray, bool]:
    """(t_k for the checkpoints after e0, whether pooling changed any): module docstring."""
    t_star = _best_times(path, model, target)
    # Curvature of the error in t: Σ_j (∂ log ω̂_j/∂t)², at t* (at the grid's first time for t* = 0).
    u = np.log(np.where(t_star > 0, t_star, path.times[1]))
    g = path.grad(u) * _residual_weights(target)
    weights = np.sum(g * g, axis=1) / np.exp(2 * u)
    weights = np.where(np.isfinite(weights) & (weights > 0), weights, 1e-300)
    clock = isotonic(t_star, weights)
    return np.maximum(clock, 0.0), bool(np.any(clock != t_star))


def measured_displacement(state_at, k0: int, K: int) -> np.ndarray:
    """d(e) = √((1/C) Σ_c ‖(μ_c − μ_G)(e) − (μ_c − μ_G)(e0)‖²) at every checkpoint (0 at e0
    and before), from each checkpoint's statistics mapped back to feature space."""

    def centred(k):
        st = state_at(k)
        M = np.asarray(st.stats.class_means, float)
        counts = np.asarray(st.stats.counts, float)
        M = M - (M @ counts / counts.sum())[:, None]
        return np.asarray(st.basis, float) @ M  # [p, C]

    M0 = centred(k0)
    out = np.zeros(K)
    for k in range(k0 + 1, K):
        out[k] = math.sqrt(float(np.mean(np.sum((centred(k) - M0) ** 2, axis=0))))
    return out


def speed_matched_times(
    path: _Path, model, D: np.ndarray, *, net: bool = False
) -> tuple[np.ndarray, str | None]:
    """The κ-free clocks: the model times at which the model's centred class means have
    travelled the measured distances D — `speed`: path length d(t) = Σ of
    √((1/C) Σ_c ‖Δ(μ_c − μ_G)‖²) over the model's traced grid, the per-epoch record's own
    definition, so that model and network move their class means equally fast epoch by epoch;
    `displacement` (`net`): the net distance from e0, d(t) = √((1/C) Σ_c ‖M̃(t) − M̃(0)‖²)
    (its running maximum, so that the map is monotone). (times, a note when D passes the
    traced path's d)."""
    require(
        hasattr(model, "flow"),
        f"--clock speed matches the class means' motion, which the {model.name} model does not "
        "have (it evolves omega alone); use the central-path or ufm model",
    )
    M = model.evaluate(path.times, means=True)["means"]
    if net:
        d = np.sqrt(np.mean(np.sum((M - M[0]) ** 2, axis=-1), axis=-1))
        d = np.maximum.accumulate(np.where(np.isfinite(d), d, 0.0))
    else:
        steps = np.sqrt(np.mean(np.sum(np.diff(M, axis=0) ** 2, axis=-1), axis=-1))
        d = np.concatenate([[0.0], np.cumsum(np.where(np.isfinite(steps), steps, 0.0))])
    note = None
    if D.max() > d[-1]:
        note = (
            f"the measured class means travel {D.max():.3g}, beyond the {model.name} model's "
            f"{d[-1]:.3g} over its traced path: later checkpoints are held at its end"
        )
    return np.interp(D, d, path.times), note


def fit_kappa(path: _Path, model, target: np.ndarray, S: np.ndarray) -> float:
    """κ minimising Σ_k Σ_j (log ω̂_j(κ S_k) − target_kj)² (S > 0 at the checkpoints after
    e0): a scan of log κ over the model's grid, the spline (bounded Brent), then Gauss–Newton
    steps on the exact model."""
    from scipy.optimize import minimize_scalar

    w = _residual_weights(target)
    tgt = np.where(w > 0, target, 0.0)
    logS = np.log(S)

    def loss(v):
        return float(np.sum(w * (path.at(v + logS) - tgt) ** 2))

    lo, hi = path.u[0] - logS.max(), path.u[-1] - logS.min()
    scan = np.linspace(lo, hi, max(int((hi - lo) * _PER_DECADE / math.log(10)), 16))
    values = np.asarray([loss(v) for v in scan])
    i = int(np.argmin(values))
    a, b = scan[max(i - 1, 0)], scan[min(i + 1, len(scan) - 1)]
    v = minimize_scalar(loss, bounds=(a, b), method="bounded", options={"xatol": 1e-12}).x
    for _ in range(_GAUSS_NEWTON_STEPS):
        exact = np.log(model.evaluate(np.exp(v + logS))["omega"])
        ok = w * np.isfinite(exact)
        r = np.where(ok > 0, exact - tgt, 0.0)
        g = path.grad(v + logS) * ok
        gg = float(np.sum(g * g))
        if gg <= 0:
            break
        step = -float(np.sum(r * g)) / gg
        v += step
        if abs(step) < 1e-13:
            break
    return float(math.exp(v))


# --------------------------------------------------------------------------- scores


def relative_errors(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """|ω̂ − ω|/ω; NaN where the measurement is not known (+inf beyond resolution, or ≤ 0),
    +inf where the prediction is +inf or NaN and the measurement is known."""
    known = np.isfinite(measured) & (measured > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(predicted - measured) / measured
    rel = np.where(np.isfinite(predicted), rel, np.inf)
    return np.where(known, rel, np.nan)


def _median(x: np.ndarray) -> float:
    x = np.asarray(x, float).ravel()
    x = x[~np.isnan(x)]
    return float(np.median(x)) if x.size else float("nan")


def _level_shape(omega: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(geometric mean over j [K], ω_j / it [K, m]); NaN where some ω_j is not finite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(omega)
    ok = np.all(np.isfinite(logs), axis=1)
    level = np.where(ok, np.exp(np.mean(np.where(np.isfinite(logs), logs, 0.0), axis=1)), np.nan)
    return level, omega / level[:, None]


def scores(predicted: np.ndarray, measured: np.ndarray, baseline: np.ndarray) -> dict:
    """The summary errors over the checkpoints after e0 (rows): module docstring."""
    rel = relative_errors(predicted, measured)
    base = relative_errors(np.broadcast_to(baseline, measured.shape), measured)
    median, median_base = _median(rel), _median(base)
    skill = 1.0 - median / median_base if median_base > 0 else float("nan")
    lp, sp = _level_shape(predicted)
    lm, sm = _level_shape(measured)
    lb, sb = _level_shape(np.broadcast_to(baseline, measured.shape))
    return {
        "median_relative_error": median,
        "baseline_relative_error": median_base,
        "skill": skill,
        "level_relative_error": _median(relative_errors(lp, lm)),
        "shape_relative_error": _median(relative_errors(sp, sm)),
        "baseline_level_relative_error": _median(relative_errors(lb, lm)),
        "baseline_shape_relative_error": _median(relative_errors(sb, sm)),
        "max_relative_error": float(np.nanmax(rel)) if np.any(~np.isnan(rel)) else float("nan"),
        "values_compared": int(np.sum(~np.isnan(rel))),
        "values_beyond_resolution": int(np.sum(np.isinf(measured))),
    }


def applicability(measurement: Measurement, k0: int | None, why_no_start: str) -> str | None:
    """Why the theory does not apply to this run (one line), or None."""
    m = measurement
    if m.loss == "ce":
        return (
            "the network was trained with cross-entropy (the file's loss = 'ce'); the theory "
            "is of MSE training"
        )
    # Without the key, the classifier tells: at every checkpoint the prediction covers (after
    # e0; all of them without an e0) L_⊥LS/L ≥ 0.5. The initialisation is left out once there
    # is an e0 because it is the same whatever the loss (L_⊥LS/L ≈ 0.46 at epoch 0 of both an
    # MSE and a cross-entropy MNIST MLP), so it says nothing about how the network was trained.
    covered = None if m.perp_rel is None else m.perp_rel[0 if k0 is None else k0 + 1 :]
    if m.loss is None and covered is not None and np.all(covered >= FAR_FROM_LEAST_SQUARES):
        where = (
            "every checkpoint" if k0 is None else f"every checkpoint after epoch {m.epochs[k0]:g}"
        )
        return (
            f"L_perp/L >= {FAR_FROM_LEAST_SQUARES:g} at {where} (min {np.min(covered):.2g}): "
            "the classifier is not least-squares, as for a network trained with cross-entropy"
        )
    if k0 is None:
        return why_no_start
    scored = len(m.epochs) - 1 - k0
    if scored < MIN_SCORED_CHECKPOINTS:
        return (
            f"only {scored} checkpoint(s) after the start (epoch {m.epochs[k0]:g}) to score; a "
            f"verdict needs at least {MIN_SCORED_CHECKPOINTS}: save more checkpoints after it "
            "(e.g. a larger --num-checkpoints, or train longer) or start earlier with "
            "--from-epoch"
        )
    growth = trend_growth(m.epochs[k0:], m.omega[k0:])
    if growth is not None and growth < MIN_GROWTH:
        return (
            f"omega does not grow after epoch {m.epochs[k0]:g} (its trend over the "
            f"{scored + 1} checkpoints to epoch {m.epochs[-1]:g} grows the geometric mean "
            f"x{growth:.3g}, below x{MIN_GROWTH:g}): there is no collapse to predict"
        )
    return None


def trend_growth(epochs: np.ndarray, omega: np.ndarray) -> float | None:
    """The growth of ω's geometric mean over the window by its trend: exp(slope·span) of the
    least-squares line of mean_j log ω_j against the epoch (None without two finite levels).
    A trend, unlike last against first, is not decided by one checkpoint."""
    level, _ = _level_shape(omega)
    ok = np.isfinite(level) & (level > 0)
    if np.count_nonzero(ok) < 2:
        return None
    e, y = np.asarray(epochs, float)[ok], np.log(level[ok])
    if np.ptp(e) == 0:
        return None
    slope = np.polyfit(e, y, 1)[0]
    return float(np.exp(slope * (np.max(epochs) - np.min(epochs))))


def nc1_factor(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Median over checkpoints of max(r, 1/r), r = NC1̂/NC1 (NaN where neither is known)."""
    p, q = np.asarray(predicted, float), np.asarray(measured, float)
    ok = np.isfinite(p) & np.isfinite(q) & (p > 0) & (q > 0)
    if not np.any(ok):
        return float("nan")
    return float(np.median(np.exp(np.abs(np.log(p[ok] / q[ok])))))


def beside(x: float, threshold: float, decimals: int, scale: float = 1.0) -> str:
    """x·scale with `decimals` decimals, or more where fewer would print the threshold itself:
    a skill of 0.8497 against 0.85 reads "0.8497 < 0.85", never "0.850 < 0.85"."""
    if not math.isfinite(x):
        return f"{x * scale}"
    while (
        decimals < 12
        and x != threshold
        and round(x * scale, decimals) == round(threshold * scale, decimals)
    ):
        decimals += 1
    return f"{x * scale:.{decimals}f}"


def verdict(summary: dict, not_applicable: str | None, from_epoch: float | None) -> tuple[str, str]:
    """(verdict, one-line reason) with the thresholds of the module docstring."""
    if not_applicable is not None:
        return "not-applicable", not_applicable
    err, skill = summary["median_relative_error"], summary["skill"]
    factor = summary.get("nc1_factor", float("nan"))
    n = summary["checkpoints_compared"]
    where = f"over {n} checkpoint(s) after epoch {from_epoch:g}"
    if not (math.isfinite(err) and math.isfinite(skill)):
        return "inconsistent", f"the model predicts no finite omega {where}"
    ok_err, ok_skill = err <= CONSISTENT_ERROR, skill >= CONSISTENT_SKILL
    ok_nc1 = math.isfinite(factor) and factor <= CONSISTENT_NC1_FACTOR
    nc1_text = (
        f"NC1 within x{beside(factor, CONSISTENT_NC1_FACTOR, 2)} {'<=' if ok_nc1 else '>'} "
        f"x{CONSISTENT_NC1_FACTOR:g}"
        if math.isfinite(factor)
        else "no NC1 to compare (the model or the measurement has none)"
    )
    text = (
        f"median relative error of omega {beside(err, CONSISTENT_ERROR, 2, 100)}% "
        f"{'<=' if ok_err else '>'} {100 * CONSISTENT_ERROR:g}%, skill "
        f"{beside(skill, CONSISTENT_SKILL, 3)} {'>=' if ok_skill else '<'} "
        f"{CONSISTENT_SKILL:g}, {nc1_text} {where}"
    )
    return ("consistent" if ok_err and ok_skill and ok_nc1 else "inconsistent"), text


# --------------------------------------------------------------------------- the comparison


@dataclass
class Prediction:
    """One model's prediction of a measured trajectory: per-checkpoint series (NaN before e0)
    and the summary (`summary()` is the JSON's top level)."""

    model: str
    from_epoch: float | None
    from_epoch_rule: str
    clock: str
    kappa: float | None
    kappa_source: str | None
    flow_time: np.ndarray  # [K]
    omega: np.ndarray  # [K, m]
    nc1: np.ndarray  # [K]
    perp_rel: np.ndarray  # [K]
    relative_error: np.ndarray  # [K, m]
    numbers: dict
    verdict: str
    reason: str
    notes: list[str] = field(default_factory=list)

    @property
    def omega_ratio(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.max(self.omega, axis=1) / np.min(self.omega, axis=1)

    def summary(self) -> dict:
        return {
            "model": self.model,
            "from_epoch": self.from_epoch,
            "from_epoch_rule": self.from_epoch_rule,
            "clock": self.clock,
            "kappa": self.kappa,
            "kappa_source": self.kappa_source,
            **self.numbers,
            "verdict": self.verdict,
            "reason": self.reason,
            "notes": list(self.notes),
            "thresholds": dict(THRESHOLDS),
        }

    def series(self, k: int) -> dict:
        """Checkpoint k's record of this model's prediction (None before e0)."""

        def num(x):
            x = float(x)
            return x if not math.isnan(x) else None

        if self.from_epoch is None or np.isnan(self.flow_time[k]):
            return None
        return {
            "flow_time": num(self.flow_time[k]),
            "omega": [num(x) for x in self.omega[k]],
            "nc1": num(self.nc1[k]),
            "omega_ratio": num(self.omega_ratio[k]),
            "perp_rel": num(self.perp_rel[k]),
            "relative_error": [num(x) for x in self.relative_error[k]],
        }


def predict(
    measurement: Measurement,
    state_at,
    model: str,
    *,
    from_epoch="auto",
    clock: str = "monotone",
    kappa: float | None = None,
    kappa_source: str | None = None,
    lam: float | None = None,
) -> Prediction:
    """Run `model` from e0 and score it against `measurement` (module docstring).

    - `state_at(k)`: the `MeasuredState` of checkpoint k (`measured_state(source, index=k)`).
    - `from_epoch`: `"auto"` or an epoch of the file; `clock`: one of `CLOCKS`.
    - `kappa`: a κ clock's scale, given (else fitted); `kappa_source` says where it came from.
    - `lam`: the central path's ridge / the UFM's decays (default: the file's weight decay).
    """
    m = measurement
    require(model in MODELS, f"unknown model {model!r}; choose one of {', '.join(MODELS)}, or all")
    require(clock in CLOCKS, f"unknown clock {clock!r}; choose one of {', '.join(CLOCKS)}")
    require(
        kappa is None or clock in KAPPA_CLOCKS,
        f"--kappa and --kappa-from set the scale of a clock with one ({', '.join(KAPPA_CLOCKS)}); "
        "add --clock lr-loss (or another), or drop them",
    )
    if kappa is not None:
        require_real("--kappa", kappa, 0, lo_open=True)
    K, mdim = m.omega.shape
    k0, rule = choose_from_epoch(m, from_epoch)
    S = clock_units(m, k0, clock) if clock in KAPPA_CLOCKS and k0 is not None else None
    D = measured_distance(m, k0) if clock == "speed" and k0 is not None else None
    if clock == "displacement" and k0 is not None:
        D = measured_displacement(state_at, k0, K)
    na = applicability(m, k0, rule)
    nan_k, nan_km = np.full(K, np.nan), np.full((K, mdim), np.nan)
    if k0 is not None and clock in ("speed", "displacement") and model == "closed-form":
        k0, na = (
            None,
            na
            or (
                "the closed form evolves omega alone: it has no class means whose speed the speed "
                "clock could match (the central-path and ufm models have)"
            ),
        )
    if k0 is None:
        numbers = _empty_numbers(K)
        v, reason = verdict(numbers, na, None)
        return Prediction(
            model,
            None,
            rule,
            clock,
            kappa,
            kappa_source,
            nan_k,
            nan_km,
            nan_k,
            nan_k,
            nan_km,
            numbers,
            v,
            reason,
        )
    state = state_at(k0)
    model_obj = build_model(model, state, m, omega0=m.omega[k0], lam=lam)
    after = np.arange(k0 + 1, K)
    with np.errstate(divide="ignore"):
        target = np.log(m.omega[after])
    known = np.isfinite(target)
    levels = np.where(np.all(known, axis=1), np.mean(np.where(known, target, 0), axis=1), -np.inf)
    target_level = (
        float(np.max(levels)) if np.any(np.isfinite(levels)) else float(np.max(target[known]))
    )
    try:
        path = _trace_path(model_obj, target_level)
    except InputError as e:  # the model cannot start here: no prediction of this model
        numbers = _empty_numbers(K)
        v, reason = verdict(numbers, na or str(e), None)
        return Prediction(
            model, float(m.epochs[k0]), rule, clock, kappa, kappa_source, nan_k, nan_km,
            nan_k, nan_k, nan_km, numbers, v, reason,
        )  # fmt: skip
    notes = [model_obj.note] if model_obj.note else []
    if clock == "monotone":
        t_after, pooled = fit_monotone_clock(path, model_obj, target)
        if pooled:
            notes.append("the best times were not monotone: adjacent checkpoints were pooled")
    elif clock in ("speed", "displacement"):
        t_after, note = speed_matched_times(path, model_obj, D[after], net=clock == "displacement")
        if note:
            notes.append(note)
    else:
        if kappa is None:
            kappa = fit_kappa(path, model_obj, target, S[after])
            kappa_source = "fitted"
        check_kappa_time(kappa, S[after], kappa_source)
        t_after = kappa * S[after]
    flow_time = nan_k.copy()
    flow_time[k0] = 0.0
    flow_time[after] = t_after
    order = np.argsort(flow_time[k0:], kind="stable") + k0
    unique_t, inverse = np.unique(flow_time[order], return_inverse=True)
    values = model_obj.evaluate(unique_t, full=True)
    if model_obj.note and model_obj.note not in notes:
        notes.append(model_obj.note)
    omega, nc1, perp = nan_km.copy(), nan_k.copy(), nan_k.copy()
    omega[order] = values["omega"][inverse]
    nc1[order] = values["nc1"][inverse]
    perp[order] = values["perp_rel"][inverse]
    rel = nan_km.copy()
    rel[after] = relative_errors(omega[after], m.omega[after])
    numbers = scores(omega[after], m.omega[after], m.omega[k0])
    numbers["checkpoints_compared"] = int(len(after))
    numbers["growth"] = trend_growth(m.epochs[k0:], m.omega[k0:])
    numbers["nc1_median_relative_error"] = _median(relative_errors(nc1[after], m.nc1[after]))
    numbers["nc1_baseline_relative_error"] = _median(
        relative_errors(np.full(len(after), m.nc1[k0]), m.nc1[after])
    )
    numbers["nc1_factor"] = nc1_factor(nc1[after], m.nc1[after])
    numbers["nc1_baseline_factor"] = nc1_factor(np.full(len(after), m.nc1[k0]), m.nc1[after])
    numbers["last"] = _last_checkpoint(m, omega[-1], nc1[-1], perp[-1])
    v, reason = verdict(numbers, na, float(m.epochs[k0]))
    return Prediction(
        model,
        float(m.epochs[k0]),
        rule,
        clock,
        kappa,
        kappa_source,
        flow_time,
        omega,
        nc1,
        perp,
        rel,
        numbers,
        v,
        reason,
        notes,
    )


def _last_checkpoint(m: Measurement, omega, nc1, perp) -> dict:
    """Measured and predicted ω_max/ω_min, NC1 and L_⊥LS/L at the last checkpoint."""

    def num(x):
        return float(x) if x is not None and np.isfinite(x) else None

    def ratio(w):
        w = np.asarray(w, float)
        return num(np.max(w) / np.min(w)) if np.all(np.isfinite(w)) and np.min(w) > 0 else None

    return {
        "epoch": float(m.epochs[-1]),
        "omega_ratio_measured": ratio(m.omega[-1]),
        "omega_ratio_predicted": ratio(omega),
        "nc1_measured": num(m.nc1[-1]),
        "nc1_predicted": num(nc1),
        "perp_rel_measured": None if m.perp_rel is None else num(m.perp_rel[-1]),
        # L_⊥LS = 0 on the central path up to rounding (~1e-31 of L): reported as 0.
        "perp_rel_predicted": None if num(perp) is None else (0.0 if perp < 1e-12 else float(perp)),
    }


def _empty_numbers(K: int) -> dict:
    keys = (
        "median_relative_error",
        "baseline_relative_error",
        "skill",
        "level_relative_error",
        "shape_relative_error",
        "baseline_level_relative_error",
        "baseline_shape_relative_error",
        "max_relative_error",
    )
    out: dict[str, Any] = {k: float("nan") for k in keys}
    out.update(values_compared=0, values_beyond_resolution=0, checkpoints_compared=0, growth=None)
    out.update(
        nc1_median_relative_error=float("nan"),
        nc1_baseline_relative_error=float("nan"),
        nc1_factor=float("nan"),
        nc1_baseline_factor=float("nan"),
        last=None,
    )
    return out


def compare_models(
    ff,
    models,
    *,
    from_epoch="auto",
    clock: str = "monotone",
    kappa: float | None = None,
    kappa_from=None,
    weight_decay: float | None = None,
    rtol: float = DEFAULT_RTOL,
    records: list[dict] | None = None,
) -> tuple[Measurement, list[dict], list[Prediction]]:
    """`predict` for each of `models` on a features file (`load_features`) or a streamed source:
    (the measurement, `analyze`'s records, one `Prediction` per model). `kappa_from`: another
    run's compare JSON, read per model (`read_kappa`); `weight_decay` overrides the file's, for
    the decomposition and the flows' ridges alike."""
    from ._initial_state import measured_state
    from .analysis import analyze

    require(
        kappa is None or kappa_from is None,
        "give the lr clock's scale once: --kappa K or --kappa-from COMPARE.json, not both",
    )
    if records is None:
        records = analyze(ff, weight_decay=weight_decay, rtol=rtol)
    measurement = Measurement.from_records(ff, records, weight_decay)
    states: dict[int, Any] = {}

    def state_at(k: int):
        if k not in states:
            states[k] = measured_state(ff, index=k, rtol=rtol)
        return states[k]

    predictions = []
    for name in models:
        k, source = (float(kappa), "given") if kappa is not None else (None, None)
        if kappa_from is not None:
            require(
                clock in KAPPA_CLOCKS,
                "--kappa-from sets the scale of a clock with one; add --clock lr-loss (or "
                f"another of {', '.join(KAPPA_CLOCKS)})",
            )
            k, source = read_kappa(kappa_from, name, clock)
        predictions.append(
            predict(
                measurement,
                state_at,
                name,
                from_epoch=from_epoch,
                clock=clock,
                kappa=k,
                kappa_source=source,
                lam=weight_decay,
            )
        )
    return measurement, records, predictions


def summary_json(predictions: list[Prediction], rows: list[dict]) -> dict:
    """The JSON of `compare --model …`: the top level of the model (of the central path for the
    whole ladder: the theory under test), `models` with every model's summary, and
    `checkpoints`, the per-checkpoint records with each model's prediction under `predictions`."""
    by_name = {p.model: p for p in predictions}
    lead = by_name.get("central-path", predictions[0]) if len(predictions) > 1 else predictions[0]
    top = lead.summary()
    if len(predictions) > 1:
        top["model"] = "all"
        top["verdict_of"] = lead.model
    top["models"] = [p.summary() for p in predictions]
    out = []
    for k, row in enumerate(rows):
        row = dict(row)
        omega = [np.inf if w is None else w for w in row.get("snr") or []]
        row["omega_ratio"] = float(max(omega) / min(omega)) if omega and min(omega) > 0 else None
        row["predictions"] = {p.model: p.series(k) for p in predictions}
        out.append(row)
    top["checkpoints"] = out
    return top


def results_series(measurement: Measurement, predictions: list[Prediction]) -> dict:
    """The `predict/…` series of a run's results.npz (what `plotting.compare` draws)."""
    out = {
        "predict/epochs": measurement.epochs,
        "predict/omega_measured": measurement.omega,
        "predict/nc1_measured": measurement.nc1,
    }
    for p in predictions:
        pre = f"predict/{p.model}"
        out[f"{pre}/omega"] = p.omega
        out[f"{pre}/flow_time"] = p.flow_time
        out[f"{pre}/nc1"] = p.nc1
        out[f"{pre}/relative_error"] = p.relative_error
        out[f"{pre}/from_epoch"] = np.asarray(np.nan if p.from_epoch is None else p.from_epoch)
        out[f"{pre}/median_relative_error"] = np.asarray(p.numbers["median_relative_error"])
        out[f"{pre}/skill"] = np.asarray(p.numbers["skill"])
    return out


def ladder_rows(predictions: list[Prediction]) -> list[dict]:
    """One row per model: the errors, the skill and the verdict (the table of `--model all`)."""

    def pct(x):
        return "-" if x is None or not math.isfinite(x) else f"{100 * x:.2f}%"

    def num(x):
        return "-" if x is None or not math.isfinite(x) else beside(x, CONSISTENT_SKILL, 3)

    def factor(x):
        return "-" if x is None or not math.isfinite(x) else f"x{x:.3g}"

    return [
        {
            "model": p.model,
            "median_error": pct(p.numbers["median_relative_error"]),
            "baseline_error": pct(p.numbers["baseline_relative_error"]),
            "skill": num(p.numbers["skill"]),
            "level_error": pct(p.numbers["level_relative_error"]),
            "shape_error": pct(p.numbers["shape_relative_error"]),
            "nc1_factor": factor(p.numbers.get("nc1_factor")),
            "nc1_baseline": factor(p.numbers.get("nc1_baseline_factor")),
            "kappa": "-" if p.kappa is None else f"{p.kappa:.4g}",
            "verdict": p.verdict,
        }
        for p in predictions
    ]


LADDER_COLUMNS = (
    "model",
    "median_error",
    "baseline_error",
    "skill",
    "level_error",
    "shape_error",
    "nc1_factor",
    "nc1_baseline",
    "kappa",
    "verdict",
)


def ladder_markdown(summaries: list[dict]) -> list[str]:
    """Markdown lines stating the verdict and the model ladder, from `Prediction.summary()`
    dicts (or a compare JSON's `models`): for reports such as the demo's."""

    def pct(x):
        return "–" if x is None or not math.isfinite(x) else f"{100 * x:.2f}%"

    def num(x):
        return "–" if x is None or not math.isfinite(x) else f"{x:.3f}"

    lead = next((s for s in summaries if s["model"] == "central-path"), summaries[0])
    lines = [
        f"**Verdict ({lead['model']}): {lead['verdict']}** — {lead['reason']}.",
        "",
        f"Start: {lead['from_epoch_rule']}; clock: {lead['clock']}.",
        "",
        "| model | median error of ω_j | no-change baseline | skill | level error | shape error "
        "| verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['model']} | {pct(s['median_relative_error'])} | "
            f"{pct(s['baseline_relative_error'])} | {num(s['skill'])} | "
            f"{pct(s['level_relative_error'])} | {pct(s['shape_relative_error'])} | "
            f"{s['verdict']} |"
        )
    lines += [
        "",
        f"consistent: median error ≤ {100 * CONSISTENT_ERROR:g}%, skill ≥ "
        f"{CONSISTENT_SKILL:g} (skill = 1 − error / baseline error) and NC1 within a factor "
        f"{CONSISTENT_NC1_FACTOR:g} of the measured.",
    ]
    return lines


#: What a report says of each model (the ladder, simplest first).
MODEL_LABELS = {
    "closed-form": "closed form (F3, λ = 0, from ω(e0))",
    "central-path": "central path at λ = the weight decay (from the statistics at e0)",
    "ufm": "UFM from the measured W, b (λ_W = λ_H = the weight decay)",
}


def report_numbers(predictions: list[Prediction]) -> dict:
    """The verdict and the ladder as a report's numbers (the demo's network section): `verdict`,
    `reason` and `verdict_of` (the central path's, the theory under test), `start`, `clock`, and
    per model one line "median error x%, skill s: verdict" under the model's name."""

    def line(p: Prediction) -> str:
        err, skill = p.numbers["median_relative_error"], p.numbers["skill"]
        if not math.isfinite(err):
            return p.verdict
        shown = f"median error {beside(err, CONSISTENT_ERROR, 2, 100)}%"
        if math.isfinite(skill):
            shown += f", skill {beside(skill, CONSISTENT_SKILL, 3)}"
        return f"{shown}: {p.verdict}"

    lead = next((p for p in predictions if p.model == "central-path"), predictions[0])
    out = {
        "verdict": lead.verdict,
        "reason": lead.reason,
        "verdict_of": lead.model,
        "start": lead.from_epoch_rule,
        "clock": lead.clock,
    }
    out.update({p.model: line(p) for p in predictions})
    return out


def report_caption(numbers: dict) -> str:
    """The caption of the models-vs-measured figure, from `report_numbers`."""
    return (
        f"Each model starts from the network's own state ({numbers['start']}) and runs "
        f"forward; a {numbers['clock']} clock maps epochs to its time. Circles: measured ω_j; "
        f"lines: the model's. Against the no-change baseline ω(e) = ω(e0), the "
        f"{numbers['verdict_of']} model is {numbers['verdict']}: {numbers['reason']}."
    )


#: The largest model time κ·S an lr clock may ask for: far beyond any collapse (ω_j reach
#: float64's limits by t ~ 1e3 at the paper's scales), and with room before overflow (κ = 1e308
#: gave t = inf, and the models' time stepping never ended).
MAX_MODEL_TIME = 1e300


def check_kappa_time(kappa: float, S: np.ndarray, source: str | None) -> None:
    """Refuse a κ whose model times κ·S (the lr clock's units after e0) leave float64's range."""
    top = float(np.max(S)) if np.size(S) else 0.0
    with np.errstate(over="ignore"):
        t = kappa * top
    if not t <= MAX_MODEL_TIME:
        where = "--kappa" if source in (None, "given") else f"kappa ({source})"
        raise InputError(
            f"{where} = {kappa:.3g} makes the model time kappa * S reach {t:.3g} at the last "
            f"checkpoint (S = {top:.3g}), beyond {MAX_MODEL_TIME:g}; pass a kappa of at most "
            f"{MAX_MODEL_TIME / top:.3g} (a fitted one is of order 1 to 1e4)"
        )


def read_kappa(path, model: str, clock: str = "lr") -> tuple[float, str]:
    """κ of `model` and `clock` from another run's `compare --clock CLOCK --json` output (the
    out-of-sample test): its top level, or its `models` list when it ran --model all."""
    from ._io import read_json

    data = read_json(path, "--kappa-from", fix="pass a compare --json output")
    entries = data.get("models") if isinstance(data, dict) else None
    entries = entries if isinstance(entries, list) else [data] if isinstance(data, dict) else []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("model") == model:
            require(
                entry.get("clock") == clock,
                f"--kappa-from {path} used --clock {entry.get('clock')}, not --clock {clock}: "
                f"each clock's kappa has its own units; pass the JSON of a compare --clock "
                f"{clock} run",
            )
            k = entry.get("kappa")
            require(
                isinstance(k, int | float)
                and not isinstance(k, bool)
                and math.isfinite(k)
                and k > 0,
                f"--kappa-from {path} has no finite kappa > 0 for model {model} (it says "
                f"{k!r}); pass the JSON of a compare --clock {clock} run that fitted one",
            )
            return float(k), f"from {path}"
    found = sorted({str(e.get("model")) for e in entries if isinstance(e, dict)})
    raise InputError(
        f"--kappa-from {path} has no kappa for model {model} (it has: "
        f"{', '.join(found) or 'none'}); run compare --model {model} --clock {clock} --json on "
        "the other run first"
    )


__all__ = [
    "CLOCKS",
    "CLOCK_STEPS",
    "FLOW_MODELS",
    "KAPPA_CLOCKS",
    "LADDER_COLUMNS",
    "MODELS",
    "THRESHOLDS",
    "Measurement",
    "MODEL_LABELS",
    "Prediction",
    "compare_models",
    "isotonic",
    "perp_trend",
    "ladder_markdown",
    "ladder_rows",
    "predict",
    "read_kappa",
    "relative_errors",
    "report_caption",
    "report_numbers",
    "results_series",
    "scores",
    "summary_json",
]
