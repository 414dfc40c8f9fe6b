"""What every flow provides: a Diffrax vector field, a gradient-descent step, and a snapshot.

A flow is an `eqx.Module` holding the problem's data (labels or class counts, ridges). Calling it
is the vector field `flow(t, y, args)`, so `diffrax.ODETerm(flow)` integrates it and
`flow.gd_step(y, eta)` takes one discrete step of gradient descent on the same objective; time is
t = kη after k steps (docs/theory.md §6).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._stats import ClassStats


class Snapshot(eqx.Module):
    """What a trajectory records of a state: enough for every metric of docs/theory.md §3, §5, §7.

    `nc4` is NaN for moment-reduced flows (NC4 needs the samples themselves).
    """

    stats: ClassStats
    W: Float[Array, "C p"]
    b: Float[Array, " C"]
    objective: Float[Array, ""]
    nc4: Float[Array, ""]


class AbstractFlow(eqx.Module):
    """Base class: subclasses define `__call__` (the vector field), `class_stats`, `classifier`
    and `objective`; `gd_step` defaults to an explicit Euler step."""

    name: ClassVar[str]
    reduced: ClassVar[bool]

    @abc.abstractmethod
    def __call__(self, t, y: PyTree, args=None) -> PyTree:
        """dy/dt = −(gradient of the objective), possibly projected."""

    @abc.abstractmethod
    def class_stats(self, y: PyTree) -> ClassStats:
        """Class statistics of the state's features."""

    @abc.abstractmethod
    def classifier(self, y: PyTree) -> tuple[Array, Array]:
        """(W, b) of the state: its own for the UFM, the least-squares one on the central path."""

    @abc.abstractmethod
    def objective(self, y: PyTree) -> Float[Array, ""]:
        """The objective the flow descends (L_UFM, or L_LS on the central path)."""

    @property
    def decomposition_lambda(self):
        """λ at which the loss decomposition of a snapshot is taken."""
        return 0.0

    def check_state(self, y: PyTree) -> None:
        """Raise a one-line `InputError` when `y` is a state this flow cannot start from.

        Called by `integrate` and `gradient_descent` before compiling; a no-op for flows that
        accept any state. Only concrete states are checked.
        """

    def features(self, y: PyTree) -> Float[Array, "n p"] | None:
        """The features, for flows that carry samples (None for moment-reduced flows)."""
        return None

    def gd_step(self, y: PyTree, eta) -> PyTree:
        """One step of gradient descent with step η: y + η·vf(y) unless overridden."""
        v = self(0.0, y, None)
        return jax.tree_util.tree_map(lambda a, da: a + eta * da, y, v)

    def snapshot(self, t, y: PyTree, args=None) -> Snapshot:
        """`SaveAt(fn=flow.snapshot)`: the statistics, classifier, objective and NC4 of y."""
        from .._metrics import nc4

        stats = self.class_stats(y)
        W, b = self.classifier(y)
        H = self.features(y)
        nc4_value = jnp.nan if H is None else nc4(H, stats, W, b)
        return Snapshot(stats, W, b, self.objective(y), jnp.asarray(nc4_value, stats.sigma_w.dtype))


def check_live(stats: ClassStats, flow_name: str) -> None:
    """Refuse dead directions (Σ_T singular: units that never vary), where a flow that solves
    for the ridge-free least-squares classifier has a singular system: Diffrax then stalls at
    t = 0 instead of failing. Renormalising drops them (`renormalised_features`)."""
    import numpy as np

    from .._errors import InputError, is_concrete
    from .._linalg import DEFAULT_RTOL, effective_rtol

    if not is_concrete(stats.sigma_w, stats.class_means):
        return
    s = np.linalg.eigvalsh(np.asarray(stats.sigma_t, dtype=float))
    dead = int(np.sum(s <= effective_rtol(DEFAULT_RTOL, stats.sigma_w.dtype) * max(s[-1], 0.0)))
    if dead:
        raise InputError(
            f"the {flow_name} flow's initial state has {dead} dead direction(s) (features that "
            "never vary, e.g. dead ReLU units): its least-squares system is singular; start from "
            "cp.renormalised_features(features, stats), which drops them, or drop those units"
        )


@eqx.filter_jit
def take_snapshot(flow: AbstractFlow, y: PyTree) -> Snapshot:
    """`flow.snapshot` compiled once per flow and shape (eager calls would dispatch op by op)."""
    return flow.snapshot(0.0, y)


def least_squares_residual(stats: ClassStats, W, b) -> Float[Array, "C C"]:
    """R = W M + b 1ᵀ − I: column c is the residual W μ_c + b − e_c of class c's mean."""
    return W @ stats.class_means + b[:, None] - jnp.eye(stats.num_classes, dtype=W.dtype)


def deviation_rate(W: Float[Array, "C p"], n, lam_H, sigma: Float[Array, "p p"]):
    """B Σ + Σ B for B = (1/n) WᵀW + λ_H I: the rate of Σ_W (with a minus) when every
    within-class deviation moves as dε/dt = −B ε.

    B is the identity plus a rank-C term, so this costs O(C p²) rather than the O(p³) of forming
    B and multiplying; at C ≪ p (C = 10, p = 512) that is the difference between the reduced flow
    being cheap and being dominated by p×p products.
    """
    # WᵀWΣ/n + ΣWᵀW/n = (WᵀG + GᵀW)/n with G = WΣ (Σ symmetric): one product of a p×2C and a
    # 2C×p matrix, no p×p transpose (a transpose of S cost as much as the rest of the vector
    # field, and more inside a solver's loop). Scaled as (1/n)·(…), not (…)/n, throughout the
    # flows: XLA rewrites the division differently in differently shaped programs, which broke
    # bitwise agreement across device counts (see centralpath.sweep).
    G = W @ sigma
    left = jnp.concatenate([W, G], axis=0)
    right = jnp.concatenate([G, W], axis=0)
    return (1.0 / n) * (left.T @ right) + 2 * lam_H * sigma


def deviation_step(W: Float[Array, "C p"], n, lam_H, eta, sigma: Float[Array, "p p"]):
    """T Σ Tᵀ with T = I − ηB = (1 − ηλ_H) I − (η/n) WᵀW: one exact GD step of the within-class
    deviations ε ↦ T ε, applied as two rank-C updates (O(C p²), never forming T).

    The product form (T applied on the left, then on the right) is kept on purpose: expanding
    T Σ Tᵀ into a²Σ − ac(WᵀWΣ + ΣWᵀW) + c²WᵀWΣWᵀW would cancel catastrophically along directions
    where T is nearly zero, which is exactly where a step near 1/ρ puts the stiffest direction.
    """
    a, c = 1 - eta * lam_H, eta / n
    X = a * sigma - c * (W.T @ (W @ sigma))  # T Σ
    return a * X - c * ((X @ W.T) @ W)  # (T Σ) Tᵀ
