"""The simplex equiangular tight frame and the global minimum of the UFM (docs/theory.md §1, §6 F1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._errors import require
from ._float64 import float64


@float64
def simplex_etf(
    num_classes: int, dim: int, *, key: PRNGKeyArray | None = None, scale: float = 1.0
) -> Float[Array, "p C"]:
    """C unit vectors in R^p (times `scale`) with pairwise cosine −1/(C−1), centred.

    M̄ = √(C/(C−1)) U Bᵀ with B an orthonormal basis of 1^⊥ ⊂ R^C and U [p, C−1] orthonormal
    (the first C−1 coordinate axes, or a random frame when `key` is given). Then
    M̄ᵀ M̄ = (C/(C−1)) P and M̄ 1 = 0. Needs p ≥ C − 1.
    """
    require(num_classes >= 2, f"a simplex ETF needs at least 2 classes, got {num_classes}")
    require(
        dim >= num_classes - 1,
        f"a simplex ETF of {num_classes} classes needs dimension p >= C-1 = {num_classes - 1}, "
        f"got p = {dim}; raise p",
    )
    C = num_classes
    # Orthonormal basis of 1^⊥: QR of the centring matrix's first C−1 columns.
    P = np.eye(C) - 1.0 / C
    B, _ = np.linalg.qr(P[:, : C - 1])
    if key is None:
        U = jnp.eye(dim, C - 1)
    else:
        U, _ = jnp.linalg.qr(jax.random.normal(key, (dim, C - 1)))
    return scale * np.sqrt(C / (C - 1)) * U @ jnp.asarray(B).T


@float64
def collapsed_features(
    class_means: Float[Array, "p C"], per_class: int
) -> tuple[Float[Array, "n p"], Int[Array, " n"]]:
    """Features that have collapsed exactly onto `class_means`: each mean repeated N times."""
    C = class_means.shape[1]
    labels = jnp.repeat(jnp.arange(C), per_class)
    return class_means.T[labels], labels


@float64
def ufm_threshold(per_class: int, lam_W, lam_H) -> Float[Array, ""]:
    """τ = √(N λ_W λ_H): the nuclear-norm weight of the UFM's two ridge penalties."""
    return jnp.sqrt(per_class * lam_W * lam_H)


@float64
def ufm_global_minimum(num_classes: int, per_class: int, lam_W, lam_H) -> Float[Array, ""]:
    """Global minimum of L_UFM, balanced, free bias with λ_b = 0 (docs/theory.md §6 F1).

    min over W H = Z of (λ_W/2)‖W‖² + (λ_H/2)‖H‖² is τ‖Z‖_* with τ = √(Nλ_Wλ_H), so the problem is
    nuclear-norm soft-thresholding of P at level Cτ: value (C−1)τ(1 − Cτ/2) with W H̄ = (1 − Cτ)P
    when Cτ < 1, else the zero solution with value (C−1)/(2C).
    """
    C = num_classes
    tau = ufm_threshold(per_class, lam_W, lam_H)
    return jnp.where(C * tau < 1.0, (C - 1) * tau * (1.0 - C * tau / 2.0), (C - 1) / (2.0 * C))


@float64
def ufm_collapsed_logits(num_classes: int, per_class: int, lam_W, lam_H) -> Float[Array, "C C"]:
    """W M̄ at the UFM global minimiser: (1 − Cτ)₊ P."""
    tau = ufm_threshold(per_class, lam_W, lam_H)
    P = jnp.eye(num_classes) - 1.0 / num_classes
    return jnp.maximum(1.0 - num_classes * tau, 0.0) * P
