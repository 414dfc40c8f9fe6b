"""The MSE loss and its exact decomposition L = L_NC1 + L_NC2/3 + L_⊥LS (docs/theory.md §2–3)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._errors import check_lambda, require_classifier_shape
from ._float64 import float64
from ._least_squares import LeastSquaresClassifier, least_squares_classifier
from ._linalg import DEFAULT_RTOL
from ._repr import numeric_repr
from ._stats import ClassStats


@float64
def mse_loss(
    features: Float[Array, "n p"],
    labels: Int[Array, " n"],
    W: Float[Array, "C p"],
    b: Float[Array, " C"],
    lam=0.0,
) -> Float[Array, ""]:
    """L(W, b, H) = ½ Ave ‖W h + b − y‖² + (λ/2)(‖W‖² + ‖b‖²), summed over samples directly.

    The paper's scale (docs/theory.md §2). PyTorch's `nn.MSELoss()` equals (2/C)·(first term).
    """
    Y = jax.nn.one_hot(labels, W.shape[0], dtype=features.dtype)
    residual = features @ W.T + b - Y
    fit = 0.5 * jnp.mean(jnp.sum(residual**2, axis=1))
    return fit + 0.5 * lam * (jnp.sum(W**2) + jnp.sum(b**2))


@float64
def mse_loss_from_stats(stats: ClassStats, W, b, lam=0.0) -> Float[Array, ""]:
    """The same loss from class statistics: ½ tr(W Σ_W Wᵀ) + ½ Σ_c π_c ‖W μ_c + b − e_c‖² + ridge.

    Exact because within-class deviations average to zero in each class.
    """
    require_classifier_shape(W, b, stats.num_classes, stats.dim)
    residual_means = W @ stats.class_means + b[:, None] - jnp.eye(stats.num_classes)
    # tr(W Σ_W Wᵀ) ≥ 0; rounding of a collapsed Σ_W can make it a tiny negative: clamp.
    within = 0.5 * jnp.maximum(jnp.sum((W @ stats.sigma_w) * W), 0.0)
    between = 0.5 * jnp.sum(stats.priors * jnp.sum(residual_means**2, axis=0))
    return within + between + 0.5 * lam * (jnp.sum(W**2) + jnp.sum(b**2))


class LossDecomposition(eqx.Module):
    """L = L_NC1 + L_NC2/3 + L_⊥LS (docs/theory.md §3) and proximity to the central path.

    **Fields:**

    - `loss`: L(W, b, H).
    - `nc1`: L_NC1(H) = ½[tr(W_LS(Σ_W + λI)W_LSᵀ) + λ‖b_LS‖²], within-class variability.
    - `nc23`: L_NC2/3(H) = ½ Σ_c π_c ‖W_LS μ_c + b_LS − e_c‖² (= (1/2C)‖W_LS M + b_LS 1ᵀ − I‖²
      balanced), geometry of the class means.
    - `perp`: L_⊥LS = ½ tr((W̃ − W̃_LS) S (W̃ − W̃_LS)ᵀ), distance from the central path.
    - `w_ls_distance`: ‖W̃ − W̃_LS‖_F / ‖W̃_LS‖_F.
    """

    def __repr__(self) -> str:  # numbers, not Equinox's dtype-and-shape summaries
        return numeric_repr(self)

    loss: Float[Array, ""]
    nc1: Float[Array, ""]
    nc23: Float[Array, ""]
    perp: Float[Array, ""]
    w_ls_distance: Float[Array, ""]

    @property
    @float64
    def relative_perp(self) -> Float[Array, ""]:
        """L_⊥LS / L, the paper's measure of proximity to the central path."""
        return self.perp / self.loss


@float64
def least_squares_loss_terms(
    stats: ClassStats, ls: LeastSquaresClassifier, lam=0.0
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(L_NC1, L_NC2/3) of the least-squares classifier `ls` of `stats` (docs/theory.md §3)."""
    W, b = ls.W, ls.b
    eye_p = jnp.eye(stats.dim, dtype=W.dtype)
    # A trace of a PSD product: clamp the rounding of a collapsed Σ_W at 0.
    nc1 = 0.5 * jnp.maximum(
        jnp.sum((W @ (stats.sigma_w + lam * eye_p)) * W) + lam * jnp.sum(b**2), 0.0
    )
    residual = W @ stats.class_means + b[:, None] - jnp.eye(stats.num_classes, dtype=W.dtype)
    nc23 = 0.5 * jnp.sum(stats.priors * jnp.sum(residual**2, axis=0))
    return nc1, nc23


@float64
def loss_decomposition(
    stats: ClassStats,
    W: Float[Array, "C p"],
    b: Float[Array, " C"] | None = None,
    lam=0.0,
    *,
    rtol: float = DEFAULT_RTOL,
    ls=None,
) -> LossDecomposition:
    """Decompose the MSE loss of classifier (W, b) on features with statistics `stats`.

    docs/theory.md §3. L is quadratic in W̃ = [W, b] with Hessian S = Ave h̃ h̃ᵀ + λI and minimiser
    W̃_LS, so L(W̃) = L(W̃_LS) + ½ tr((W̃ − W̃_LS) S (W̃ − W̃_LS)ᵀ), and L(W̃_LS) splits into its
    within-class and class-mean parts. Holds for every λ ≥ 0 and any class counts.

    **Arguments:**

    - `stats`: class statistics of the features.
    - `W`, `b`: the classifier; `b=None` means a classifier without bias (b ≡ 0, and W_LS is
      then the bias-free least-squares classifier).
    - `lam`: ridge λ ≥ 0 in the paper's scale.
    - `ls`: the least-squares classifier of `stats` at this λ and `rtol` (with a bias exactly
      when `b` is given), when the caller has solved for it already; None: solved here.
    - `rtol`: relative threshold below which an eigenvalue of the normal matrix counts as zero.

    **Returns:** a `LossDecomposition`: `loss` = `nc1` + `nc23` + `perp` (the within-class term,
    the class-means term and the distance to the least-squares classifier W_LS), with
    `w_ls_distance` and `relative_perp` = perp / loss. W of the wrong shape is a `ValueError`.
    """
    lam = check_lambda(lam, "the ridge lambda")
    require_classifier_shape(W, b, stats.num_classes, stats.dim)
    # A classifier saved in float32 is promoted to the statistics' dtype: squared in float32,
    # its ridge term alone broke the decomposition identity at 1e-7.
    dtype = jnp.promote_types(jnp.asarray(W).dtype, stats.sigma_w.dtype)
    W = jnp.asarray(W, dtype)
    b = None if b is None else jnp.asarray(b, dtype)
    return _loss_decomposition(stats, W, b, lam, ls, rtol=rtol)


@eqx.filter_jit  # one compiled program: eager, the decomposition took seconds at p ~ 100
def _loss_decomposition(stats, W, b, lam, ls, *, rtol):
    bias = b is not None
    if b is None:
        b = jnp.zeros(W.shape[0], dtype=W.dtype)
    if ls is None:
        ls = least_squares_classifier(stats, lam, bias=bias, rtol=rtol)
    nc1, nc23 = least_squares_loss_terms(stats, ls, lam)
    loss = mse_loss_from_stats(stats, W, b, lam)

    mu = stats.global_mean
    dW, db = W - ls.W, b - ls.b
    eye_p = jnp.eye(stats.dim, dtype=W.dtype)
    # ½ tr(ΔW̃ S ΔW̃ᵀ) with S = [[Ave hhᵀ + λI, μ_G], [μ_Gᵀ, 1 + λ]], written blockwise.
    perp = 0.5 * jnp.sum((dW @ (stats.second_moment + lam * eye_p)) * dW)
    if bias:
        perp = perp + jnp.dot(db, dW @ mu) + 0.5 * (1.0 + lam) * jnp.sum(db**2)
    perp = jnp.maximum(perp, 0.0)  # ½ tr(ΔW̃ S ΔW̃ᵀ), S ⪰ 0: only rounding goes below 0
    distance = jnp.sqrt((jnp.sum(dW**2) + jnp.sum(db**2)) / (jnp.sum(ls.W**2) + jnp.sum(ls.b**2)))
    return LossDecomposition(loss, nc1, nc23, perp, distance)
