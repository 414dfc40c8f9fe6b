"""Initial states of the flows from a measured checkpoint (docs/theory.md §6, §7½).

A trained network's features at one checkpoint give the class statistics (μ_c, Σ_W) and, when the
file has them, the last layer's W, b. From these, every moment-reduced flow can start:

- `central-path` (F2): `ReducedCentralPathFlow(lam)` on the statistics, λ ≥ 0 (default: the
  file's weight decay, the ridge the network was trained with);
- `ufm` (F1): `ReducedUFMFlow` from the measured W, b and statistics with λ_W = λ_H = λ_b = the
  weight decay (the network decays every parameter, b included: the loss of §2);
- `renormalised` (F3) and `whitened` (F3′): the λ = 0 flows on Σ_W = I.

**Coordinates.** Dead directions (units that never vary) are dropped first, by the rule of
`renormalised_features`: the eigenvectors of Σ_T with eigenvalue ≤ rtol·max are removed and every
statistic is expressed in an orthonormal basis V of U = range(Σ_T): M ↦ Vᵀ M, Σ_W ↦ Vᵀ Σ_W V,
W ↦ W V. That map is an isometry of U, so the central path and the UFM start from the measured
features *as they are*: their ridges, ‖W‖ and the features' scale are the network's. This matters
because neither flow is affine-invariant for λ > 0 (nor, as a gradient flow, even at λ = 0), and
trained features are far from whitened (‖M̄‖ stays ~constant while tr Σ_W shrinks). What is
compared is ω_j, which is affine-invariant, so nothing is lost by measuring in U. Only the
renormalised flows whiten — x = Σ_{W,U}^{-1/2}(h_U − μ_G) — which they need (Σ_W ≡ I) and which
changes neither ω_j nor their dynamics at λ = 0.

The component of the global mean along a dropped direction is dropped with it: a direction in
which every sample has the same value acts on the classifier only as a bias, and for dead ReLU
units that value is 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from .._errors import InputError, require, require_real
from .._float64 import float64
from .._linalg import DEFAULT_RTOL, effective_rtol
from .._stats import ClassStats

#: The flows a measured state can start, by the names `simulate --flow` uses.
MEASURED_FLOWS = ("central-path", "ufm", "renormalised", "whitened")


@dataclass(frozen=True)
class MeasuredState:
    """One checkpoint's statistics on its live directions, ready to start any flow.

    - `stats`: `ClassStats` in the orthonormal basis `basis` of U = range(Σ_T) (r = dim).
    - `W`, `b`: the measured classifier in the same basis (W V), or None if the file has none.
    - `basis` [p, r]: V; `dropped`: p − r dead directions removed.
    - `epoch`, `index`: which checkpoint; `weight_decay`: λ of the file (docs/theory.md §2).
    """

    stats: ClassStats
    W: np.ndarray | None
    b: np.ndarray | None
    basis: np.ndarray
    dropped: int
    epoch: float
    index: int
    weight_decay: float

    @classmethod
    def from_stats(
        cls,
        stats: ClassStats,
        W=None,
        b=None,
        *,
        weight_decay: float = 0.0,
        epoch: float = float("nan"),
        rtol: float = DEFAULT_RTOL,
    ) -> MeasuredState:
        """From class statistics (and a classifier) at hand instead of a file: the same
        projection onto the live directions as `measured_state`."""
        require_real("weight_decay", weight_decay, 0)
        projected, W_U, V = project_live(stats, W, b, rtol=rtol)
        return cls(
            stats=projected,
            W=W_U,
            b=None if b is None else np.asarray(b, dtype=np.float64),
            basis=V,
            dropped=int(stats.dim - V.shape[1]),
            epoch=float(epoch),
            index=0,
            weight_decay=float(weight_decay),
        )

    @property
    def num_classes(self) -> int:
        return self.stats.num_classes

    @property
    def per_class(self) -> float:
        """N: the mean class size (the closed form assumes balanced classes)."""
        return float(np.mean(np.asarray(self.stats.counts)))


def project_live(
    stats: ClassStats, W=None, b=None, *, rtol: float = DEFAULT_RTOL
) -> tuple[ClassStats, np.ndarray | None, np.ndarray]:
    """(statistics, W) on U = range(Σ_T) and the basis V [p, r] (module docstring).

    Directions where Σ_T's eigenvalue is ≤ rtol·max (at least 100 ulp) are dropped: the rule of
    `renormalised_features` and of every measurement (docs/theory.md §7½).
    """
    sigma_w = np.asarray(stats.sigma_w, dtype=np.float64)
    means = np.asarray(stats.class_means, dtype=np.float64)
    s, V = np.linalg.eigh(np.asarray(stats.sigma_t, dtype=np.float64))
    live = s > effective_rtol(rtol, np.float64) * max(float(s[-1]), 0.0)
    require(
        int(live.sum()) >= stats.num_classes - 1,
        f"the features vary in only {int(live.sum())} direction(s), fewer than C-1 = "
        f"{stats.num_classes - 1}: there is no state of C separated classes to start a flow from; "
        "start from a checkpoint whose class means differ",
    )
    V = V[:, live]
    S = V.T @ sigma_w @ V
    projected = ClassStats(
        jnp.asarray(stats.counts, jnp.float64),
        jnp.asarray(V.T @ means),
        jnp.asarray(0.5 * (S + S.T)),  # symmetric to the last bit: the flows assume it
    )
    W_U = None if W is None else np.asarray(W, dtype=np.float64) @ V
    return projected, W_U, V


def _checkpoint_index(epochs: np.ndarray, epoch) -> int:
    """The index of the checkpoint at `epoch` (a number in the file's epochs)."""
    require_real("--epoch", epoch)
    hits = np.flatnonzero(np.isclose(epochs, float(epoch), rtol=0, atol=1e-9))
    if not hits.size:
        shown = ", ".join(f"{e:g}" for e in epochs[:12]) + (", …" if len(epochs) > 12 else "")
        raise InputError(
            f"the features file has no checkpoint at epoch {float(epoch):g}; its epochs are "
            f"{shown} — pass one of them"
        )
    return int(hits[0])


@float64
def measured_state(
    source, epoch=None, *, index: int | None = None, rtol: float = DEFAULT_RTOL
) -> MeasuredState:
    """The statistics (and W, b) of one checkpoint of a features file, on its live directions.

    **Arguments:**

    - `source`: a path to a features file, a `FeaturesFile` (`load_features`), or a streamed
      source (anything with `checkpoint(k)` returning the statistics, as `analyze` reads them).
    - `epoch`: the checkpoint's epoch (one of the file's `epochs`); or `index`: its position.
      Neither: the last checkpoint.
    - `rtol`: dead directions are those where Σ_T's eigenvalue is ≤ rtol·max.

    **Returns:** a `MeasuredState`; `initial_state(measured, flow)` starts a flow from it.
    """
    from pathlib import Path

    from .._stats import class_stats
    from ._io import load_features

    if isinstance(source, str | Path):
        source = load_features(source)
    epochs = np.asarray(source.epochs, dtype=np.float64)
    K = len(epochs)
    if index is None:
        index = K - 1 if epoch is None else _checkpoint_index(epochs, epoch)
    require(
        isinstance(index, int | np.integer) and -K <= index < K,
        f"checkpoint index {index!r} is outside the file's {K} checkpoints",
    )
    index = int(index) % K
    if hasattr(source, "checkpoint"):  # streamed: one checkpoint's statistics, chunk by chunk
        ck = source.checkpoint(index)
        stats, W, b = ck.acc.finalize(), ck.W, ck.b
    else:
        stats = class_stats(source.features[index], source.labels, source.num_classes)
        W = None if source.W is None else source.W[index]
        b = None if source.b is None else source.b[index]
    state = MeasuredState.from_stats(
        stats, W, b, weight_decay=float(source.weight_decay), epoch=epochs[index], rtol=rtol
    )
    return dataclasses.replace(state, index=index)


def whiten(stats: ClassStats, *, rtol: float = DEFAULT_RTOL) -> ClassStats:
    """The statistics of x = Σ_W^{-1/2}(h − μ_G): Σ_W = I exactly, the state the renormalised
    flows start from (ω_j unchanged). Refuses a Σ_W that is singular on the live directions."""
    S = np.asarray(stats.sigma_w, dtype=np.float64)
    w, Q = np.linalg.eigh(0.5 * (S + S.T))
    require(
        bool(w[0] > effective_rtol(rtol, np.float64) * w[-1]),
        "Sigma_W is singular on the live directions (the features are collapsed along some "
        "direction), so they cannot be renormalised; start the renormalised flow from an earlier "
        "checkpoint, or use the central-path or ufm flow",
    )
    inv_sqrt = (Q / np.sqrt(w)) @ Q.T
    centred = np.asarray(stats.centred_means, dtype=np.float64)
    return ClassStats(
        stats.counts, jnp.asarray(inv_sqrt @ centred), jnp.eye(stats.dim, dtype=jnp.float64)
    )


@float64
def initial_state(measured: MeasuredState, flow: str, *, lam=None, rtol: float = DEFAULT_RTOL):
    """(flow, y0): a moment-reduced flow of docs/theory.md §6 and its state at the checkpoint.

    - `"central-path"`: `ReducedCentralPathFlow(lam)` from the statistics; `lam` defaults to the
      file's weight decay (the ridge the network's classifier was trained with).
    - `"ufm"`: `ReducedUFMFlow` with λ_W = λ_H = λ_b = `lam` (default: the weight decay) from the
      measured W, b and statistics; needs W in the file.
    - `"renormalised"` / `"whitened"`: F3 / F3′ (λ = 0) from the whitened statistics.
    """
    from ..flows import (
        ReducedCentralPathFlow,
        ReducedRenormalisedFlow,
        ReducedUFMFlow,
        ReducedUFMState,
    )

    require(
        flow in MEASURED_FLOWS,
        f"unknown flow {flow!r} for a measured state; choose one of {', '.join(MEASURED_FLOWS)}",
    )
    given = lam
    if lam is not None:
        require_real("lambda", lam, 0)
    lam = measured.weight_decay if lam is None else float(lam)
    if flow == "central-path":
        return ReducedCentralPathFlow(lam=lam), measured.stats
    if flow == "ufm":
        require(
            measured.W is not None,
            "the ufm flow starts from the measured classifier, but the features file has no W; "
            "save the last layer's W and b with the features, or use --flow central-path",
        )
        b = np.zeros(measured.num_classes) if measured.b is None else measured.b
        y0 = ReducedUFMState(jnp.asarray(measured.W), jnp.asarray(b), measured.stats)
        return ReducedUFMFlow(lam_W=lam, lam_H=lam, lam_b=lam), y0
    require(
        given is None or given == 0,
        f"the {flow} flow has no ridge (lambda = 0, docs/theory.md §6 F3), got lambda = {given}; "
        "drop it, or use the central-path flow",
    )
    return ReducedRenormalisedFlow(project=flow == "renormalised"), whiten(
        measured.stats, rtol=rtol
    )


def simulate_measured(
    measured: MeasuredState,
    flow: str,
    *,
    t_end: float | None = None,
    num_saves: int = 40,
    ts=None,
    lam=None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 200_000,
) -> dict[str, np.ndarray]:
    """The ODE of `flow` from a measured state (`initial_state`), saved at 0 and `num_saves` − 1
    log-spaced times up to `t_end`, or at the times `ts` (≥ 0, non-decreasing, last > 0: a
    clock's times of the network's checkpoints, `simulate --from --clock`): the flat results of
    `simulate` (`ode/…`, and `closed_form/…` from the measured ω for the renormalised flows,
    with N the mean class size), one row per save time."""
    from .._integrate import integrate
    from .._metrics import snr_singular_values
    from .._series import closed_form_series, save_times, series

    require((t_end is None) != (ts is None), "internal: give the save times by t_end or ts")
    if ts is None:
        require_real("t-end", t_end, 0, lo_open=True)
        ts = save_times(float(t_end), int(num_saves))
    ts = np.asarray(ts, dtype=np.float64)
    require(
        ts.ndim == 1 and ts.size >= 2 and bool(np.all(np.isfinite(ts))) and ts[0] >= 0,
        "internal: save times must be finite, >= 0, at least 2",
    )
    require(bool(np.all(np.diff(ts) >= 0)), "internal: save times must not decrease")
    require(bool(ts[-1] > 0), "the save times all are t = 0: there is no time to run the flow")
    # A clock stands still over an epoch whose step is 0 (lr = 0): those checkpoints share a
    # time, and the solver takes each distinct time once.
    distinct, row = np.unique(ts, return_inverse=True)
    f, y0 = initial_state(measured, flow, lam=lam)
    tr = integrate(
        f, y0, float(distinct[-1]), ts=distinct, rtol=rtol, atol=atol, max_steps=max_steps
    )
    metrics = tr.metrics()
    del metrics["nc4"]  # moment-reduced: NC4 needs the samples
    results = series("ode", ts, {k: np.asarray(v)[row] for k, v in metrics.items()})
    results["ode/status"] = np.asarray(0)
    if flow in ("renormalised", "whitened"):
        omega0 = np.asarray(snr_singular_values(f.class_stats(y0)), float)
        closed = closed_form_series(omega0, ts, measured.num_classes, measured.per_class, flow)
        results.update(series("closed_form", ts, {k: np.asarray(v) for k, v in closed.items()}))
    return results


__all__ = [
    "MEASURED_FLOWS",
    "MeasuredState",
    "initial_state",
    "measured_state",
    "project_live",
    "simulate_measured",
]
