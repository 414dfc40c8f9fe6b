"""Tsit5 with its stages written out, as a solver of its own on `diffrax.AbstractAdaptiveSolver`."""

from __future__ import annotations

from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp

from ._tableau import TABLEAU, combination, dense_weights

# Tsit5 is FSAL: its last stage is evaluated at y1 itself, so that stage's vector field starts the
# next step (the solver's state).
assert list(TABLEAU.a_lower[-1]) == list(TABLEAU.b_sol[:-1]) and TABLEAU.b_sol[-1] == 0


def unit_time(t0, t, t1):
    """θ = (t − t0)/(t1 − t0), 0 on an empty interval (a zero-length step)."""
    span = t1 - t0
    return jnp.where(span == 0, 0.0, (t - t0) / jnp.where(span == 0, 1.0, span))


class Tsit5Interpolation(diffrax.AbstractLocalInterpolation):
    """Tsitouras' continuous extension over one step: y(t) = y0 + Σ_i b_i(θ) k_i (order 4)."""

    t0: jax.Array
    t1: jax.Array
    y0: object
    k: object  # the stage increments h·f_i, stacked on a leading axis of 7

    def __init__(self, *, t0, t1, y0, y1, k):
        del y1  # y(t1) = y0 + Σ b_i(1) k_i: the interpolant needs only the stages
        self.t0, self.t1, self.y0, self.k = t0, t1, y0, k

    def evaluate(self, t0, t1=None, left=True):
        del left  # continuous within a step
        if t1 is not None:
            return jax.tree.map(jnp.subtract, self.evaluate(t1), self.evaluate(t0))
        weights = dense_weights(unit_time(self.t0, t0, self.t1))
        return jax.tree.map(
            lambda y, k: y + jnp.tensordot(weights.astype(k.dtype), k, axes=1), self.y0, self.k
        )


class StagedTsit5(diffrax.AbstractAdaptiveSolver):
    """Tsitouras' 5(4) method (the tableau, error estimate and dense output of `diffrax.Tsit5`)
    with its stages written out: each stage's input is one fused pass over the earlier stages'
    increments, where a loop over stored stages forms it as a dot with all seven (on a p×p state
    that cost more than the vector field: ~12 ms of a ~20 ms step at C = 10, p = 512, against ~3
    ms here). Same steps and values as `diffrax.Tsit5` to rounding (tested).

    Its state is the vector field at the current point (first same as last); `diffeqsolve`'s
    `solver_state=` resumes a solve with it.
    """

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = Tsit5Interpolation

    def order(self, terms):
        return 5

    def init(self, terms, t0, t1, y0, args):
        return terms.vf(t0, y0, args)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        f0 = first_rate(made_jump, solver_state, lambda: terms.vf(t0, y0, args))
        control = terms.contr(t0, t1)
        ks = [terms.prod(f0, control)]
        for row, c in zip(TABLEAU.a_lower, TABLEAU.c, strict=True):
            yi = jax.tree.map(jnp.add, y0, combination(row, ks))
            fi = terms.vf(t0 + float(c) * (t1 - t0), yi, args)
            ks.append(terms.prod(fi, control))
        y_error = combination(TABLEAU.b_error, ks)
        dense_info = dict(y0=y0, y1=yi, k=jax.tree.map(lambda *k: jnp.stack(k), *ks))
        return yi, y_error, dense_info, fi, diffrax.RESULTS.successful


def first_rate(made_jump, carried, fresh):
    """The first stage's vector field: the carried one (FSAL), or a fresh evaluation after a jump
    (a discontinuity at t0 makes the carried value stale). `diffeqsolve` passes a Python False
    when no jump can happen: then nothing else is traced."""
    if made_jump is False:
        return carried
    return jax.lax.cond(made_jump, fresh, lambda: carried)
