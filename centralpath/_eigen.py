"""Closed-form eigen-dynamics of the renormalised central-path flow (docs/theory.md §5, §6 F3/F3′).

On the renormalised flow (balanced, λ = 0) the singular vectors of Ω = Σ_W^{-1/2} M̄ stay fixed
and each singular value obeys a scalar ODE dω/dt = ω / (N (C + ω²)²), whose solution is
F(ω(t)) = F(ω(0)) + t with

    F(ω) = N C² log ω + N C ω² + (N/4) ω⁴.

`eigen_dynamics(...)` is a factory in the style of Neural Tangents' `gradient_descent_mse`: it
fixes (C, N, κ) once and returns a `predict(t)` for any array of times (t = inf gives the limit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._errors import InputError, is_concrete, require
from ._float64 import float64

Flow = Literal["renormalised", "whitened"]
FLOWS: tuple[str, ...] = ("renormalised", "whitened")


class LogPotential(eqx.Module):
    """F(ω) = c₁ log ω + c₂ ω² + c₃ ω⁴ with c₁, c₂ > 0, c₃ ≥ 0: strictly increasing on (0, ∞)."""

    c1: Float[Array, ""]
    c2: Float[Array, ""]
    c3: Float[Array, ""]

    @float64
    def __call__(self, omega: ArrayLike) -> Array:
        omega = jnp.asarray(omega)
        w2 = omega**2
        return self.c1 * jnp.log(omega) + self.c2 * w2 + self.c3 * w2**2

    def _log_potential(self, u):
        """G(u) = F(e^u); the quartic term is guarded so that c₃ = 0 never meets an overflow."""
        w2 = jnp.exp(2.0 * u)
        return self.c1 * u + self.c2 * w2 + jnp.where(self.c3 > 0, self.c3 * w2**2, 0.0)

    @float64
    def derivative_log(self, u: ArrayLike) -> Array:
        """dF/du at u = log ω: c₁ + 2c₂ ω² + 4c₃ ω⁴ (for F3: N (C + ω²)²)."""
        w2 = jnp.exp(2.0 * jnp.asarray(u))
        return self.c1 + 2.0 * self.c2 * w2 + jnp.where(self.c3 > 0, 4.0 * self.c3 * w2**2, 0.0)

    @float64
    def inverse(self, value: ArrayLike, *, max_iter: int = 100) -> Array:
        """ω = F⁻¹(value), elementwise, by Newton's method in u = log ω.

        G(u) = F(e^u) is increasing and convex in u, so Newton started at any u₀ with G(u₀) ≥
        value decreases monotonically to the root without overshoot. The candidates for u₀ are
        the single-term solutions value/c₁, ½ log(value/c₂), ¼ log(value/c₃). Where the root is
        positive every term is positive there, so each candidate lies right of it and the
        smallest is the closest start; where the value is negative only value/c₁ qualifies.
        A candidate is accepted when G(u) ≥ value up to the rounding of exp (a few |u| ulp), since
        rounding can put the dominant term's own solution a hair left of the root; Newton
        converges from there too.
        `value = +inf` maps to ω = +inf.
        """
        return _inverse(self, jnp.asarray(value, dtype=jnp.result_type(float, self.c1)), max_iter)


@eqx.filter_jit
def _inverse(F: LogPotential, value, max_iter: int):
    finite = jnp.isfinite(value)
    target = jnp.where(finite, value, 0.0)
    info = jnp.finfo(target.dtype)
    positive = jnp.maximum(target, 1.0)  # the log candidates only matter for large values
    # exp(2u) carries a relative rounding of about 2|u|·eps (4|u|·eps for the quartic term).
    slack = lambda u: 8 * info.eps * jnp.abs(target) * (1.0 + 4.0 * jnp.abs(u))  # noqa: E731
    candidates = (
        target / F.c1,
        0.5 * jnp.log(positive / F.c2),
        jnp.where(F.c3 > 0, 0.25 * jnp.log(positive / jnp.where(F.c3 > 0, F.c3, 1.0)), jnp.inf),
    )
    u0 = jnp.full_like(target, jnp.inf)
    for u in candidates:
        valid = jnp.isfinite(u) & (F._log_potential(u) >= target - slack(u))  # False for NaN
        u0 = jnp.where(valid & (u < u0), u, u0)

    def cond(state):
        k, u, step = state
        return (k < max_iter) & jnp.any(jnp.abs(step) > 4 * info.eps * jnp.maximum(1.0, jnp.abs(u)))

    def body(state):
        k, u, _ = state
        step = (F._log_potential(u) - target) / F.derivative_log(u)
        return k + 1, u - step, step

    _, u, _ = jax.lax.while_loop(cond, body, (0, u0, jnp.full_like(u0, jnp.inf)))
    return jnp.where(finite, jnp.exp(u), jnp.where(value > 0, jnp.inf, 0.0))


@float64
def potential(
    num_classes: int, per_class: float, *, kappa: float = 1.0, flow: Flow = "renormalised"
) -> LogPotential:
    """The potential F of the eigen-dynamics, in the time convention with factor κ.

    - `"renormalised"` (F3, the paper's flow): F = N C² log ω + N C ω² + (N/4) ω⁴.
    - `"whitened"` (F3′, whitening without projection): F = C N (C log ω + ω²/2).

    With κ ≠ 1 all constants are divided by κ, so F(ω(t)) = F(ω(0)) + t measures time in units
    of κ of this project's t (gradient descent with step η reaches t = kη after k steps).
    c₂² = 4 c₁ c₃ for F3 in every convention.
    """
    C, N = num_classes, per_class
    if flow == "renormalised":
        c = (N * C**2, N * C, N / 4.0)
    elif flow == "whitened":
        c = (C**2 * N, C * N / 2.0, 0.0)
    else:
        raise InputError(f"unknown eigen-dynamics flow {flow!r}; choose one of {', '.join(FLOWS)}")
    return LogPotential(*(jnp.asarray(ci / kappa, dtype=float) for ci in c))


@float64
def omega_rate(
    omega: ArrayLike, num_classes: int, per_class: float, *, flow: Flow = "renormalised"
):
    """dω/dt of the scalar eigen-ODE: ω / (N (C + ω²)²) for F3, ω / (C N (C + ω²)) for F3′."""
    omega = jnp.asarray(omega)
    C, N = num_classes, per_class
    if flow == "renormalised":
        return omega / (N * (C + omega**2) ** 2)
    if flow == "whitened":
        return omega / (C * N * (C + omega**2))
    raise InputError(f"unknown eigen-dynamics flow {flow!r}; choose one of {', '.join(FLOWS)}")


@float64
def eigen_dynamics(
    omega0: ArrayLike,
    num_classes: int,
    per_class: float,
    *,
    kappa: float = 1.0,
    flow: Flow = "renormalised",
) -> Callable[[ArrayLike], Float[Array, "T Cm1"]]:
    """Closed-form ω_j(t) of the renormalised flow: a factory returning `predict(t)`.

    **Arguments:**

    - `omega0`: initial SNR singular values ω_j(0) ≥ 0, shape [C−1] (any order; kept).
    - `num_classes`, `per_class`: C and N (balanced).
    - `kappa`: time factor κ of the constants' convention (1 for this project's t).
    - `flow`: `"renormalised"` (F3) or `"whitened"` (F3′).

    **Returns:** `predict(t)` mapping times [T] (or a scalar) to ω(t) of shape [T, C−1]
    (or [C−1]); `F(ω_j(t)) = F(ω_j(0)) + t`. A zero ω_j stays zero; t = inf gives +inf.
    """
    omega0 = jnp.asarray(omega0, dtype=float)
    if is_concrete(omega0):
        require(
            omega0.ndim == 1, f"omega0 must be a 1-D array of C-1 values, got shape {omega0.shape}"
        )
        require(
            1 <= omega0.shape[0] <= num_classes - 1,
            f"omega0 has {omega0.shape[0]} values but C = {num_classes} classes have at most "
            f"C-1 = {num_classes - 1}",
        )
        require(
            bool(jnp.all(jnp.isfinite(omega0)) & jnp.all(omega0 >= 0)),
            "omega0 must be finite and >= 0; SNR singular values are non-negative",
        )
    else:  # under jit/vmap the values are unknown until run time: check them there
        omega0 = eqx.error_if(
            omega0,
            ~(jnp.all(jnp.isfinite(omega0)) & jnp.all(omega0 >= 0)),
            "omega0 must be finite and >= 0; SNR singular values are non-negative",
        )
    F = potential(num_classes, per_class, kappa=kappa, flow=flow)
    a = F(jnp.where(omega0 > 0, omega0, 1.0))
    zero = omega0 == 0

    @float64
    def predict(t: ArrayLike) -> Array:
        t = jnp.asarray(t, dtype=a.dtype)
        if is_concrete(t):
            require(
                bool(jnp.all(t >= 0)),  # NaN fails too
                f"times must be >= 0 (t = inf gives the limit), got {np.asarray(t).tolist()}",
            )
        omega = F.inverse(a + t[..., None])
        return jnp.where(zero, 0.0, omega)

    return predict


@float64
def central_path_loss_terms(
    omega: Float[Array, "... Cm1"], num_classes: int
) -> tuple[Array, Array, Array]:
    """(L_LS, L_NC1, L_NC2/3) on the central path as functions of ω (balanced, λ = 0, §5).

    L_LS = ½ Σ 1/(C + ω²), L_NC1 = ½ Σ ω²/(C + ω²)², L_NC2/3 = ½ Σ C/(C + ω²)².
    """
    C = num_classes
    w2 = jnp.asarray(omega) ** 2
    d = C + w2
    return (
        0.5 * jnp.sum(1.0 / d, axis=-1),
        0.5 * jnp.sum(w2 / d**2, axis=-1),
        0.5 * jnp.sum(C / d**2, axis=-1),
    )


@float64
def nc1_from_snr(omega: Float[Array, "... Cm1"]) -> Array:
    """NC1 = Tr(Σ_W Σ_B^†)/C = Σ_j 1/ω_j² (balanced; docs/theory.md §5)."""
    return jnp.sum(1.0 / jnp.asarray(omega) ** 2, axis=-1)


@float64
def asymptotic_omega(t: ArrayLike, per_class: float, *, kappa: float = 1.0) -> Array:
    """ω_j(t) ≈ (4κt/N)^{1/4} as t → ∞ (every j, F3)."""
    return (4.0 * kappa * jnp.asarray(t) / per_class) ** 0.25


@float64
def asymptotic_nc1(t: ArrayLike, num_classes: int, per_class: float, *, kappa: float = 1.0):
    """NC1 ≈ ((C−1)/2) √(N/(κt)) as t → ∞ (F3)."""
    return 0.5 * (num_classes - 1) * jnp.sqrt(per_class / (kappa * jnp.asarray(t)))


@float64
def asymptotic_loss(t: ArrayLike, num_classes: int, per_class: float, *, kappa: float = 1.0):
    """L_LS ≈ ((C−1)/4) √(N/(κt)) as t → ∞ (F3)."""
    return 0.25 * (num_classes - 1) * jnp.sqrt(per_class / (kappa * jnp.asarray(t)))


@float64
def asymptotic_ratio_gap(a_j: ArrayLike, a_k: ArrayLike, t: ArrayLike, *, kappa: float = 1.0):
    """ω_j/ω_k − 1 ≈ (a_j − a_k)/(4κt) as t → ∞, with a = F(ω(0)) (F3)."""
    return (jnp.asarray(a_j) - jnp.asarray(a_k)) / (4.0 * kappa * jnp.asarray(t))
