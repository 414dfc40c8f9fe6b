"""F3: the continually renormalised central-path flow (the paper's), and F3′ for contrast.

The state lives on the manifold Σ_W(X) = I of renormalised features (docs/theory.md §5, §6 F3). The
central-path gradient is projected onto the tangent space of that manifold; its within-class
part, (1/n) W_LSᵀ W_LS ε, is of the form (symmetric)·ε and so lies entirely in the normal space:
within-class deviations freeze and only the class means move. F3′ instead takes the plain
gradient and re-whitens all of X − μ_G, which adds A(X − μ_G) to the velocity.

Both assume λ = 0, a bias, and a state with Σ_W = I (start from `renormalised_features`, which
also drops dead directions); `integrate` and `gradient_descent` refuse other states.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._least_squares import least_squares_classifier
from .._linalg import psd_inv_sqrt
from .._loss import mse_loss, mse_loss_from_stats
from .._stats import ClassStats, _class_stats
from ._base import AbstractFlow, check_live, least_squares_residual


def check_renormalised(stats: ClassStats) -> None:
    """The renormalised flows live on Σ_W = I (docs/theory.md §6 F3): refuse other states."""
    import numpy as np

    from .._errors import InputError, is_concrete

    check_live(stats, "renormalised")
    if not is_concrete(stats.sigma_w):
        return
    sigma_w = np.asarray(stats.sigma_w, dtype=float)
    off = float(np.max(np.abs(sigma_w - np.eye(sigma_w.shape[0]))))
    if not off <= 1e-6:
        raise InputError(
            f"the renormalised flows start from Sigma_W = I, but this state's Sigma_W differs "
            f"from I by {off:.3g}; start from cp.renormalised_features(features, stats)"
        )


def _class_average(V, labels, num_classes):
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=V.dtype)
    return (one_hot.T @ V) / jnp.sum(one_hot, axis=0)[:, None]


def solve_lyapunov_sym(sigma: Float[Array, "p p"], K: Float[Array, "p p"]) -> Float[Array, "p p"]:
    """The symmetric S with S Σ + Σ S = K, for symmetric positive-definite Σ (eigenbasis of Σ)."""
    s, Q = jnp.linalg.eigh(sigma)
    K_tilde = Q.T @ K @ Q
    return Q @ (K_tilde / (s[:, None] + s[None, :])) @ Q.T


class RenormalisedFlow(AbstractFlow):
    """F3 (`project=True`, the paper's flow) or F3′ (`project=False`) on every sample.

    With V = −∇L_LS (per sample), ε the within-class deviations, V_w the within-class part of V
    and K = Ave(V_w εᵀ + ε V_wᵀ) (the rate Σ_W would have):

    - F3: dX/dt = V − S ε, S Σ_W + Σ_W S = K (orthogonal projection onto the tangent space of
      {Σ_W = const}; the Euclidean normal space is {S ε : S symmetric}).
    - F3′: dX/dt = V − ½ K (X − μ_G) (the derivative of re-whitening at Σ_W = I).
    """

    labels: Int[Array, " n"]
    num_classes: int = eqx.field(static=True)
    project: bool = eqx.field(static=True, default=True)

    name: ClassVar[str] = "renormalised"
    reduced: ClassVar[bool] = False

    def class_stats(self, y) -> ClassStats:
        return _class_stats(y, self.labels, self.num_classes)

    def check_state(self, y) -> None:
        check_renormalised(self.class_stats(y))

    def classifier(self, y):
        ls = least_squares_classifier(self.class_stats(y), 0.0, pinv_fallback=False)
        return ls.W, ls.b

    def _gradient_velocity(self, y):
        """V = −∇L_LS per sample (the central-path velocity, F2) and the class statistics."""
        stats = self.class_stats(y)
        ls = least_squares_classifier(stats, 0.0, pinv_fallback=False)
        Y = jax.nn.one_hot(self.labels, self.num_classes, dtype=y.dtype)
        return -((y @ ls.W.T + ls.b - Y) @ ls.W) / y.shape[0], stats

    def __call__(self, t, y: Float[Array, "n p"], args=None):
        V, stats = self._gradient_velocity(y)
        eps = y - stats.class_means.T[self.labels]
        V_w = V - _class_average(V, self.labels, self.num_classes)[self.labels]
        K = (V_w.T @ eps + eps.T @ V_w) / y.shape[0]
        if self.project:
            S = solve_lyapunov_sym(stats.sigma_w, K)
            return V - eps @ S
        return V - 0.5 * (y - stats.global_mean) @ K

    def gd_step(self, y, eta):
        """The discrete flows: F3 takes an Euler step of the projected velocity and re-whitens the
        within-class deviations (the retraction to Σ_W = I); F3′ takes a plain gradient step and
        re-whitens all of X − μ_G (docs/theory.md §6 F3′)."""
        if self.project:
            x = y + eta * self(0.0, y, None)
            stats = self.class_stats(x)
            means = stats.class_means.T[self.labels]
            return means + (x - means) @ psd_inv_sqrt(stats.sigma_w)
        x = y + eta * self._gradient_velocity(y)[0]
        stats = self.class_stats(x)
        mu = stats.global_mean
        return mu + (x - mu) @ psd_inv_sqrt(stats.sigma_w)

    def objective(self, y):
        W, b = self.classifier(y)
        return mse_loss(y, self.labels, W, b, 0.0)

    def features(self, y):
        return y


class ReducedRenormalisedFlow(AbstractFlow):
    """F3/F3′ on the class statistics; Σ_W ≡ I is carried along unchanged.

    - F3: dM/dt = −(1/n) W_LSᵀ R, the paper's dM̄/dt = −(1/n) W_LSᵀ (W_LS M̄ − P).
    - F3′: dM/dt = −(1/n) W_LSᵀ R + A M̄ with A = (1/n) W_LSᵀ W_LS, i.e. dM̄/dt = (1/n) W_LSᵀ.

    `gd_step` is the exact discrete step: F3 moves the means by −η∇ (deviations re-whiten back to
    themselves); F3′ re-whitens by ((I − ηA)²)^{-1/2} = (I − ηA)⁻¹.
    """

    project: bool = eqx.field(static=True, default=True)

    name: ClassVar[str] = "renormalised"
    reduced: ClassVar[bool] = True

    def class_stats(self, y: ClassStats) -> ClassStats:
        return y

    def check_state(self, y: ClassStats) -> None:
        check_renormalised(y)

    def classifier(self, y: ClassStats):
        ls = least_squares_classifier(y, 0.0, pinv_fallback=False)
        return ls.W, ls.b

    def _gradient_means(self, y: ClassStats):
        W, b = self.classifier(y)
        return (1.0 / y.n) * (W.T @ least_squares_residual(y, W, b)), W

    def __call__(self, t, y: ClassStats, args=None) -> ClassStats:
        G, W = self._gradient_means(y)
        dM = -G
        if not self.project:
            dM = dM + ((1.0 / y.n) * (W.T @ W)) @ y.centred_means
        return ClassStats(jnp.zeros_like(y.counts), dM, jnp.zeros_like(y.sigma_w))

    def gd_step(self, y: ClassStats, eta) -> ClassStats:
        G, W = self._gradient_means(y)
        M = y.class_means - eta * G
        if not self.project:
            mu = y.global_mean  # conserved: the mean gradient vanishes at λ = 0
            T = jnp.eye(y.dim, dtype=W.dtype) - (eta / y.n) * (W.T @ W)
            M = mu[:, None] + jnp.linalg.solve(T, M - mu[:, None])
        return ClassStats(y.counts, M, y.sigma_w)

    def objective(self, y: ClassStats):
        W, b = self.classifier(y)
        return mse_loss_from_stats(y, W, b, 0.0)
