"""Tsit5 for flows whose p×p leaf Σ moves by a rank-structured rate (the reduced UFM)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from ._tableau import TABLEAU, combination, dense_weights
from ._tsit5 import first_rate, unit_time

_STAGES = len(TABLEAU.b_sol)


def _sigma_coefficients(row, alpha, beta, h, scale, lam, *, start=1.0):
    """(a, b) with start·Σ₀ + h Σ_k row[k] (rate of stage k) = a Σ₀ + Σ_m b[m] P_m.

    Stage k's Σ is alpha[k] Σ₀ + Σ_m beta[k][m] P_m and its rate −scale P_k − 2λ (that Σ);
    `row` holds floats (a tableau row: zeros are skipped) or traced weights (the dense output's
    at some θ). `start` = 0 for the error estimate, which has no Σ₀ term of its own."""

    def dot(weights, values):
        return sum(w * v for w, v in zip(weights, values, strict=True) if not _is_zero(w))

    a = start - 2 * lam * h * dot(row, alpha)
    b = [
        -scale * h * row[m]
        - 2 * lam * h * dot(row, [bk[m] if m < len(bk) else 0.0 for bk in beta[: len(row)]])
        for m in range(len(row))
    ]
    return a, b


def _is_zero(w) -> bool:
    return isinstance(w, float) and w == 0.0


def low_rank_sums(S0, Ws, Gs, coefficients):
    """[a Σ₀ + Σ_m b_m (W_mᵀG_m + G_mᵀW_m) for (a, b) in coefficients] (b padded with zeros to the
    length of Ws) from one product: the shared p×2K factor [W; G]ᵀ times the 2K×p factors
    [b·G; b·W] side by side (K: the rows of all the W_m). At p = 512, forming y1 and the error
    estimate this way took 1.3 ms against 2.1 ms as two products; forming X = Σ b_m W_mᵀG_m and
    then X + Xᵀ takes half the flops but was slower still (XLA:CPU's p×p transpose)."""
    left = jnp.concatenate(list(Ws) + list(Gs), axis=0)
    rights = []
    for _, b in coefficients:
        b = list(b) + [0.0] * (len(Ws) - len(b))
        rights.append(
            jnp.concatenate(
                [bm * Gm for bm, Gm in zip(b, Gs, strict=True)]
                + [bm * Wm for bm, Wm in zip(b, Ws, strict=True)],
                axis=0,
            )
        )
    product = left.T @ jnp.concatenate(rights, axis=1)
    p = S0.shape[0]
    return [a * S0 + product[:, i * p : (i + 1) * p] for i, (a, _) in enumerate(coefficients)]


def _put_sigma(sigma_of, small, sigma):
    return eqx.tree_at(sigma_of, small, sigma, is_leaf=lambda x: x is None)


class FactoredStages(eqx.Module):
    """What a step of `FactoredTsit5` keeps for its dense output: the stages' increments of every
    leaf but Σ, and Σ's stages in factored form (Σ₀, the W_k, G_k and the coefficients)."""

    k_small: Any  # h·(rate of stage k) for every leaf but Σ (None in Σ's place), stacked [7, …]
    W: jax.Array  # [7, C, p]
    G: jax.Array  # [7, C, p]
    alpha: jax.Array  # [7]
    beta: jax.Array  # [7, 7], stage k's Σ = alpha[k] Σ₀ + Σ_m beta[k, m] P_m
    scale: jax.Array
    lam: jax.Array


def _factored_state(sigma_of, y0, stages: FactoredStages, t0, t1, t):
    """The dense output at t of one configuration (see `FactoredTsit5`)."""
    weights = dense_weights(unit_time(t0, t, t1))
    h = t1 - t0
    a, b = _sigma_coefficients(
        [weights[i] for i in range(_STAGES)],
        [stages.alpha[i] for i in range(_STAGES)],
        [[stages.beta[k, m] for m in range(k)] for k in range(_STAGES)],
        h,
        stages.scale,
        stages.lam,
    )
    (sigma,) = low_rank_sums(
        sigma_of(y0), list(stages.W), list(stages.G), [(a, [jnp.asarray(x) for x in b])]
    )
    small0 = eqx.tree_at(sigma_of, y0, None)
    small = jax.tree.map(
        lambda y, k: y + jnp.tensordot(weights.astype(k.dtype), k, axes=1), small0, stages.k_small
    )
    return _put_sigma(sigma_of, small, sigma)


class FactoredInterpolation(diffrax.AbstractLocalInterpolation):
    """Tsitouras' continuous extension of a `FactoredTsit5` step, Σ formed only where evaluated:
    Σ(θ) = a(θ) Σ₀ + Σ_m c_m(θ) P_m by one product. Exactly `Tsit5Interpolation` of the same
    stages (tested), without forming the seven p×p stage increments at every step."""

    t0: jax.Array
    t1: jax.Array
    y0: Any
    stages: FactoredStages
    sigma_of: Callable = eqx.field(static=True)
    map: Callable | None = eqx.field(static=True)

    def __init__(self, *, t0, t1, y0, y1, stages, sigma_of, map=None):
        del y1
        self.t0, self.t1, self.y0, self.stages = t0, t1, y0, stages
        self.sigma_of, self.map = sigma_of, map

    def evaluate(self, t0, t1=None, left=True):
        del left
        if t1 is not None:
            return jax.tree.map(jnp.subtract, self.evaluate(t1), self.evaluate(t0))

        def one(_, y0, stages):
            return _factored_state(self.sigma_of, y0, stages, self.t0, self.t1, t0)

        if self.map is None:
            return one(None, self.y0, self.stages)
        return self.map(one, self.y0, self.stages)


class FactoredTsit5(diffrax.AbstractAdaptiveSolver):
    """Tsit5 for flows whose p×p leaf Σ moves by a rank-structured rate (the reduced UFM):
    dΣ/dt = −s (WᵀG + GᵀW) − 2λ Σ with G = W Σ (W: C×p), and Σ enters every other rate only
    through G (`flow.congruence`, `flow.rates_given`, `flow.sigma_of`).

    Every stage's Σ is then α Σ₀ + Σ_k β_k P_k with P_k = W_kᵀG_k + G_kᵀW_k the stages' rank-2C
    terms and scalars α, β from the tableau (exact algebra, no approximation). A stage needs only
    its G = α (W Σ₀) + Σ_k β_k [(W W_kᵀ) G_k + (W G_kᵀ) W_k]: one C×p×p product (y1's too). Σ is
    formed only at y1 and for the error estimate, both by one product of the shared p×(2C·stages)
    factor (`low_rank_sums`); the dense output forms it only where it is evaluated
    (`FactoredInterpolation`). A dense Tsit5 formed the p×p rate and the p×p input of every stage
    (5.4–7.0 ms per step at C = 10, p = 512, against 3.1–4.0 ms here, same runs): same tableau,
    error estimate and norm, so the same steps to rounding (tested against `diffrax.Tsit5`).

    **Fields:**

    - `flow`: the flow whose term is solved (the term must be `ODETerm(flow)`: the solver reads
      the flow's structure, not the term). For a batch, the flows stacked on a leading axis.
    - `map`: `None` for one configuration; for a batch, `map(fn, *args)` applies
      `fn(flow, *args)` to each configuration (e.g. chunk by chunk) and stacks the results.

    Its state is (rates of every leaf but Σ, G) at the current point (first same as last).
    """

    flow: Any
    map: Callable | None = eqx.field(static=True, default=None)
    term_structure: ClassVar = diffrax.AbstractTerm

    @property
    def interpolation_cls(self):
        return functools.partial(
            FactoredInterpolation, sigma_of=type(self.flow).sigma_of, map=self.map
        )

    def order(self, terms):
        return 5

    def _each(self, fn, *args):
        if self.map is None:
            return fn(self.flow, *args)
        return self.map(fn, *args)

    def init(self, terms, t0, t1, y0, args):
        return self._each(_first_rates, y0)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        h = t1 - t0

        def one(flow, y0, last):
            last = first_rate(made_jump, last, lambda: _first_rates(flow, y0))
            return _factored_step(flow, y0, last, h)

        y1, y_error, stages, last = self._each(one, y0, solver_state)
        dense_info = dict(y0=y0, y1=y1, stages=stages)
        return y1, y_error, dense_info, last, diffrax.RESULTS.successful


def _first_rates(flow, y0):
    """(rates of every leaf but Σ, G = W Σ) at y0: what the first stage of a step needs."""
    W, _, _ = flow.congruence(y0)
    G = W @ flow.sigma_of(y0)
    return flow.rates_given(eqx.tree_at(flow.sigma_of, y0, None), G), G


def _factored_step(flow, y0, last, h):
    """One Tsit5 step of one configuration: (y1, error estimate, FactoredStages, (f1, G1))."""
    S0 = flow.sigma_of(y0)
    small0 = eqx.tree_at(flow.sigma_of, y0, None)
    W0, scale, lam = flow.congruence(y0)
    f0, G0 = last
    alpha, beta = [1.0], [[]]
    Ws, Gs, ks = [W0], [G0], [jax.tree.map(lambda a: h * a, f0)]
    # Every stage's G in factored form, y1's included (the last row: Tsit5 is FSAL), so that Σ
    # is formed only at the end, at y1 and in the error estimate, by one product.
    for row in TABLEAU.a_lower:
        row = [float(r) for r in row]
        small = jax.tree.map(jnp.add, small0, combination(row, ks))
        a, b = _sigma_coefficients(row, alpha, beta, h, scale, lam)
        W, _, _ = flow.congruence(small)
        G = a * (W @ S0) + sum(
            bm * ((W @ Wm.T) @ Gm + (W @ Gm.T) @ Wm) for bm, Wm, Gm in zip(b, Ws, Gs, strict=True)
        )
        f = flow.rates_given(small, G)
        alpha.append(a), beta.append(b), Ws.append(W), Gs.append(G)
        ks.append(jax.tree.map(lambda v: h * v, f))
    e = [float(x) for x in TABLEAU.b_error]
    small_err = combination(e, ks)
    a_err, b_err = _sigma_coefficients(e, alpha, beta, h, scale, lam, start=0.0)
    S1, S_err = low_rank_sums(S0, Ws, Gs, [(a, b), (a_err, b_err)])
    y1 = _put_sigma(flow.sigma_of, small, S1)
    y_error = _put_sigma(flow.sigma_of, small_err, S_err)
    dtype = S0.dtype
    stages = FactoredStages(
        k_small=jax.tree.map(lambda *k: jnp.stack(k), *ks),
        W=jnp.stack(Ws),
        G=jnp.stack(Gs),
        alpha=jnp.stack([jnp.asarray(x, dtype) for x in alpha]),
        beta=jnp.stack(
            [
                jnp.stack(
                    [jnp.asarray(bk[m] if m < len(bk) else 0.0, dtype) for m in range(_STAGES)]
                )
                for bk in beta
            ]
        ),
        scale=jnp.asarray(scale, dtype),
        lam=jnp.asarray(lam, dtype),
    )
    return y1, y_error, stages, (f, G)
