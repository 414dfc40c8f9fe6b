"""The ridge least-squares classifier of fixed features (docs/theory.md §2)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._errors import check_lambda
from ._float64 import float64
from ._linalg import DEFAULT_RTOL, psd_right_solve
from ._repr import numeric_repr
from ._stats import ClassStats


class LeastSquaresClassifier(eqx.Module):
    """W̃_LS = [W_LS, b_LS] and whether its normal matrix was singular (pseudo-inverse used)."""

    def __repr__(self) -> str:  # numbers, not Equinox's dtype-and-shape summaries
        return numeric_repr(self)

    W: Float[Array, "C p"]
    b: Float[Array, " C"]
    singular: Bool[Array, ""]


@float64
def least_squares_classifier(
    stats: ClassStats,
    lam=0.0,
    *,
    bias: bool = True,
    rtol: float = DEFAULT_RTOL,
    pinv_fallback: bool = True,
) -> LeastSquaresClassifier:
    """Minimiser of L(W, b) = ½ Ave ‖W h + b − y‖² + (λ/2)(‖W‖² + ‖b‖²) for fixed features.

    docs/theory.md §2, in the un-augmented (centred) form, which is better conditioned than the
    augmented normal equations when ‖μ_G‖ is large. For any class frequencies π_c = n_c/n
    (π = 1/C when balanced):

        W_LS (Σ_T + λ/(1+λ) μ_G μ_Gᵀ + λI) = diag(π) Mᵀ − π μ_Gᵀ/(1+λ)
        b_LS = (π − W_LS μ_G)/(1+λ)

    With `bias=False` b ≡ 0 and W_LS (Ave h hᵀ + λI) = diag(π) Mᵀ.

    **Arguments:**

    - `stats`: class statistics of the features.
    - `lam`: ridge λ ≥ 0 (the paper's scale, §2).
    - `bias`: whether the classifier has a bias.
    - `rtol`: relative eigenvalue cutoff of the pseudo-inverse used when the normal matrix is
      singular (λ = 0 with p > n − 1, dead units, collapsed features).
    - `pinv_fallback`: use the pseudo-inverse when singular (False: plain solve, for flows).

    **Returns:** a `LeastSquaresClassifier`; its `singular` flag says the pseudo-inverse
    (minimum-norm, the λ → 0⁺ limit) was used.
    """
    lam = check_lambda(lam, "the ridge lambda")
    return _least_squares(stats, lam, bias, rtol, pinv_fallback)


@eqx.filter_jit
def _least_squares(stats: ClassStats, lam, bias: bool, rtol: float, pinv_fallback: bool):
    # Jitted so that eager callers do not re-trace the solve's branches on every call.
    pi = stats.priors
    mu = stats.global_mean
    eye = jnp.eye(stats.dim, dtype=stats.sigma_w.dtype)
    if bias:
        shrink = 1.0 / (1.0 + lam)
        K = stats.sigma_t + (lam * shrink) * jnp.outer(mu, mu) + lam * eye
        R = pi[:, None] * stats.class_means.T - shrink * jnp.outer(pi, mu)
        W, singular = psd_right_solve(K, R, rtol, pinv_fallback=pinv_fallback)
        b = shrink * (pi - W @ mu)
    else:
        K = stats.second_moment + lam * eye
        R = pi[:, None] * stats.class_means.T
        W, singular = psd_right_solve(K, R, rtol, pinv_fallback=pinv_fallback)
        b = jnp.zeros_like(pi)
    return LeastSquaresClassifier(W, b, singular)
