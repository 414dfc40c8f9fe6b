"""Metrics that a trajectory needs at every solver step, computed from the moments cheaply.

NC1 (paper) = Tr(Σ_W Σ_B^†)/C (docs/theory.md §7). Σ_B = (1/C) M̄ M̄ᵀ has rank ≤ C − 1, so its
pseudo-inverse lives in the span of the C centred means: with M̄ᵀ M̄ = V diag(s) Vᵀ (C×C), the
eigenvectors of Σ_B are u_k = M̄ v_k / √s_k with eigenvalues s_k / C, and

    NC1 = Σ_k [v_kᵀ (M̄ᵀ Σ_W M̄) v_k] / s_k²      over s_k > rtol · max s

— O(C p² + C³) instead of the O(p³) eigendecomposition of the p×p Σ_B (`_metrics.nc1`, equal to
rounding, with the same relative cutoff). At C = 10, p = 512 that is the difference between an
NC1 stopping test that costs nothing and one that dominates every step of a reduced flow.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._linalg import DEFAULT_RTOL, effective_rtol
from ._stats import ClassStats


def nc1_from_gram(stats: ClassStats, rtol: float = DEFAULT_RTOL) -> Float[Array, ""]:
    """NC1 in its paper variant (module docstring); jit/vmap-able."""
    Mbar = stats.centred_means
    s, V = jnp.linalg.eigh(Mbar.T @ Mbar)
    keep = s > effective_rtol(rtol, s.dtype) * jnp.max(s)
    A = Mbar.T @ (stats.sigma_w @ Mbar)
    # Each v_kᵀ A v_k is a variance along u_k (≥ 0): rounding is clamped, as `_metrics.nc1` does.
    within = jnp.maximum(jnp.einsum("ck,cd,dk->k", V, A, V), 0.0)
    return jnp.sum(jnp.where(keep, within / jnp.where(keep, s, 1.0) ** 2, 0.0))


__all__ = ["nc1_from_gram"]
