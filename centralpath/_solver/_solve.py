"""The one call of `diffrax.diffeqsolve` in centralpath: `integrate`, `simulate`'s segments and the
sweep's batched ODE all solve through `solve`."""

from __future__ import annotations

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from ._controller import SegmentController
from ._factored import FactoredTsit5
from ._tsit5 import StagedTsit5

#: Version of the carry's layout in checkpoints; a checkpoint of another version is refused.
CARRY_FORMAT = 2


def factorable(flow) -> bool:
    """Whether a flow exposes the rank structure of its Σ rate that `FactoredTsit5` needs."""
    return all(hasattr(flow, m) for m in ("congruence", "rates_given", "sigma_of"))


def default_solver(flow, *, map=None) -> diffrax.AbstractAdaptiveSolver:
    """The solver centralpath uses for a flow: `FactoredTsit5` where the flow's Σ moves by a
    rank-structured rate (the reduced UFM), `StagedTsit5` otherwise (`map`: see
    `FactoredTsit5`)."""
    return FactoredTsit5(flow, map=map) if factorable(flow) else StagedTsit5()


class SolverCarry(eqx.Module):
    """What one segment of a run hands the next: the solver's state (the vector field at the
    segment's end: Tsit5 is first-same-as-last) and the step-size controller's state
    (`SegmentController`: the wrapped controller's state and the step it proposes next). Both
    are opaque pytrees, produced and consumed by `diffeqsolve`'s public
    `solver_state=`/`controller_state=`; resumed with the same carry, a segment takes the same
    steps bit for bit."""

    solver_state: Any
    controller_state: Any


def solve(
    vector_field,
    solver: diffrax.AbstractSolver,
    t1,
    y0,
    *,
    controller: diffrax.AbstractStepSizeController,
    saveat: diffrax.SaveAt,
    max_steps: int,
    event: diffrax.Event | None = None,
    carry: SolverCarry | None = None,
    dt0=None,
    progress_meter: diffrax.AbstractProgressMeter | None = None,
) -> diffrax.Solution:
    """Solve dy/dt = vector_field(t, y, None) from t = 0 to t1 (the flows are autonomous: every
    segment starts its clock at 0). With `carry` (and `controller` a `SegmentController`), the
    solve resumes from the previous segment's solver and controller states and takes the step
    the controller proposed there. Failures are reported in the solution (`throw=False`): the
    callers raise them with what to change."""
    resume = {}
    if carry is not None:
        resume = dict(
            solver_state=carry.solver_state,
            controller_state=carry.controller_state,
            made_jump=False,
        )
        dt0 = SegmentController.next_step(carry.controller_state)
    return diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0=0.0,
        t1=t1,
        dt0=dt0,
        y0=y0,
        saveat=saveat,
        stepsize_controller=controller,
        event=event,
        max_steps=max_steps,
        throw=False,
        progress_meter=diffrax.NoProgressMeter() if progress_meter is None else progress_meter,
        **resume,
    )


def start_carry(vector_field, solver, controller, y0, t1) -> SolverCarry:
    """The carry of a run's first segment: the controller's first step (searched for as a fresh
    solve does) and the solver's state at y0, through their public `init` methods."""
    term = diffrax.ODETerm(vector_field)
    t0 = jnp.zeros((), jnp.result_type(float))
    t1 = jnp.asarray(t1, t0.dtype)
    tnext, controller_state = controller.init(
        term, t0, t1, y0, None, None, solver.func, solver.error_order(term)
    )
    solver_state = solver.init(term, t0, tnext, y0, None)
    return SolverCarry(solver_state, controller_state)


def carry_description(carry: SolverCarry) -> str:
    """The carry's structure, leaf shapes and dtypes as one line: a checkpoint stores it, and a
    carry whose description differs (another Diffrax release, another solver) is refused."""
    leaves, treedef = jax.tree_util.tree_flatten(carry)
    shapes = ";".join(f"{tuple(x.shape)}:{jnp.dtype(x.dtype)}" for x in map(_typed, leaves))
    return f"v{CARRY_FORMAT} {treedef} {shapes}"


def _typed(x):
    """An array or shape struct as something with `.shape` and `.dtype` (a Python scalar too)."""
    return x if hasattr(x, "shape") and hasattr(x, "dtype") else jnp.asarray(x)
