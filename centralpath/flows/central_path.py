"""F2: the central-path flow — features move, the classifier is always least-squares optimal."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._least_squares import least_squares_classifier
from .._loss import mse_loss
from .._stats import ClassStats, _class_stats
from ._base import AbstractFlow, check_live, deviation_rate, deviation_step, least_squares_residual


class CentralPathFlow(AbstractFlow):
    """dh_{i,c}/dt = −(1/n) W_LSᵀ (W_LS h_{i,c} + b_LS − y_c) − λ_H h_{i,c} (docs/theory.md §4, F2).

    W̃_LS = W̃_LS(H) is recomputed at every evaluation; by the envelope theorem this is the
    gradient of L_LS(H) = min_W̃ L(W̃, H).

    **Fields:** `labels` [n]; `num_classes`; `lam` the classifier's ridge λ ≥ 0; `lam_H` an
    optional feature decay; `bias` whether the classifier has a bias.
    """

    labels: Int[Array, " n"]
    num_classes: int = eqx.field(static=True)
    lam: float = 0.0
    lam_H: float = 0.0
    bias: bool = eqx.field(static=True, default=True)

    name: ClassVar[str] = "central-path"
    reduced: ClassVar[bool] = False

    def class_stats(self, y: Float[Array, "n p"]) -> ClassStats:
        return _class_stats(y, self.labels, self.num_classes)

    def check_state(self, y) -> None:
        if (
            isinstance(self.lam, int | float) and self.lam == 0
        ):  # a ridge keeps the least-squares system regular
            check_live(self.class_stats(y), "central-path")

    def classifier(self, y):
        ls = least_squares_classifier(
            self.class_stats(y), self.lam, bias=self.bias, pinv_fallback=False
        )
        return ls.W, ls.b

    def __call__(self, t, y: Float[Array, "n p"], args=None):
        W, b = self.classifier(y)
        Y = jax.nn.one_hot(self.labels, self.num_classes, dtype=y.dtype)
        residual = y @ W.T + b - Y
        return -(residual @ W) / y.shape[0] - self.lam_H * y

    def objective(self, y):
        W, b = self.classifier(y)
        return mse_loss(y, self.labels, W, b, self.lam) + 0.5 * self.lam_H * jnp.sum(y**2)

    def features(self, y):
        return y

    @property
    def decomposition_lambda(self):
        return self.lam


class ReducedCentralPathFlow(AbstractFlow):
    """F2 closed on the class statistics (docs/theory.md §6 F4); the state is a `ClassStats`.

    With W̃_LS = W̃_LS(stats), R = W_LS M + b_LS 1ᵀ − I and B = (1/n) W_LSᵀ W_LS + λ_H I:

        dM/dt = −(1/n) W_LSᵀ R − λ_H M,       dΣ_W/dt = −(B Σ_W + Σ_W B)

    For λ = 0 (and λ_H = 0) the global mean is conserved and this is the paper's
    dM̄/dt = −(1/n) W_LSᵀ(W_LS M̄ − P); for λ > 0 the LS bias is shrunk and μ_G drifts, which the
    uncentred M tracks exactly. `gd_step` is exact: Σ_W ↦ (I − ηB) Σ_W (I − ηB)ᵀ.
    """

    lam: float = 0.0
    lam_H: float = 0.0
    bias: bool = eqx.field(static=True, default=True)

    name: ClassVar[str] = "central-path"
    reduced: ClassVar[bool] = True

    def class_stats(self, y: ClassStats) -> ClassStats:
        return y

    def check_state(self, y: ClassStats) -> None:
        if isinstance(self.lam, int | float) and self.lam == 0:
            check_live(y, "central-path")

    def classifier(self, y: ClassStats):
        ls = least_squares_classifier(y, self.lam, bias=self.bias, pinv_fallback=False)
        return ls.W, ls.b

    def _rates(self, y: ClassStats):
        W, b = self.classifier(y)
        R = least_squares_residual(y, W, b)
        dM = -(1.0 / y.n) * (W.T @ R) - self.lam_H * y.class_means
        return dM, W

    def __call__(self, t, y: ClassStats, args=None) -> ClassStats:
        dM, W = self._rates(y)
        d_sigma = -deviation_rate(W, y.n, self.lam_H, y.sigma_w)
        return ClassStats(jnp.zeros_like(y.counts), dM, d_sigma)

    def gd_step(self, y: ClassStats, eta) -> ClassStats:
        dM, W = self._rates(y)
        sigma = deviation_step(W, y.n, self.lam_H, eta, y.sigma_w)
        return ClassStats(y.counts, y.class_means + eta * dM, sigma)

    def objective(self, y: ClassStats):
        from .._loss import mse_loss_from_stats

        W, b = self.classifier(y)
        h2 = y.n * (jnp.trace(y.sigma_w) + jnp.sum(y.priors * jnp.sum(y.class_means**2, 0)))
        return mse_loss_from_stats(y, W, b, self.lam) + 0.5 * self.lam_H * h2

    @property
    def decomposition_lambda(self):
        return self.lam
