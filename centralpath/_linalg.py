"""Symmetric positive semi-definite linear algebra with a pinned relative cutoff.

Pseudo-inverses keep the eigen-directions with eigenvalue > rtol·(largest) of the matrix they
invert (docs/theory.md, "Real features"). Which matrix the cutoff is relative to matters: dead
directions are found from the *total* covariance Σ_T (`live_whitening`), never from Σ_W, whose
smallest eigenvalues carry the signal once features collapse anisotropically.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

DEFAULT_RTOL = 1e-10


def effective_rtol(rtol: float, dtype) -> float:
    """rtol, but never below 100 ulp of the dtype: at float32 a 1e-10 cutoff keeps rounding noise
    (NC1 came out ~1e7 on float32 features); at float64 100 ulp = 2e-14 < 1e-10 changes nothing."""
    return max(float(rtol), 100.0 * float(jnp.finfo(dtype).eps))


def _kept(s: Float[Array, " p"], rtol: float) -> Bool[Array, " p"]:
    return s > effective_rtol(rtol, s.dtype) * jnp.max(s, initial=0.0)


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


def live_whitening(
    sigma_t: Float[Array, "p p"], rtol: float = DEFAULT_RTOL
) -> tuple[Float[Array, "p p"], Bool[Array, " p"]]:
    """Whitening by the total covariance on its range U = range(Σ_T): `(T, live)`.

    T = V diag(s^{-1/2}) over the eigenpairs (s, V) of Σ_T with s > rtol·max s, and zero columns
    for the rest, so Tᵀ Σ_T T is the identity on the live coordinates and zero elsewhere. The
    dropped directions are those where the features do not vary at all (dead units): they carry
    neither signal nor noise. `live` marks the kept columns.
    """
    s, V = jnp.linalg.eigh(sigma_t)
    live = _kept(s, rtol)
    return V * jnp.where(live, 1.0 / jnp.sqrt(jnp.where(live, s, 1.0)), 0.0), live


def live_frame_whitening(
    sigma_t: Float[Array, "p p"], rtol: float = DEFAULT_RTOL
) -> tuple[Float[Array, "p p"], Bool[Array, " p"]]:
    """A whitening with `live_whitening`'s live directions, by Cholesky where that is certain.

    Returns `(T, live)` with Tᵀ Σ_T T = I on the live columns and zero columns elsewhere, like
    `live_whitening`, whose T it equals up to an orthogonal change of basis of the live columns
    (any such T serves the SNR's collapse frame, which is built on Tᵀ M̄ next). Cholesky
    (Σ_T = L Lᵀ, T = L⁻ᵀ: ~p³ flops with the triangular inverse, against ~9p³ and ~25 ms at p = 512
    for `eigh`) is used when it provably finds the same live directions as the eigenvalue rule
    `s > rtol·max s`:

    - rows of Σ_T that are exactly zero (units that never vary, e.g. dead ReLUs) are eigenvectors
      of eigenvalue 0 — dead under the rule — and are set aside (identity there, zero columns);
    - on the rest, λ_min ≥ 1/‖L⁻¹‖_F² and λ_max ≤ tr Σ_T, so 1/‖L⁻¹‖_F² > 2·rtol·tr Σ_T certifies
      that every other direction is live (the factor 2 is far above eigh's rounding of λ_min,
      ~p·eps·λ_max against rtol·λ_max ≥ 100·eps·λ_max).

    Otherwise (a unit that is constant up to rounding, Σ_T nearly singular, p > n − 1) the
    eigendecomposition decides, as `live_whitening` does.
    """
    import jax
    import jax.scipy.linalg as jsl

    p = sigma_t.shape[0]
    dtype = sigma_t.dtype
    eye = jnp.eye(p, dtype=dtype)
    varies = jnp.any(sigma_t != 0, axis=1)
    both = varies[:, None] & varies[None, :]
    S = jnp.where(both, 0.5 * (sigma_t + sigma_t.T), eye)
    L_inv = jsl.solve_triangular(jnp.linalg.cholesky(S), eye, lower=True)
    # L is block diagonal over (varying, constant) units, so L⁻¹'s varying block is that of Σ_T's.
    inv_norm2 = jnp.sum(jnp.where(both, L_inv**2, 0.0))
    certain = (
        jnp.all(jnp.isfinite(L_inv))
        & jnp.any(varies)
        & (1.0 / inv_norm2 > 2.0 * effective_rtol(rtol, dtype) * jnp.trace(sigma_t))
    )
    return jax.lax.cond(
        certain,
        lambda _: (jnp.where(varies[None, :], L_inv.T, 0.0), varies),
        lambda _: live_whitening(sigma_t, rtol),
        None,
    )


def psd_right_solve(
    K: Float[Array, "p p"],
    R: Float[Array, "C p"],
    rtol: float = DEFAULT_RTOL,
    *,
    pinv_fallback: bool = True,
) -> tuple[Float[Array, "C p"], Bool[Array, ""]]:
    """X = R K⁻¹ for symmetric PSD K by an LU solve; pseudo-inverse fallback when singular.

    Returns `(X, singular)`. `singular` is set when the smallest LU pivot is ≤ rtol times the
    largest (or not finite): an exactly singular K (dead units, p > n − 1, collapsed features)
    always shows such a pivot. Then, with `pinv_fallback`, X = R K^+ over eigenvalues above
    rtol·max — the minimum-norm solution, the λ → 0⁺ limit of the ridge. Flows, whose states are
    non-degenerate, pass `pinv_fallback=False`: the fallback's eigendecomposition triples the
    compile time of an ODE solve.
    """
    import jax
    import jax.scipy.linalg as jsl

    lu, piv = jsl.lu_factor(K)
    pivots = jnp.abs(jnp.diagonal(lu))
    singular = ~jnp.all(jnp.isfinite(lu)) | (
        jnp.min(pivots, initial=jnp.inf)
        <= effective_rtol(rtol, K.dtype) * jnp.max(pivots, initial=0.0)
    )

    def regular(_):
        return jsl.lu_solve((lu, piv), R.T).T  # K symmetric: R K⁻¹ = (K⁻¹ Rᵀ)ᵀ

    if not pinv_fallback:
        return regular(None), singular

    def fallback(_):
        return R @ psd_pinv(K, rtol)

    return jax.lax.cond(singular, fallback, regular, None), singular
