"""Neural-collapse metrics with pinned conventions (docs/theory.md §5, §7, §7½).

One function per metric; named variants where the literature disagrees. All are computed from
`ClassStats` (plus the classifier, or the features for NC4 and CDNV) and are jit/vmap-able.
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._errors import InputError, is_concrete, require
from ._float64 import float64
from ._linalg import DEFAULT_RTOL, effective_rtol, live_frame_whitening, live_whitening
from ._repr import numeric_repr
from ._stats import ClassStats

NC1Variant = Literal["paper", "notebook", "pinv", "trace_ratio"]
NC1_VARIANTS: tuple[str, ...] = ("paper", "notebook", "pinv", "trace_ratio")


def _between_pinv_trace(stats: ClassStats, rtol: float) -> Float[Array, ""]:
    """Tr(Σ_W Σ_B^†) with Σ_B^† over the eigenpairs of Σ_B above rtol·max (the rank of M̄).

    Σ_B = (1/C) M̄ M̄ᵀ has rank ≤ C − 1: from the thin SVD M̄ = U diag(s) Vᵀ (p×C) its eigenpairs
    are (s_k²/C, u_k), so Σ_B^† = Σ_k (C/s_k²) u_k u_kᵀ and Tr(Σ_W Σ_B^†) = C Σ_k u_kᵀ Σ_W u_k / s_k²
    — O(p² C), no p×p eigendecomposition (~25 ms at p = 512). The cut-off is the pseudo-inverse
    rule of `_linalg.psd_pinv` applied to Σ_B: keep s_k²/C > rtol·max_k s_k²/C, i.e.
    s_k² > rtol·max s². Σ_B's null space, which an eigendecomposition of the p×p matrix returns as
    eigenvalues of ±eps·λ_max, comes out of the SVD as s ~ eps·s_max (s² ~ eps²·s_max²): cut
    either way.
    """
    U, s, _ = jnp.linalg.svd(stats.centred_means, full_matrices=False)
    s2 = s**2
    keep = s2 > effective_rtol(rtol, s.dtype) * jnp.max(s2)
    inv = jnp.where(keep, stats.num_classes / jnp.where(keep, s2, 1.0), 0.0)
    # Each u_kᵀ Σ_W u_k is a variance (≥ 0); rounding can make a collapsed one a tiny negative
    # number (NC1 = −1e-60 was printed), so clamp each at 0.
    within = jnp.maximum(jnp.sum(U * (stats.sigma_w @ U), axis=0), 0.0)
    return jnp.sum(inv * within)


@float64
def nc1(
    stats: ClassStats, *, variant: NC1Variant = "paper", rtol: float = DEFAULT_RTOL
) -> Float[Array, ""]:
    """Within-class variability relative to between-class (docs/theory.md §7).

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
        # A trace of a product of PSD matrices: ≥ 0 but for rounding, which is clamped.
        trace = jnp.trace(stats.sigma_w @ jnp.linalg.pinv(stats.sigma_b, hermitian=True))
        return jnp.maximum(trace, 0.0) / stats.num_classes
    if variant == "trace_ratio":
        return jnp.maximum(jnp.trace(stats.sigma_w), 0.0) / jnp.trace(stats.sigma_b)
    raise InputError(f"unknown NC1 variant {variant!r}; choose one of {', '.join(NC1_VARIANTS)}")


@float64
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


def _scale_free(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """x times the power of two that brings its largest entry into [0.5, 1): exact, so a
    scale-invariant metric gives the same bits, and its norms cannot overflow (a classifier
    stored at 1e300 gave NC3 = 1 for 0.31) or underflow whatever the scale of x."""
    _, exponent = jnp.frexp(jnp.max(jnp.abs(x)))
    return jnp.ldexp(x, -exponent)


def _equinorm(vectors: Float[Array, "C d"]) -> Float[Array, ""]:
    vectors = _scale_free(vectors)
    norms = jnp.linalg.norm(vectors, axis=1)
    return jnp.std(norms, ddof=1) / jnp.mean(norms)


def _equiangularity(vectors: Float[Array, "C d"]) -> Float[Array, ""]:
    C = vectors.shape[0]
    vectors = _scale_free(vectors)
    unit = vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True)
    cos = unit @ unit.T
    off = ~jnp.eye(C, dtype=bool)
    return jnp.sum(jnp.where(off, jnp.abs(cos + 1.0 / (C - 1)), 0.0)) / (C * (C - 1))


@float64
def nc2_equinorm_means(stats: ClassStats) -> Float[Array, ""]:
    """std_c ‖μ_c − μ_G‖ / mean_c ‖μ_c − μ_G‖, std with ddof = 1 (the notebook's)."""
    return _equinorm(stats.centred_means.T)


@float64
def nc2_equinorm_classifier(W: Float[Array, "C p"]) -> Float[Array, ""]:
    """std_c ‖w_c‖ / mean_c ‖w_c‖ over the classifier rows (ddof = 1)."""
    return _equinorm(W)


@float64
def nc2_equiangular_means(stats: ClassStats) -> Float[Array, ""]:
    """Mean over c ≠ c′ of |cos∠(μ_c − μ_G, μ_c′ − μ_G) + 1/(C−1)|."""
    return _equiangularity(stats.centred_means.T)


@float64
def nc2_equiangular_classifier(W: Float[Array, "C p"]) -> Float[Array, ""]:
    """Mean over c ≠ c′ of |cos∠(w_c, w_c′) + 1/(C−1)| (rows not centred)."""
    return _equiangularity(W)


@float64
def simplex_etf_gram(num_classes: int) -> Float[Array, "C C"]:
    """P = I_C − (1/C) 1 1ᵀ, the Gram matrix of a simplex ETF up to scale."""
    return jnp.eye(num_classes) - jnp.full((num_classes, num_classes), 1.0 / num_classes)


@float64
def etf_distance(stats: ClassStats) -> Float[Array, ""]:
    """‖G/‖G‖_F − P/‖P‖_F‖_F with G = M̄ᵀ M̄ (a variant of NC2)."""
    Mbar = stats.centred_means
    G = Mbar.T @ Mbar
    P = simplex_etf_gram(stats.num_classes).astype(G.dtype)
    return jnp.linalg.norm(G / jnp.linalg.norm(G) - P / jnp.linalg.norm(P))


@float64
def nc3(stats: ClassStats, W: Float[Array, "C p"]) -> Float[Array, ""]:
    """Self-duality ‖Wᵀ/‖W‖_F − M̄/‖M̄‖_F‖_F² (squared)."""
    W, Mbar = _scale_free(W), _scale_free(stats.centred_means)
    return jnp.sum((W.T / jnp.linalg.norm(W) - Mbar / jnp.linalg.norm(Mbar)) ** 2)


@float64
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


#: ω_j whose estimated relative error exceeds this are reported as +inf ("collapsed beyond
#: float64 resolution"): never a finite value that may be wrong by more than 1%.
SNR_RESOLUTION = 1e-2

#: Below this estimated relative error the statistics alone resolve ω_j; above it, and when the
#: features are at hand, Σ_W is re-accumulated from the deviations in the collapse frame.
_REFINE_ABOVE = 1e-9


class _SNRFrame(eqx.Module):
    """A frame F (p×p) in which the generalised eigenproblem of (M̄ M̄ᵀ, Σ_W) is nearly diagonal.

    F = T Q: T whitens the total covariance on its range (dead directions get zero columns) and
    the orthogonal Q splits off the whitened class means' range and diagonalises Σ_W on it, so
    Fᵀ Σ_T F = I and Fᵀ Σ_W F ≈ diag(σ) on the live columns (the identity, to rounding, off the
    means' range).
    Collapse along the class means shows up as individual columns with tiny σ instead of as a
    tiny eigenvalue hidden in O(1) entries: that is what keeps relative accuracy.
    """

    F: Float[Array, "p p"]
    live: Bool[Array, " p"]


def _snr_frame(stats: ClassStats, rtol: float) -> _SNRFrame:
    # Σ_T = Σ_W + M̄ diag(π) M̄ᵀ, so the whitened Σ_W = I − Tᵀ M̄ diag(π) M̄ᵀ T differs from the
    # identity only on range(Tᵀ M̄), of dimension ≤ C − 1: a complete QR of the whitened means
    # splits that range off (O(p²C)), and a C×C eigendecomposition diagonalises Σ_W on it. The
    # complement is the identity up to rounding, which `_snr_in_frame`'s scaled factorisation
    # absorbs whatever the basis. Against the p×p eigendecomposition of Tᵀ Σ_W T this halves
    # the SNR's cost at p = 512 (96 → 48 ms CPU) and moves ω by ≤ 2e-15 (measured on the
    # committed digits file and a paper-scale file).
    T, live = live_frame_whitening(stats.sigma_t, rtol)
    p, C = stats.dim, stats.num_classes
    # Live coordinates first: T's dead columns make the whitened means' dead rows exactly zero,
    # so the Householder reflections never touch them and the complete Q is the identity there.
    order = jnp.argsort(~live, stable=True)
    Q, _ = jnp.linalg.qr((T.T @ stats.centred_means)[order], mode="complete")
    F = T @ jnp.zeros_like(Q).at[order].set(Q)
    n_live = jnp.sum(live)
    live_F = jnp.arange(p) < n_live
    k = min(C, p)  # the means' range lies in the first k columns
    F_M = F[:, :k]
    S_M = F_M.T @ stats.sigma_w @ F_M
    both = live_F[:k, None] & live_F[None, :k]
    # Columns beyond the live count (features varying in fewer than C directions) are zero; 2·I
    # there sits above the live spectrum (σ ≤ 1), so eigh keeps them apart and last.
    S_M = jnp.where(both, 0.5 * (S_M + S_M.T), 2.0 * jnp.eye(k, dtype=S_M.dtype))
    _, V = jnp.linalg.eigh(S_M)
    return _SNRFrame(F.at[:, :k].set(F_M @ V), live_F)


def _snr_in_frame(M_F, S_F, live, dtype, floor):
    """ω and, per j, the unit vectors needed for its error estimate, from M̄ and Σ_W in frame F.

    Σ_W in the frame is scaled to unit diagonal before it is factorised: Cholesky (like a
    symmetric eigensolver) is backward stable relative to the diagonal of the matrix it is
    given, so a direction whose within-class variance is 1e-10 of the rest keeps its digits.
    With S = L Lᵀ the scaled Σ_W, ω are the singular values of Z = L⁻¹ (M_F/d) and the
    scaled-frame eigenvectors are X = L⁻ᵀ U (xᵀ S x = 1). Where S is not numerically positive
    definite (features collapsed beyond the dtype's resolution) Cholesky fails and the
    eigendecomposition S = P diag(ρ) Pᵀ, with ρ clamped at the smallest normal number, gives
    Z = ρ^{-1/2} Pᵀ (M_F/d): where both exist, the same ω and X up to the signs of its columns
    (Zᵀ Z = (M_F/d)ᵀ S⁻¹ (M_F/d) either way).
    `floor` is the variance (in the Σ_T-whitened frame) below which a diagonal entry is noise:
    scaling by 1/√noise would only amplify rounding, so such directions are scaled by the floor
    and their error estimate flags them.
    """
    import jax.scipy.linalg as jsl

    tiny = jnp.finfo(dtype).tiny
    eye = jnp.eye(S_F.shape[0], dtype=dtype)
    S_F = jnp.where(live[:, None] & live[None, :], S_F, eye)
    M_F = jnp.where(live[:, None], M_F, 0.0)
    d = jnp.sqrt(jnp.maximum(jnp.diagonal(S_F), floor))
    S = S_F / (d[:, None] * d[None, :])
    M_d = M_F / d[:, None]
    L = jnp.linalg.cholesky(S)

    def by_cholesky(_):
        U, omega, _ = jnp.linalg.svd(jsl.solve_triangular(L, M_d, lower=True), full_matrices=False)
        return omega, jsl.solve_triangular(L.T, U, lower=False)

    def by_eigh(_):
        rho, P = jnp.linalg.eigh(S)
        inv_sqrt_rho = 1.0 / jnp.sqrt(jnp.maximum(rho, tiny))
        U, omega, _ = jnp.linalg.svd(inv_sqrt_rho[:, None] * (P.T @ M_d), full_matrices=False)
        return omega, P @ (inv_sqrt_rho[:, None] * U)

    omega, X = jax.lax.cond(jnp.all(jnp.isfinite(L)), by_cholesky, by_eigh, None)
    Y = X / d[:, None]  # frame-F generalised eigenvectors: yᵀ Σ_F y = 1
    return omega, X, Y


def _error_model(stats: ClassStats, accuracy):
    """The pieces of `_snr_solve`'s error model that every way of computing ω_j shares:
    (how well Σ_W is known relative to Σ_T, d_T = √diag Σ_T, the float floor's share of ω_j² for
    eigenvectors Y)."""
    eps = jnp.finfo(stats.sigma_w.dtype).eps
    # How well the statistics know Σ_W, relative to Σ_T: rounding, or an ODE solver's tolerance.
    sigma_w_accuracy = jnp.maximum(eps, accuracy)
    d_total = jnp.sqrt(jnp.maximum(jnp.diagonal(stats.sigma_t), 0.0))
    # Deviations h − μ_c carry the rounding of μ_c, ≈ eps·|μ_c| per coordinate: a within-class
    # spread below that floor is not measurable in this dtype (exactly collapsed features show
    # Σ_W ~ (eps·|h|)² of pure rounding). Its share of ω_j² is (|y_j|ᵀ floor)², with a factor p
    # for the sum over coordinates.
    floor = eps * jnp.max(jnp.abs(stats.class_means), axis=1)

    def floor_error(Y):
        return stats.dim * (jnp.abs(Y).T @ floor) ** 2

    return sigma_w_accuracy, d_total, floor_error


class _CholeskySNR(eqx.Module):
    omega: Float[Array, " Cm1"]
    err: Float[Array, " Cm1"]
    good_enough: Bool[Array, ""]


def _snr_by_cholesky(stats: ClassStats, rtol: float, accuracy) -> _CholeskySNR:
    """ω_j from Σ_W = L Lᵀ: the singular values of Z = L⁻¹ M̄, with y_j = L⁻ᵀ u_j the
    Σ_W-normalised generalised eigenvectors (u_j: Z's left singular vectors). One Cholesky
    factorisation and one triangular inverse (~p³/2 flops) against the frame's products and
    factorisations (~48 ms at p = 512: whitening, p×p products, two Cholesky factorisations, or
    eigendecompositions where those do not apply).

    Its rounding, in the error model of `_snr_solve`: Cholesky and the triangular solves are
    backward stable relative to the diagonal, |δΣ_ab| ≤ (p + 1)·eps·√(Σ_aa Σ_bb) each, so
    |δω_j²|/ω_j² ≤ 2(p + 1)·eps·(|y_j|ᵀ d_W)² with d_W = √diag Σ_W; the SVD of Z adds
    2·eps·ω_1/ω_j. `good_enough` when that rounding is at most 1% of what Σ_W's own uncertainty
    (`accuracy`, at least eps) already puts on every ω_j, and when every direction is live: the bound
    λ_min(Σ_T) ≥ λ_min(Σ_W) ≥ 1/‖L⁻¹‖_F² clears `rtol`'s dead-unit cut-off (else the frame,
    which drops dead units, decides).
    """
    dtype = stats.sigma_w.dtype
    eps = jnp.finfo(dtype).eps
    C, p = stats.num_classes, stats.dim
    sigma_w_accuracy, d_total, floor_error = _error_model(stats, accuracy)
    Sw = 0.5 * (stats.sigma_w + stats.sigma_w.T)
    L = jnp.linalg.cholesky(Sw)
    L_inv = jax.scipy.linalg.solve_triangular(L, jnp.eye(p, dtype=dtype), lower=True)
    U, omega, _ = jnp.linalg.svd(L_inv @ stats.centred_means, full_matrices=False)
    Y = L_inv.T @ U
    d_w = jnp.sqrt(jnp.maximum(jnp.diagonal(Sw), 0.0))
    uncertainty = sigma_w_accuracy * (jnp.abs(Y).T @ d_total) ** 2 + floor_error(Y)
    rounding = 2.0 * (p + 1) * eps * (jnp.abs(Y).T @ d_w) ** 2 + 2.0 * eps * omega[0] / omega
    omega, uncertainty, rounding = omega[: C - 1], uncertainty[: C - 1], rounding[: C - 1]
    all_live = 1.0 / jnp.sum(L_inv**2) > effective_rtol(rtol, dtype) * jnp.trace(stats.sigma_t)
    good_enough = (
        all_live
        & jnp.all(jnp.isfinite(L_inv))
        & jnp.all(jnp.isfinite(omega))
        & jnp.all(rounding <= 0.01 * uncertainty)
    )
    return _CholeskySNR(omega, uncertainty + rounding, good_enough)


def _snr_solve(
    stats: ClassStats, rtol: float, features=None, labels=None, accuracy=0.0, frame_scatter=None
):
    """(ω [C−1], estimated relative error of each ω_j²) — docs/theory.md, "Real features".

    Error model: statistics alone do not say how accurately Σ_W is known. A Σ_W accumulated in
    floating point, or carried by a flow from a wider state, has absolute errors
    |δΣ_ab| ≲ eps·d_a·d_b with d = √diag Σ_T, the scale of the features' spread (Σ_W's own
    scale would be optimistic: along a collapsing UFM the reduced state's Σ_W keeps the rounding
    of its start long after it has shrunk). First-order perturbation of a generalised
    eigenvalue gives |δω_j²|/ω_j² = |y_jᵀ δΣ y_j| ≤ eps·(|y_j|ᵀ d)² for the Σ_W-normalised
    eigenvector y_j; the factorisation adds eps·‖x_j‖² in the scaled frame. With the features,
    Σ_W is re-accumulated in the collapse frame and only the projection's rounding remains.
    Measured against 60-digit arithmetic the estimates exceed the true error 10–40×.
    """
    dtype = stats.sigma_w.dtype
    eps = jnp.finfo(dtype).eps
    C = stats.num_classes
    sigma_w_accuracy, d_total, floor_error = _error_model(stats, accuracy)

    def from_stats(frame):
        F = frame.F
        S_F = F.T @ stats.sigma_w @ F
        omega, X, Y = _snr_in_frame(
            F.T @ stats.centred_means, 0.5 * (S_F + S_F.T), frame.live, dtype, sigma_w_accuracy
        )
        FY = F @ Y
        err = (
            sigma_w_accuracy * (jnp.abs(FY).T @ d_total) ** 2
            + eps * jnp.sum(X**2, axis=0)
            + floor_error(FY)
        )
        return omega[: C - 1], err[: C - 1]

    if features is None and frame_scatter is None:
        if isinstance(accuracy, int | float) and accuracy == 0:  # known to rounding: the frame
            return from_stats(_snr_frame(stats, rtol))
        # Σ_W known only to `accuracy` (an ODE solve's state): a Cholesky solve resolves ω_j as
        # well as the frame whenever its rounding is a small part of that uncertainty, at a
        # fraction of the cost (the frame and the solve in it take ~48 ms of CPU at p = 512 for
        # each of `simulate`'s snapshots).
        cheap = _snr_by_cholesky(stats, rtol, accuracy)
        return jax.lax.cond(
            cheap.good_enough,
            lambda _: (cheap.omega, cheap.err),
            lambda _: from_stats(_snr_frame(stats, rtol)),
            None,
        )

    frame = _snr_frame(stats, rtol) if frame_scatter is None else frame_scatter.frame
    F = frame.F
    M_F = F.T @ stats.centred_means
    omega, err = from_stats(frame)

    def from_features(_):
        # Σ_W re-accumulated from the deviations projected on the frame: each column's variance
        # is then accurate relative to itself, so only the projection's rounding (≈ eps·‖ε‖ per
        # sample) limits ω_j — the square root of what the statistics alone allow.
        if frame_scatter is not None:  # accumulated chunk by chunk by a streamed analysis
            S_F, deviation_rms = frame_scatter.scatter, frame_scatter.deviation_rms
        else:
            deviations = features - stats.class_means.T[labels]
            E = deviations @ F
            S_F = (E.T @ E) / features.shape[0]
            deviation_rms = jnp.sqrt(jnp.mean(jnp.sum(deviations**2, axis=1)))
        omega, X, Y = _snr_in_frame(M_F, S_F, frame.live, dtype, eps**2)
        col_norms = jnp.linalg.norm(F, axis=0)
        projection = 2.0 * jnp.sqrt(stats.dim) * deviation_rms * (jnp.abs(Y).T @ col_norms)
        err = eps * (jnp.sum(X**2, axis=0) + projection) + floor_error(F @ Y)
        return omega[: C - 1], err[: C - 1]

    refine = jnp.max(jnp.where(jnp.isfinite(err), err, jnp.inf)) > _REFINE_ABOVE
    return jax.lax.cond(refine, from_features, lambda _: (omega, err), None)


class FrameScatter(eqx.Module):
    """Σ_W in the collapse frame, accumulated from the samples by a caller that streams them
    (`snr_frame`, then Σ_i Fᵀε_i ε_iᵀF / n and the RMS of ‖ε_i‖ chunk by chunk): what
    `snr_singular_values` computes itself when given the features in memory."""

    frame: _SNRFrame
    scatter: Float[Array, "p p"]
    deviation_rms: Float[Array, ""]


@float64
@eqx.filter_jit
def snr_frame(stats: ClassStats, *, rtol: float = DEFAULT_RTOL) -> _SNRFrame:
    """The collapse frame of `stats` (`.F`, p×p; `.live`), for accumulating a `FrameScatter`."""
    return _snr_frame(stats, rtol)


@float64
@eqx.filter_jit
def snr_needs_samples(stats: ClassStats, *, rtol: float = DEFAULT_RTOL) -> Bool[Array, ""]:
    """Whether the statistics alone leave some ω_j above the relative error (~1e-9) at which
    `snr_singular_values` goes back to the samples: a streamed analysis then makes a
    `FrameScatter` pass."""
    _, err = _snr_solve(stats, rtol)
    return jnp.max(jnp.where(jnp.isfinite(err), err, jnp.inf)) > _REFINE_ABOVE


@float64
@eqx.filter_jit  # one compiled program instead of ~100 eager dispatches (seconds at p ~ 100)
def snr_singular_values(
    stats: ClassStats,
    *,
    rtol: float = DEFAULT_RTOL,
    features: Float[Array, "n p"] | None = None,
    labels: Int[Array, " n"] | None = None,
    resolution: float = SNR_RESOLUTION,
    accuracy=0.0,
    frame_scatter: FrameScatter | None = None,
) -> Float[Array, " Cm1"]:
    """ω_1 ≥ … ≥ ω_{C−1}: the singular values of the SNR matrix Σ_W^{-1/2} M̄ (docs/theory.md §5).

    Computed as the square roots of the generalised eigenvalues of (M̄ M̄ᵀ, Σ_W) on the live
    directions U = range(Σ_T) (dead units drop out; nothing is cut relative to Σ_W, whose
    smallest eigenvalues carry the signal once features collapse), in a frame where Σ_W is
    nearly diagonal, so relative accuracy survives an ill-conditioned Σ_W.

    **Arguments:**

    - `stats`: class statistics.
    - `rtol`: dead directions are those where Σ_T's eigenvalue is ≤ rtol·λ_max(Σ_T).
    - `features`, `labels`: the samples behind `stats`, if at hand. When the statistics alone
      cannot resolve ω_j to ~1e-9, Σ_W is re-accumulated from them in the collapse frame, which
      resolves ω_j to ~1e-6 at a within-class variance along the means of 1e-18 of the total
      (the statistics alone: ~1e-13).
    - `resolution`: ω_j whose estimated relative error exceeds this are returned as +inf
      (collapsed beyond the resolution of the dtype), never as a finite value that may be wrong.
    - `frame_scatter`: the same re-accumulation, done by a caller that streams the samples
      (`FrameScatter`).
    - `accuracy`: the relative accuracy to which `stats.sigma_w` is known, as a fraction of Σ_T's
      scale, when it is worse than the dtype's rounding: an ODE solve's tolerance, for states
      that a Diffrax solve produced (`Trajectory` passes it).

    **Returns:** [C−1], largest first; +inf marks "beyond resolution" (or exactly collapsed
    features). Directions where the class means coincide give ω_j = 0. Invariant under any
    invertible affine map of the features.
    """
    omega, err = _snr_solve(stats, rtol, features, labels, accuracy, frame_scatter)
    return _resolved_snr(stats, rtol, omega, err, resolution)


def _resolved_snr(stats: ClassStats, rtol: float, omega, err, resolution=SNR_RESOLUTION):
    """ω_j as reported, from `_snr_solve`'s (ω, error of ω²): +inf beyond `resolution`, 0 where
    the class means coincide. Separate so that a caller that also needs the errors (a streamed
    analysis deciding whether to go back to the samples) solves once."""
    # Coinciding class means leave M̄ with rank < C − 1: those ω_j are 0, and a relative error
    # of 0 means nothing — report them as 0, not as unresolved.
    mbar_sv = jnp.linalg.svd(stats.centred_means, compute_uv=False)[: stats.num_classes - 1]
    degenerate = mbar_sv <= effective_rtol(rtol, mbar_sv.dtype) * jnp.max(mbar_sv)
    resolved = err <= 2.0 * resolution  # err is of ω², twice that of ω
    return jnp.where(degenerate, 0.0, jnp.where(resolved, omega, jnp.inf))


@float64
def snr_matrix(stats: ClassStats, *, rtol: float = DEFAULT_RTOL) -> Float[Array, "p C"]:
    """Ω = Σ_{W,U}^{-1/2} Uᵀ M̄ embedded in R^p: the SNR matrix on the live directions U.

    Its singular values are ω_j (`snr_singular_values` computes them more accurately when Σ_W
    is ill-conditioned). Σ_{W,U} must be positive definite: exactly collapsed features have no
    SNR matrix.
    """
    T, live = live_whitening(stats.sigma_t, rtol)
    Sw = T.T @ stats.sigma_w @ T
    both = live[:, None] & live[None, :]
    Sw = jnp.where(both, 0.5 * (Sw + Sw.T), jnp.eye(stats.dim, dtype=Sw.dtype))
    s, Q = jnp.linalg.eigh(Sw)
    # Ω = Σ_W^{-1/2} M̄ in the Σ_T-whitened live coordinates, which differ from the original by
    # an invertible map: ΩᵀΩ = M̄ᵀ Σ_W⁺ M̄ on U is unchanged.
    whitened = (Q * (1.0 / jnp.sqrt(jnp.maximum(s, jnp.finfo(s.dtype).tiny)))) @ Q.T
    return jnp.where(live[:, None], whitened @ (T.T @ stats.centred_means), 0.0)


@float64
def renormalised_features(
    features: Float[Array, "n p"], stats: ClassStats, *, rtol: float = DEFAULT_RTOL
) -> Float[Array, "n r"]:
    """X = Σ_{W,U}^{-1/2} Uᵀ(h − μ_G): features with Σ_W(X) = I on the live directions.

    U spans range(Σ_T): dead directions (units that never vary) are dropped, so X has
    r = rank(Σ_T) columns — r = p when nothing is dead. The renormalised flows need Σ_W = I,
    which dead directions (Σ_W = 0 there) would make impossible. Under `jax.jit` r must be known
    in advance: there X keeps all p columns and dead directions raise.

    Raises when Σ_W is singular on the live directions (features exactly collapsed along some
    direction): such features cannot be renormalised.
    """
    s, V = jnp.linalg.eigh(stats.sigma_t)
    live = s > effective_rtol(rtol, s.dtype) * jnp.max(s)
    if is_concrete(live):
        live_np = np.asarray(live)
        V = V[:, live_np]
    else:
        V = eqx.error_if(
            V,
            ~jnp.all(live),
            "the features have dead directions (Sigma_T singular); call renormalised_features "
            "outside jit, which drops them",
        )
    Sw = V.T @ stats.sigma_w @ V
    w, Q = jnp.linalg.eigh(0.5 * (Sw + Sw.T))
    if is_concrete(w):
        require(
            bool(jnp.min(w) > effective_rtol(rtol, w.dtype) * jnp.max(w)),
            "Sigma_W is singular on the live directions (the features are collapsed along some "
            "direction), so they cannot be renormalised; start from features that are not "
            "collapsed",
        )
    inv_sqrt = (Q / jnp.sqrt(w)) @ Q.T
    return (features - stats.global_mean) @ V @ inv_sqrt


class CollapseMetrics(eqx.Module):
    """NC1–NC3 and the SNR singular values of one state; classifier fields are None without W."""

    def __repr__(self) -> str:  # numbers, not Equinox's dtype-and-shape summaries
        return numeric_repr(self)

    nc1: Float[Array, ""]
    nc2_equinorm_means: Float[Array, ""]
    nc2_equiangular_means: Float[Array, ""]
    etf_distance: Float[Array, ""]
    snr: Float[Array, " Cm1"]
    snr_beyond_resolution: Bool[Array, ""]
    nc2_equinorm_classifier: Float[Array, ""] | None = None
    nc2_equiangular_classifier: Float[Array, ""] | None = None
    nc3: Float[Array, ""] | None = None


@float64
def collapse_metrics(
    stats: ClassStats,
    W: Float[Array, "C p"] | None = None,
    *,
    rtol: float = DEFAULT_RTOL,
    features: Float[Array, "n p"] | None = None,
    labels: Int[Array, " n"] | None = None,
    accuracy=0.0,
    frame_scatter: FrameScatter | None = None,
) -> CollapseMetrics:
    """All statistics-based neural-collapse metrics at once (the defaults of docs/theory.md §7).

    `features` and `labels`, when given, let `snr_singular_values` resolve ω_j further under
    anisotropic collapse, and `accuracy` says how well an ODE solve knows Σ_W;
    `snr_beyond_resolution` is set when some ω_j is +inf.
    """
    snr = snr_singular_values(
        stats,
        rtol=rtol,
        features=features,
        labels=labels,
        accuracy=accuracy,
        frame_scatter=frame_scatter,
    )
    return _collapse_metrics(stats, W, rtol, snr)


def _collapse_metrics(stats: ClassStats, W, rtol: float, snr) -> CollapseMetrics:
    """`collapse_metrics` with the SNR singular values already computed (`snr`)."""
    return CollapseMetrics(
        nc1=nc1(stats, rtol=rtol),
        nc2_equinorm_means=nc2_equinorm_means(stats),
        nc2_equiangular_means=nc2_equiangular_means(stats),
        etf_distance=etf_distance(stats),
        snr=snr,
        snr_beyond_resolution=jnp.any(jnp.isinf(snr)),
        nc2_equinorm_classifier=None if W is None else nc2_equinorm_classifier(W),
        nc2_equiangular_classifier=None if W is None else nc2_equiangular_classifier(W),
        nc3=None if W is None else nc3(stats, W),
    )


# --------------------------------------------------------------------------- NC1 from the Gram
# of the means: what a trajectory needs at every solver step, cheaply.


def nc1_from_gram(stats: ClassStats, rtol: float = DEFAULT_RTOL) -> Float[Array, ""]:
    """NC1 in its paper variant, from the C×C Gram of the centred means; jit/vmap-able.

    NC1 (paper) = Tr(Σ_W Σ_B^†)/C (docs/theory.md §7). Σ_B = (1/C) M̄ M̄ᵀ has rank ≤ C − 1, so its
    pseudo-inverse lives in the span of the C centred means: with M̄ᵀ M̄ = V diag(s) Vᵀ (C×C), the
    eigenvectors of Σ_B are u_k = M̄ v_k / √s_k with eigenvalues s_k / C, and

        NC1 = Σ_k [v_kᵀ (M̄ᵀ Σ_W M̄) v_k] / s_k²      over s_k > rtol · max s

    — O(C p² + C³) instead of the O(p³) eigendecomposition of the p×p Σ_B (`nc1`, equal to
    rounding, with the same relative cutoff). At C = 10, p = 512 that is the difference between an
    NC1 stopping test that costs nothing and one that dominates every step of a reduced flow.
    """
    Mbar = stats.centred_means
    s, V = jnp.linalg.eigh(Mbar.T @ Mbar)
    keep = s > effective_rtol(rtol, s.dtype) * jnp.max(s)
    A = Mbar.T @ (stats.sigma_w @ Mbar)
    # Each v_kᵀ A v_k is a variance along u_k (≥ 0): rounding is clamped, as `nc1` does.
    within = jnp.maximum(jnp.einsum("ck,cd,dk->k", V, A, V), 0.0)
    return jnp.sum(jnp.where(keep, within / jnp.where(keep, s, 1.0) ** 2, 0.0))
