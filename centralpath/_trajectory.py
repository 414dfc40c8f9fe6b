"""A trajectory: snapshots of a flow or of gradient descent at given times, and their metrics."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from ._float64 import float64
from ._linalg import DEFAULT_RTOL
from ._loss import loss_decomposition
from ._metrics import collapse_metrics, nc1_from_gram
from ._quantities import METRIC_KEYS as METRIC_KEYS
from ._repr import numeric_repr
from .flows._base import Snapshot


class Trajectory(eqx.Module):
    """Snapshots at `times` (time t = kη for gradient descent) and the state at the last time.

    **Fields:**

    - `times`: [T] save times actually reached (a stopping event truncates them).
    - `snapshots`: a `Snapshot` with a leading axis T (class statistics, classifier, objective,
      NC4).
    - `final_state`: the flow's state at `times[-1]`.
    - `decomposition_lambda`: λ of the loss decomposition in `metrics()`.
    - `method`: `"ode"` or `"gd"`; `flow`: the flow's name; `reduced`: moments or samples.
    - `num_steps`: solver or GD steps taken; `stopped_early`: an NC1 target was reached.
    - `final_time`: the time of `final_state` (the stopping time when stopped early).
    - `accuracy`: how well the states are known relative to their scale, when worse than
      rounding: max(rtol, atol) of an ODE solve, 0 for gradient descent.
    """

    def __repr__(self) -> str:  # numbers, not Equinox's dtype-and-shape summaries
        return numeric_repr(self)

    times: Float[Array, " T"]
    snapshots: Snapshot
    final_state: PyTree
    decomposition_lambda: float
    method: str = eqx.field(static=True)
    flow: str = eqx.field(static=True)
    reduced: bool = eqx.field(static=True)
    num_steps: int = 0
    stopped_early: bool = False
    final_time: float = float("nan")
    accuracy: float = 0.0

    @float64
    def metrics(self, *, rtol: float = DEFAULT_RTOL) -> dict[str, np.ndarray]:
        """Every quantity of docs/theory.md §3, §5, §7 at every saved time, as numpy arrays
        [T, …]."""
        return snapshot_metrics(
            self.snapshots, self.decomposition_lambda, rtol=rtol, accuracy=self.accuracy
        )

    @float64
    def snr(self, *, rtol: float = DEFAULT_RTOL) -> np.ndarray:
        """ω_1 ≥ … ≥ ω_{C−1} at every saved time, [T, C−1] (+inf beyond resolution): only
        `snr_singular_values`, one compiled program over all snapshots. A comparison that fits
        a clock to ω needs only this; `metrics()` computes every quantity of §3, §5, §7 and
        compiles twice as long (151 snapshots at p = 124 on two loaded cores: 17 s cold and
        1.5 s warm for `metrics()`, 9 s and 1.2 s for this)."""
        return np.asarray(
            jax.device_get(_snr(self.snapshots.stats, rtol, jnp.asarray(self.accuracy, float)))
        )


def metrics_of_snapshot(
    s: Snapshot, lam, *, rtol: float = DEFAULT_RTOL, accuracy: float = 0.0
) -> dict:
    """Every quantity of `METRIC_KEYS` for one snapshot (jit/vmap-able).

    `accuracy`: how well the state is known relative to its scale when worse than rounding (an
    ODE solve's tolerance); it bounds the ω_j that can be resolved."""
    d = loss_decomposition(s.stats, s.W, s.b, lam, rtol=rtol)
    m = collapse_metrics(s.stats, s.W, rtol=rtol, accuracy=accuracy)
    return dict(
        objective=s.objective,
        loss=d.loss,
        loss_nc1=d.nc1,
        loss_nc23=d.nc23,
        loss_perp=d.perp,
        perp_rel=d.perp / d.loss,
        w_ls_distance=d.w_ls_distance,
        # From the C×C Gram of the means: XLA then drops the metric's p×p eigendecomposition.
        nc1=nc1_from_gram(s.stats, rtol),
        nc2_equinorm_means=m.nc2_equinorm_means,
        nc2_equinorm_classifier=m.nc2_equinorm_classifier,
        nc2_equiangular_means=m.nc2_equiangular_means,
        nc2_equiangular_classifier=m.nc2_equiangular_classifier,
        etf_distance=m.etf_distance,
        nc3=m.nc3,
        nc4=s.nc4,
        snr=m.snr,
        # 1.0 where some ω_j is +inf (collapsed beyond the dtype's resolution), as a number so
        # that it batches and masks like every other series.
        snr_beyond_resolution=m.snr_beyond_resolution.astype(s.stats.sigma_w.dtype),
    )


@eqx.filter_jit
def _metrics(snapshots: Snapshot, lam, rtol: float, accuracy):
    def one(s: Snapshot):
        return metrics_of_snapshot(s, lam, rtol=rtol, accuracy=accuracy)

    # lax.map, not vmap: one save time at a time keeps LAPACK calls unbatched (batched
    # eigendecompositions and solves running concurrently can deadlock XLA:CPU, see _runtime).
    return jax.lax.map(one, snapshots)


@eqx.filter_jit
def one_snapshot_metrics(s: Snapshot, lam, rtol: float, accuracy):
    """`metrics_of_snapshot` compiled once per flow and shape, for a run that computes each
    snapshot's metrics as it goes (`simulate`) instead of all of them at its end."""
    return metrics_of_snapshot(s, lam, rtol=rtol, accuracy=accuracy)


@eqx.filter_jit
def _snr(stats, rtol: float, accuracy):
    from ._metrics import snr_singular_values

    # lax.map, as in `_metrics`: LAPACK calls stay unbatched.
    return jax.lax.map(lambda s: snr_singular_values(s, rtol=rtol, accuracy=accuracy), stats)


def snapshot_metrics(
    snapshots: Snapshot, lam, *, rtol: float = DEFAULT_RTOL, accuracy: float = 0.0
) -> dict[str, np.ndarray]:
    out = jax.device_get(
        _metrics(snapshots, jnp.asarray(lam, float), rtol, jnp.asarray(accuracy, float))
    )
    return {k: np.asarray(out[k]) for k in METRIC_KEYS}
