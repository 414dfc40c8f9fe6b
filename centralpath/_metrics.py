"""Neural-collapse metrics with pinned conventions (THEORY.md §5, §7, §7½).

One function per metric; named variants where the literature disagrees. All are computed from
`ClassStats` (plus the classifier, or the features for NC4 and CDNV) and are jit/vmap-able.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._errors import InputError
from ._linalg import DEFAULT_RTOL, effective_rtol, psd_inv_sqrt
from ._stats import ClassStats

NC1Variant = Literal["paper", "notebook", "pinv", "trace_ratio"]
NC1_VARIANTS: tuple[str, ...] = ("paper", "notebook", "pinv", "trace_ratio")


def _between_pinv_trace(stats: ClassStats, rtol: float) -> Float[Array, ""]:
    """Tr(Σ_W Σ_B^†) with Σ_B^† over the eigenpairs above rtol·max (the rank of M̄)."""
    s, V = jnp.linalg.eigh(stats.sigma_b)
    keep = s > effective_rtol(rtol, s.dtype) * jnp.max(s)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
    return jnp.sum(inv * jnp.einsum("pk,pq,qk->k", V, stats.sigma_w, V))


def nc1(
    stats: ClassStats, *, variant: NC1Variant = "paper", rtol: float = DEFAULT_RTOL
) -> Float[Array, ""]:
    """Within-class variability relative to between-class (THEORY.md §7).

    - `"paper"` (default): Tr(Σ_W Σ_B^†)/C, Σ_B^† from the eigenpairs above rtol·max.
    - `"notebook"`: Tr(Σ_W Σ_B^†) without the 1/C (the authors' notebook).
    - `"pinv"`: Tr(Σ_W pinv(Σ_B))/C with `jnp.linalg.pinv`'s default cutoff.
    - `"trace_ratio"`: tr Σ_W / tr Σ_B.

    For CDNV use `nc1_cdnv`, which needs the per-class spreads of the features.
    """
    if variant == "paper":
        return _between_pinv_trace(stats, rtol) / stats.num_classes
    if variant == "notebook":
        return _between_pinv_trace(stats, rtol)
    if variant == "pinv":
        return jnp.trace(stats.sigma_w @ jnp.linalg.pinv(stats.sigma_b, hermitian=True)) / (
            stats.num_classes
        )
    if variant == "trace_ratio":
        return jnp.trace(stats.sigma_w) / jnp.trace(stats.sigma_b)
    raise InputError(f"unknown NC1 variant {variant!r}; choose one of {', '.join(NC1_VARIANTS)}")


def nc1_cdnv(
    features: Float[Array, "n p"], labels: Int[Array, " n"], num_classes: int
) -> Float[Array, ""]:
    """Class-distance normalised variance: mean over c ≠ c′ of (σ_c² + σ_c′²) / (2‖μ_c − μ_c′‖²).

    σ_c² = Ave_{i∈c} ‖h_i − μ_c‖² (per-class averages, so it suits imbalanced data as is).
    """
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)
    counts = jnp.sum(one_hot, axis=0)
    means = (one_hot.T @ features) / counts[:, None]
    spread = jnp.sum((features - means[labels]) ** 2, axis=1)
    var = (one_hot.T @ spread) / counts
    dist2 = jnp.sum((means[:, None, :] - means[None, :, :]) ** 2, axis=-1)
    off = ~jnp.eye(num_classes, dtype=bool)
    ratio = (var[:, None] + var[None, :]) / (2.0 * jnp.where(off, dist2, 1.0))
    return jnp.sum(jnp.where(off, ratio, 0.0)) / (num_classes * (num_classes - 1))


def _equinorm(vectors: Float[Array, "C d"]) -> Float[Array, ""]:
    norms = jnp.linalg.norm(vectors, axis=1)
    return jnp.std(norms, ddof=1) / jnp.mean(norms)


def _equiangularity(vectors: Float[Array, "C d"]) -> Float[Array, ""]:
    C = vectors.shape[0]
    unit = vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True)
    cos = unit @ unit.T
    off = ~jnp.eye(C, dtype=bool)
    return jnp.sum(jnp.where(off, jnp.abs(cos + 1.0 / (C - 1)), 0.0)) / (C * (C - 1))


def nc2_equinorm_means(stats: ClassStats) -> Float[Array, ""]:
    """std_c ‖μ_c − μ_G‖ / mean_c ‖μ_c − μ_G‖, std with ddof = 1 (the notebook's)."""
    return _equinorm(stats.centred_means.T)


def nc2_equinorm_classifier(W: Float[Array, "C p"]) -> Float[Array, ""]:
    """std_c ‖w_c‖ / mean_c ‖w_c‖ over the classifier rows (ddof = 1)."""
    return _equinorm(W)


def nc2_equiangular_means(stats: ClassStats) -> Float[Array, ""]:
    """Mean over c ≠ c′ of |cos∠(μ_c − μ_G, μ_c′ − μ_G) + 1/(C−1)|."""
    return _equiangularity(stats.centred_means.T)


def nc2_equiangular_classifier(W: Float[Array, "C p"]) -> Float[Array, ""]:
    """Mean over c ≠ c′ of |cos∠(w_c, w_c′) + 1/(C−1)| (rows not centred)."""
    return _equiangularity(W)


def simplex_etf_gram(num_classes: int) -> Float[Array, "C C"]:
    """P = I_C − (1/C) 1 1ᵀ, the Gram matrix of a simplex ETF up to scale."""
    return jnp.eye(num_classes) - jnp.full((num_classes, num_classes), 1.0 / num_classes)


def etf_distance(stats: ClassStats) -> Float[Array, ""]:
    """‖G/‖G‖_F − P/‖P‖_F‖_F with G = M̄ᵀ M̄ (a variant of NC2)."""
    Mbar = stats.centred_means
    G = Mbar.T @ Mbar
    P = simplex_etf_gram(stats.num_classes).astype(G.dtype)
    return jnp.linalg.norm(G / jnp.linalg.norm(G) - P / jnp.linalg.norm(P))


def nc3(stats: ClassStats, W: Float[Array, "C p"]) -> Float[Array, ""]:
    """Self-duality ‖Wᵀ/‖W‖_F − M̄/‖M̄‖_F‖_F² (squared)."""
    Mbar = stats.centred_means
    return jnp.sum((W.T / jnp.linalg.norm(W) - Mbar / jnp.linalg.norm(Mbar)) ** 2)


def nc4(
    features: Float[Array, "n p"],
    stats: ClassStats,
    W: Float[Array, "C p"],
    b: Float[Array, " C"],
) -> Float[Array, ""]:
    """Fraction of samples where argmax_c (W h + b)_c ≠ argmin_c ‖h − μ_c‖ (nearest class mean)."""
    predicted = jnp.argmax(features @ W.T + b, axis=1)
    M = stats.class_means
    # ‖h − μ_c‖² up to the c-independent ‖h‖².
    dist = -2.0 * features @ M + jnp.sum(M**2, axis=0)
    nearest = jnp.argmin(dist, axis=1)
    return jnp.mean((predicted != nearest).astype(features.dtype))


def snr_matrix(stats: ClassStats, *, rtol: float = DEFAULT_RTOL) -> Float[Array, "p C"]:
    """Ω = Σ_W^{-1/2} M̄, with Σ_W^{-1/2} the pseudo-inverse square root above rtol·max."""
    return psd_inv_sqrt(stats.sigma_w, rtol) @ stats.centred_means


def snr_singular_values(stats: ClassStats, *, rtol: float = DEFAULT_RTOL) -> Float[Array, " Cm1"]:
    """The C − 1 largest singular values ω_1 ≥ … ≥ ω_{C−1} of Ω = Σ_W^{-1/2} M̄ (THEORY.md §5).

    Invariant under any invertible affine map of the features. Directions where Σ_W vanishes
    (dead units) drop out; if Σ_W is zero altogether the features are collapsed and every
    ω_j with a non-zero class-mean direction is +inf.
    """
    C = stats.num_classes
    omega = jnp.linalg.svd(snr_matrix(stats, rtol=rtol), compute_uv=False)[: C - 1]
    mbar_sv = jnp.linalg.svd(stats.centred_means, compute_uv=False)[: C - 1]
    sw_max = jnp.max(jnp.linalg.eigvalsh(stats.sigma_w))
    # Exactly collapsed features still leave rounding in Σ_W of order (eps·‖h‖)², and ‖h‖ is set
    # by the uncentred means: a far-away global mean must not turn +inf into 1e15.
    scale = jnp.maximum(jnp.max(jnp.linalg.norm(stats.class_means, axis=0)), jnp.max(mbar_sv))
    collapsed = sw_max <= (16 * jnp.finfo(stats.sigma_w.dtype).eps * scale) ** 2
    return jnp.where(collapsed & (mbar_sv > DEFAULT_RTOL * jnp.max(mbar_sv)), jnp.inf, omega)


def renormalised_features(
    features: Float[Array, "n p"], stats: ClassStats, *, rtol: float = DEFAULT_RTOL
) -> Float[Array, "n p"]:
    """X = Σ_W^{-1/2}(H − μ_G 1ᵀ): features with Σ_W(X) = I (THEORY.md §5)."""
    return (features - stats.global_mean) @ psd_inv_sqrt(stats.sigma_w, rtol)


class CollapseMetrics(eqx.Module):
    """NC1–NC3 and the SNR singular values of one state; classifier fields are None without W."""

    nc1: Float[Array, ""]
    nc2_equinorm_means: Float[Array, ""]
    nc2_equiangular_means: Float[Array, ""]
    etf_distance: Float[Array, ""]
    snr: Float[Array, " Cm1"]
    nc2_equinorm_classifier: Float[Array, ""] | None = None
    nc2_equiangular_classifier: Float[Array, ""] | None = None
    nc3: Float[Array, ""] | None = None


def collapse_metrics(
    stats: ClassStats, W: Float[Array, "C p"] | None = None, *, rtol: float = DEFAULT_RTOL
) -> CollapseMetrics:
    """All statistics-based neural-collapse metrics at once (the defaults of THEORY.md §7)."""
    return CollapseMetrics(
        nc1=nc1(stats, rtol=rtol),
        nc2_equinorm_means=nc2_equinorm_means(stats),
        nc2_equiangular_means=nc2_equiangular_means(stats),
        etf_distance=etf_distance(stats),
        snr=snr_singular_values(stats, rtol=rtol),
        nc2_equinorm_classifier=None if W is None else nc2_equinorm_classifier(W),
        nc2_equiangular_classifier=None if W is None else nc2_equiangular_classifier(W),
        nc3=None if W is None else nc3(stats, W),
    )
