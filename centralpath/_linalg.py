"""Symmetric positive semi-definite linear algebra with a pinned relative cutoff.

THEORY.md §7½: pseudo-inverses keep the eigen-directions with eigenvalue > rtol·(largest);
directions below (dead ReLU units, collapsed features) drop out instead of blowing up.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

DEFAULT_RTOL = 1e-10


def _kept(s: Float[Array, " p"], rtol: float) -> Bool[Array, " p"]:
    return s > rtol * jnp.max(s, initial=0.0)


def psd_pinv(A: Float[Array, "p p"], rtol: float = DEFAULT_RTOL) -> Float[Array, "p p"]:
    """Pseudo-inverse of a symmetric PSD matrix over eigenvalues > rtol·max."""
    s, V = jnp.linalg.eigh(A)
    keep = _kept(s, rtol)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
    return (V * inv) @ V.T


def psd_inv_sqrt(A: Float[Array, "p p"], rtol: float = DEFAULT_RTOL) -> Float[Array, "p p"]:
    """Symmetric pseudo-inverse square root A^{+1/2} over eigenvalues > rtol·max."""
    s, V = jnp.linalg.eigh(A)
    keep = _kept(s, rtol)
    inv_sqrt = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, s, 1.0)), 0.0)
    return (V * inv_sqrt) @ V.T


def psd_right_solve(
    K: Float[Array, "p p"], R: Float[Array, "C p"], rtol: float = DEFAULT_RTOL
) -> tuple[Float[Array, "C p"], Bool[Array, ""]]:
    """X = R K⁻¹ for symmetric PSD K, by Cholesky; pseudo-inverse fallback when singular.

    Returns `(X, singular)`. A leading principal submatrix of a rank-r matrix is singular past
    size r, so an exactly singular K shows a Cholesky pivot ≈ 0 (or NaN); then X = R K^+ with the
    cutoff rtol, which is the λ → 0 limit of the ridge solution.
    """
    import jax
    import jax.scipy.linalg as jsl

    L = jnp.linalg.cholesky(K)
    pivots = jnp.diagonal(L) ** 2
    scale = jnp.max(jnp.diagonal(K), initial=0.0)
    singular = jnp.logical_or(
        ~jnp.all(jnp.isfinite(L)), jnp.min(pivots, initial=jnp.inf) <= rtol * scale
    )

    def regular(_):
        return jsl.cho_solve((L, True), R.T).T

    def fallback(_):
        return R @ psd_pinv(K, rtol)

    X = jax.lax.cond(singular, fallback, regular, None)
    return X, singular
