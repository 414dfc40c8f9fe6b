"""F1: gradient flow of the unconstrained-features model, on samples and on moments (F4)."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._stats import ClassStats, _class_stats
from .._ufm import UFMState, ufm_loss
from ._base import AbstractFlow, deviation_rate, deviation_step, least_squares_residual


class UFMFlow(AbstractFlow):
    """d(W, b, H)/dt = −∇ L_UFM on every sample (docs/theory.md §6 F1).

    **Fields:** `labels` [n]; `num_classes` C; ridges `lam_W`, `lam_H`, `lam_b` ≥ 0; `bias`
    (False freezes b at its initial value, normally 0).
    """

    labels: Int[Array, " n"]
    num_classes: int = eqx.field(static=True)
    lam_W: float = 0.0
    lam_H: float = 0.0
    lam_b: float = 0.0
    bias: bool = eqx.field(static=True, default=True)

    name: ClassVar[str] = "ufm"
    reduced: ClassVar[bool] = False

    def __call__(self, t, y: UFMState, args=None) -> UFMState:
        g = jax.grad(self.objective)(y)
        db = -g.b if self.bias else jnp.zeros_like(y.b)
        return UFMState(-g.W, db, -g.H)

    def objective(self, y: UFMState):
        return ufm_loss(y, self.labels, self.num_classes, self.lam_W, self.lam_H, self.lam_b)

    def class_stats(self, y: UFMState) -> ClassStats:
        return _class_stats(y.H, self.labels, self.num_classes)

    def classifier(self, y: UFMState):
        return y.W, y.b

    def features(self, y: UFMState):
        return y.H

    @property
    def decomposition_lambda(self):
        return self.lam_W


class ReducedUFMState(eqx.Module):
    """(W, b) and the class statistics of H: the UFM state up to the within-class frame."""

    W: Float[Array, "C p"]
    b: Float[Array, " C"]
    stats: ClassStats

    @classmethod
    def from_state(cls, state: UFMState, labels, num_classes: int) -> ReducedUFMState:
        return cls(state.W, state.b, _class_stats(state.H, labels, num_classes))

    @classmethod
    def draw(
        cls,
        key,
        num_classes: int,
        per_class: int,
        dim: int,
        *,
        mean_scale=1.0,
        noise_scale=1.0,
        weight_scale=1.0,
        dtype=None,
    ) -> ReducedUFMState:
        """The reduced state of a random UFM state (`init_ufm`), drawn directly from the
        distribution of its class statistics (`draw_class_stats`: sample means and a Wishart
        Σ_W), in O(p³) work whatever the number of samples. The key is split as `init_ufm`
        splits it, so W and the centres μ_c are the ones `init_ufm` draws from the same key;
        the sampling noise is a different draw from the same distribution. Forming the
        statistics from an n × p draw instead cost 2 n p² flop: most of `simulate`'s start-up
        at C = 10, N = 5,000, p = 512.
        """
        from .._ufm import draw_class_stats

        dtype = dtype or jnp.result_type(float)
        C, p = num_classes, dim
        k_h, k_w = jax.random.split(key)
        stats = draw_class_stats(
            k_h, C, per_class, p, mean_scale=mean_scale, noise_scale=noise_scale, dtype=dtype
        )
        W = weight_scale * jax.random.normal(k_w, (C, p), dtype) / jnp.sqrt(p)
        return cls(W, jnp.zeros(C, dtype), stats)


class ReducedUFMFlow(AbstractFlow):
    """F1 closed on moments (docs/theory.md §6 F4): cost independent of the number of samples.

    With R = W M + b 1ᵀ − I, B = (1/n) WᵀW + λ_H I, π = counts/n:

        dM/dt = −(1/n) Wᵀ R − λ_H M,        dΣ_W/dt = −(B Σ_W + Σ_W B)
        dW/dt = −(W Σ_W + R diag(π) Mᵀ) − λ_W W,    db/dt = −R π − λ_b b

    `gd_step` is exact: the deviations move as ε ↦ (I − ηB) ε, so Σ_W ↦ (I − ηB) Σ_W (I − ηB)ᵀ.
    """

    lam_W: float = 0.0
    lam_H: float = 0.0
    lam_b: float = 0.0
    bias: bool = eqx.field(static=True, default=True)

    name: ClassVar[str] = "ufm"
    reduced: ClassVar[bool] = True

    def _rates(self, y: ReducedUFMState, G=None):
        """(dW, db, dM); `G` = W Σ_W when the caller has it (the only use of Σ_W here)."""
        s = y.stats
        n = s.n
        G = y.W @ s.sigma_w if G is None else G
        R = least_squares_residual(s, y.W, y.b)
        dM = -(1.0 / n) * (y.W.T @ R) - self.lam_H * s.class_means
        dW = -(G + (R * s.priors) @ s.class_means.T) - self.lam_W * y.W
        db = -(R @ s.priors) - self.lam_b * y.b if self.bias else jnp.zeros_like(y.b)
        return dW, db, dM

    # The structure the low-rank Runge–Kutta step (`centralpath._integrate`) uses: Σ_W enters
    # every other rate only through G = W Σ_W, and its own rate is −(B Σ_W + Σ_W B) with
    # B = (1/n) WᵀW + λ_H I, so dΣ_W = −(1/n)(WᵀG + GᵀW) − 2 λ_H Σ_W: a multiple of Σ_W plus a
    # rank-2C term.

    @staticmethod
    def sigma_of(y: ReducedUFMState):
        """Where the state keeps Σ_W (for `eqx.tree_at`)."""
        return y.stats.sigma_w

    def congruence(self, y: ReducedUFMState):
        """(W, 1/n, λ_H): dΣ_W = −scale·(WᵀG + GᵀW) − 2 λ_H Σ_W with G = W Σ_W."""
        return y.W, 1.0 / y.stats.n, self.lam_H

    def rates_given(self, y: ReducedUFMState, G) -> ReducedUFMState:
        """The vector field at y, given G = W Σ_W, for every leaf but Σ_W: y holds None in
        Σ_W's place (`eqx.tree_at(flow.sigma_of, y, None)`) and so does the result."""
        dW, db, dM = self._rates(y, G)
        return eqx.tree_at(
            lambda r: (r.W, r.b, r.stats.counts, r.stats.class_means),
            y,
            (dW, db, jnp.zeros_like(y.stats.counts), dM),
        )

    def __call__(self, t, y: ReducedUFMState, args=None) -> ReducedUFMState:
        dW, db, dM = self._rates(y)
        s = y.stats
        d_sigma = -deviation_rate(y.W, s.n, self.lam_H, s.sigma_w)
        d_stats = ClassStats(jnp.zeros_like(s.counts), dM, d_sigma)
        return ReducedUFMState(dW, db, d_stats)

    def gd_step(self, y: ReducedUFMState, eta) -> ReducedUFMState:
        dW, db, dM = self._rates(y)
        s = y.stats
        sigma = deviation_step(y.W, s.n, self.lam_H, eta, s.sigma_w)
        stats = ClassStats(s.counts, s.class_means + eta * dM, sigma)
        return ReducedUFMState(y.W + eta * dW, y.b + eta * db, stats)

    def objective(self, y: ReducedUFMState):
        s = y.stats
        R = least_squares_residual(s, y.W, y.b)
        fit = 0.5 * jnp.sum((y.W @ s.sigma_w) * y.W) + 0.5 * jnp.sum(s.priors * jnp.sum(R**2, 0))
        # ‖H‖² = n tr(Ave h hᵀ) = n (tr Σ_W + Σ_c π_c ‖μ_c‖²).
        h2 = s.n * (jnp.trace(s.sigma_w) + jnp.sum(s.priors * jnp.sum(s.class_means**2, 0)))
        return (
            fit
            + 0.5 * self.lam_W * jnp.sum(y.W**2)
            + 0.5 * self.lam_H * h2
            + 0.5 * self.lam_b * jnp.sum(y.b**2)
        )

    def class_stats(self, y: ReducedUFMState) -> ClassStats:
        return y.stats

    def classifier(self, y: ReducedUFMState):
        return y.W, y.b

    @property
    def decomposition_lambda(self):
        return self.lam_W
