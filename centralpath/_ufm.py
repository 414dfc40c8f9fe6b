"""The unconstrained-features model (UFM): its state, random initial states, and its loss.

docs/theory.md §6 F1: the features H are free parameters, trained jointly with the classifier.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._errors import require
from ._float64 import float64
from ._repr import numeric_repr
from ._stats import ClassStats


class UFMState(eqx.Module):
    """(W, b, H) of the UFM: classifier [C, p], bias [C], features [n, p] (rows = samples)."""

    def __repr__(self) -> str:  # numbers, not Equinox's dtype-and-shape summaries
        return numeric_repr(self)

    W: Float[Array, "C p"]
    b: Float[Array, " C"]
    H: Float[Array, "n p"]


def balanced_labels(num_classes: int, per_class: int) -> Int[Array, " n"]:
    """Labels 0…0 1…1 … of a balanced problem, N of each class."""
    return jnp.repeat(jnp.arange(num_classes), per_class)


def check_problem_size(num_classes: int, per_class: int, dim: int) -> None:
    """The sizes every flow needs: C ≥ 2, N ≥ 2 (Σ_W defined), p ≥ C − 1 (room for the means)."""
    require(num_classes >= 2, f"need at least 2 classes, got C = {num_classes}")
    require(per_class >= 2, f"need at least 2 samples per class for Sigma_W, got N = {per_class}")
    require(
        dim >= num_classes - 1,
        f"feature dimension p = {dim} is below C-1 = {num_classes - 1}; the class means need C-1 "
        "dimensions — raise p",
    )


@float64
def init_features(
    key: PRNGKeyArray,
    num_classes: int,
    per_class: int,
    dim: int,
    *,
    mean_scale: float = 1.0,
    noise_scale: float = 1.0,
    dtype=None,
) -> tuple[Float[Array, "n p"], Int[Array, " n"]]:
    """Random labelled features: class means ~ N(0, mean_scale²/p · I), noise ~ N(0, noise_scale²/p · I).

    The 1/p scaling keeps ‖h‖ of order one for any p.
    """
    check_problem_size(num_classes, per_class, dim)
    k_means, k_noise = jax.random.split(key)
    dtype = dtype or jnp.result_type(float)
    means = mean_scale * jax.random.normal(k_means, (num_classes, dim), dtype) / jnp.sqrt(dim)
    labels = balanced_labels(num_classes, per_class)
    noise = noise_scale * jax.random.normal(k_noise, (num_classes * per_class, dim), dtype)
    return means[labels] + noise / jnp.sqrt(dim), labels


@float64
def init_ufm(
    key: PRNGKeyArray,
    num_classes: int,
    per_class: int,
    dim: int,
    *,
    mean_scale: float = 1.0,
    noise_scale: float = 1.0,
    weight_scale: float = 1.0,
    dtype=None,
) -> tuple[UFMState, Int[Array, " n"]]:
    """A random UFM state (W ~ N(0, weight_scale²/p), b = 0, H from `init_features`) and labels."""
    k_h, k_w = jax.random.split(key)
    H, labels = init_features(
        k_h,
        num_classes,
        per_class,
        dim,
        mean_scale=mean_scale,
        noise_scale=noise_scale,
        dtype=dtype,
    )
    W = weight_scale * jax.random.normal(k_w, (num_classes, dim), H.dtype) / jnp.sqrt(dim)
    return UFMState(W, jnp.zeros(num_classes, H.dtype), H), labels


def draw_class_stats(
    key: PRNGKeyArray,
    num_classes: int,
    per_class: int,
    dim: int,
    *,
    mean_scale=1.0,
    noise_scale=1.0,
    dtype=None,
):
    """The class statistics (`ClassStats`) of `init_features(key, …)`'s features, drawn directly
    from their distribution in O(p³) work and memory whatever the number of samples.

    With true centres μ_c ~ N(0, m²/p I) and noise e ~ N(0, s²/p I), the class statistics of
    the n = C·N samples are independent (Cochran's theorem): the sample means μ_c + ē_c with
    ē_c ~ N(0, s²/(pN) I), and n Σ_W = (s²/p) · W_p(n − C, I), a Wishart draw with n − C degrees
    of freedom (the C class means used up C of them), drawn by Bartlett's decomposition
    (`wishart_bartlett`). That is the exact law of the reduced sample draw, not an
    approximation: no central-limit step, at any N. The key is split as `init_features`
    splits it, so the centres μ_c are the ones `init_features` draws from the same key; the
    sampling noise is another draw of the same distribution.
    """
    check_problem_size(num_classes, per_class, dim)
    dtype = dtype or jnp.result_type(float)
    C, N, p = num_classes, per_class, dim
    n = C * N
    k_means, k_noise = jax.random.split(key)
    k_bar, k_scatter = jax.random.split(k_noise)
    centres = mean_scale * jax.random.normal(k_means, (C, p), dtype) / jnp.sqrt(p)
    mean_noise = jax.random.normal(k_bar, (C, p), dtype) * (noise_scale / jnp.sqrt(p * N))
    scatter = wishart_bartlett(k_scatter, n - C, p, dtype)
    sigma_w = ((noise_scale**2 / p) / n) * scatter
    return ClassStats(jnp.full((C,), float(N), dtype), (centres + mean_noise).T, sigma_w)


def chi_square(key: PRNGKeyArray, df: Float[Array, " k"]) -> Float[Array, " k"]:
    """Independent χ²(df_i) draws, df_i ≥ 1: 2·Gamma(df/2) by Marsaglia and Tsang's exact
    rejection method (Gamma(a) for a < 1 as Gamma(a + 1)·U^(1/a)), all entries proposing
    together until each has accepted (acceptance > 95% per proposal, so a few rounds).

    Written out rather than `jax.random.chisquare`, whose per-element loop took ~2 s to compile
    on 2 cores, most of the reduced simulation's initial draw.
    """
    a = df / 2
    boost = a < 1
    d = jnp.where(boost, a + 1, a) - 1.0 / 3
    c = 1 / jnp.sqrt(9 * d)
    k_loop, k_boost = jax.random.split(key)

    def propose(state):
        key, accepted, value = state
        key, k_x, k_u = jax.random.split(key, 3)
        x = jax.random.normal(k_x, a.shape, a.dtype)
        u = jax.random.uniform(k_u, a.shape, a.dtype)
        v = (1 + c * x) ** 3
        log_v = jnp.log(jnp.where(v > 0, v, 1.0))
        ok = (v > 0) & (jnp.log(u) < 0.5 * x**2 + d - d * v + d * log_v)
        return key, accepted | ok, jnp.where(~accepted & ok, d * v, value)

    state = (k_loop, jnp.zeros(a.shape, bool), jnp.zeros_like(a))
    gamma = jax.lax.while_loop(lambda s: ~jnp.all(s[1]), propose, state)[2]
    u = jax.random.uniform(k_boost, a.shape, a.dtype, minval=jnp.finfo(a.dtype).tiny)
    gamma = jnp.where(boost, gamma * u ** (1 / a), gamma)
    return 2 * gamma


def wishart_bartlett(key: PRNGKeyArray, dof: int, dim: int, dtype=None) -> Float[Array, "p p"]:
    """A draw of Z Zᵀ for Z a dim × dof matrix of independent N(0, 1) entries (the Wishart
    distribution W_p(dof, I), singular when dof < p) in O(p³) work and p²/2 random numbers, by
    Bartlett's decomposition: Z Zᵀ = L Lᵀ with L lower triangular, L_jj² ~ χ²(dof − j) for
    j = 0 … min(p, dof) − 1, L_ij ~ N(0, 1) below the diagonal, independent; columns j ≥ dof
    are zero (Z has rank dof).

    The scatter of n Gaussian samples about their class means is such a draw with dof = n − C:
    drawing it this way costs the same at any n, where forming it from samples costs n p².
    """
    dtype = dtype or jnp.result_type(float)
    k_chi, k_below = jax.random.split(key)
    j = jnp.arange(dim)
    df = jnp.maximum(dof - j, 1).astype(dtype)  # clipped where masked out below (dof ≤ j)
    diagonal = jnp.where(j < dof, jnp.sqrt(chi_square(k_chi, df)), 0.0)
    below = jnp.tril(jax.random.normal(k_below, (dim, dim), dtype), -1)
    L = (below + jnp.diag(diagonal)) * (j < dof)  # zero the columns past the rank
    return L @ L.T


@float64
def ufm_loss(
    state: UFMState,
    labels: Int[Array, " n"],
    num_classes: int,
    lam_W=0.0,
    lam_H=0.0,
    lam_b=0.0,
) -> Float[Array, ""]:
    """L_UFM = (1/2n)‖W H + b 1ᵀ − Y‖² + (λ_W/2)‖W‖² + (λ_H/2)‖H‖² + (λ_b/2)‖b‖² (docs/theory.md §6 F1)."""
    Y = jax.nn.one_hot(labels, num_classes, dtype=state.H.dtype)
    residual = state.H @ state.W.T + state.b - Y
    return (
        0.5 * jnp.mean(jnp.sum(residual**2, axis=1))
        + 0.5 * lam_W * jnp.sum(state.W**2)
        + 0.5 * lam_H * jnp.sum(state.H**2)
        + 0.5 * lam_b * jnp.sum(state.b**2)
    )
