"""Integrate a flow with Diffrax: adaptive steps, snapshots at requested times, an NC1 stop."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, PyTree

from ._errors import NumericalError, require
from ._float64 import float64
from ._metrics import nc1_from_gram
from ._solver import (
    SegmentController,
    SolverCarry,
    default_solver,
    solve,
    start_carry,
)
from ._trajectory import Trajectory
from .flows._base import AbstractFlow, take_snapshot


def _check_times(ts, t1) -> np.ndarray:
    ts = np.asarray(ts, dtype=float)
    require(
        ts.ndim == 1 and ts.size >= 1,
        f"save times must be a non-empty 1-D array, got shape {ts.shape}",
    )
    require(bool(np.all(np.isfinite(ts))), "save times must be finite")
    require(bool(np.all(ts >= 0)), f"save times must be >= 0, got min {ts.min()}")
    require(bool(np.all(np.diff(ts) > 0)), "save times must be strictly increasing")
    require(ts[-1] <= t1, f"the last save time {ts[-1]} is past t_end = {t1}")
    return ts


class ODEFailure(NumericalError):
    """A Diffrax solve that stopped short: where (`t_reached` of `t1`), why, and what to change."""

    def __init__(self, t_reached: float, t1: float, reason: str, hint: str):
        self.t_reached, self.t1, self.reason, self.hint = t_reached, t1, reason, hint
        super().__init__(
            f"the ODE solve stopped at t = {t_reached:.4g} before t_end = {t1:.4g}: {reason}; {hint}"
        )


@float64
def integrate(
    flow: AbstractFlow,
    y0: PyTree,
    t1: float,
    *,
    ts: ArrayLike | None = None,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    dt0: float | None = None,
    max_steps: int = 100_000,
    nc1_target: float | None = None,
    progress: bool | None = None,
) -> Trajectory:
    """Solve dy/dt = flow(t, y) from t = 0 to t1 with Diffrax and record snapshots.

    **Arguments:**

    - `flow`, `y0`: the flow (a vector field) and its initial state.
    - `t1`: final time (> 0), in the time of gradient descent (t = kη).
    - `ts`: save times in [0, t1] (default: 0 and t1).
    - `solver`: a Diffrax solver; by default the one `simulate` uses (`default_solver`:
      `FactoredTsit5(flow)` for the reduced UFM, `StagedTsit5()` otherwise; both are Tsit5 and
      take `diffrax.Tsit5`'s steps); `rtol`, `atol`: the PID controller's tolerances; `dt0`:
      first step (default: chosen by the controller); `max_steps`.
    - `nc1_target`: stop at the end of the first solver step where NC1 (the paper variant) is
      below it; later save times are dropped, the stopping state is the last snapshot and
      `stopped_early` is set.
    - `progress`: show a tqdm progress meter; `None` (default) shows it when standard error is a
      terminal, so a long solve is never silent in an interactive session.

    **Returns:** a `Trajectory`. A failed solve raises `NumericalError` saying what to change.
    """
    require(np.isfinite(t1) and t1 > 0, f"t_end must be a finite number > 0, got {t1}")
    require(rtol > 0 and atol > 0, f"rtol and atol must be > 0, got {rtol}, {atol}")
    if nc1_target is not None:
        require(nc1_target > 0, f"the NC1 target must be > 0, got {nc1_target}")
    ts = _check_times([0.0, t1] if ts is None else ts, t1)
    flow.check_state(y0)
    solver = default_solver(flow) if solver is None else solver
    event = None
    if nc1_target is not None:
        event = diffrax.Event(_BelowNC1(flow, jnp.asarray(nc1_target, float)))
    saveat = diffrax.SaveAt(
        subs=[diffrax.SubSaveAt(ts=jnp.asarray(ts), fn=flow.snapshot), diffrax.SubSaveAt(t1=True)]
    )
    sol = _solve(
        flow,
        y0,
        jnp.asarray(t1, float),
        dt0,
        solver,
        saveat,
        rtol,
        atol,
        max_steps,
        event,
        diffrax.TqdmProgressMeter() if _show_progress(progress) else diffrax.NoProgressMeter(),
    )
    stopped_early = _check_result(
        sol.result,
        flow,
        t1,
        max_steps,
        lambda: (float(sol.ts[1][-1]), jax_tree_take(sol.ys[1], -1)),
    )
    snaps_ts, _ = sol.ts
    snaps_ts = np.asarray(snaps_ts)
    final_time = float(sol.ts[1][-1])
    final = jax_tree_take(sol.ys[1], -1)
    keep = np.isfinite(snaps_ts) & (snaps_ts <= final_time)
    snapshots = jax_tree_take(sol.ys[0], np.flatnonzero(keep))
    times = snaps_ts[keep]
    if stopped_early and (times.size == 0 or times[-1] < final_time):
        # The stop falls between save times: record the stopping state as the last snapshot.
        last = take_snapshot(flow, final)
        snapshots = jax.tree_util.tree_map(
            lambda a, b: jnp.concatenate([a, b[None]]), snapshots, last
        )
        times = np.append(times, final_time)
    return Trajectory(
        times=jnp.asarray(times),
        snapshots=snapshots,
        final_state=final,
        decomposition_lambda=float(flow.decomposition_lambda),
        method="ode",
        flow=flow.name,
        reduced=flow.reduced,
        num_steps=int(sol.stats["num_steps"]),
        stopped_early=stopped_early,
        final_time=final_time,
        # The solve knows the state to about its tolerances: it limits which ω_j are resolved.
        accuracy=max(float(rtol), float(atol)),
    )


def _check_result(result, flow, t1, max_steps, end) -> bool:
    """Whether the solve stopped at the NC1 target; raise `ODEFailure` for any other stop short
    of t1, saying why and what to change (`end()`: the time and state where it stopped)."""
    stopped_early = bool(result == diffrax.RESULTS.event_occurred)
    if result == diffrax.RESULTS.successful or stopped_early:
        return stopped_early
    t_reached, final = end()
    if result == diffrax.RESULTS.max_steps_reached:
        reason = f"{max_steps} steps (max_steps) were not enough"
        cond = _sigma_w_condition(flow, final)
        if cond > 1e12:
            reason += (
                f": Sigma_W of the state is nearly singular (condition {cond:.1e}), so the "
                "flow is stiff along its collapsed or dead directions"
            )
            hint = (
                "drop dead units (cp.renormalised_features drops them), stop earlier with "
                "nc1_target, or use an implicit solver (solver=diffrax.Kvaerno5())"
            )
        else:
            hint = (
                f"the flow may be stiff here: use an implicit solver (solver="
                f"diffrax.Kvaerno5()), raise max_steps above {max_steps}, or shorten t_end"
            )
    else:
        reason = str(diffrax.RESULTS[result]).strip().rstrip(".")
        hint = "loosen rtol/atol, shorten t_end, or use an implicit solver (e.g. Kvaerno5) if stiff"
    raise ODEFailure(t_reached, t1, reason, hint)


class _BelowNC1(eqx.Module):
    """The `nc1_target` stop: a module, not a closure, so that every solve of the same flow and
    shape reuses one compiled program (a closure made per call is a new static argument: each
    of `simulate`'s segments recompiled the solve, ~16 s apiece at C = 10, p = 512). The target
    is an array, so other targets reuse it too; NC1 comes from the C×C Gram of the means (the
    O(p³) eigendecomposition of Σ_B at every step dominated the reduced flows)."""

    flow: AbstractFlow
    target: jax.Array

    def __call__(self, t, y, args, **kwargs):
        return nc1_from_gram(self.flow.class_stats(y)) < self.target


def _show_progress(progress: bool | None) -> bool:
    import sys

    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)


def _sigma_w_condition(flow: AbstractFlow, y) -> float:
    """λ_max/λ_min of Σ_W over all p directions (inf when singular): what makes a flow stiff."""
    try:
        s = np.linalg.eigvalsh(np.asarray(flow.class_stats(y).sigma_w, dtype=float))
    except Exception:  # a diverged state: no diagnosis, the generic hint stands
        return float("nan")
    return float(s[-1] / s[0]) if s[0] > 0 else float("inf")


def jax_tree_take(tree, index):
    return jax.tree_util.tree_map(lambda a: a[index], tree)


@eqx.filter_jit
def _solve(flow, y0, t1, dt0, solver, saveat, rtol, atol, max_steps, event, progress_meter):
    return solve(
        flow,
        solver,
        t1,
        y0,
        controller=diffrax.PIDController(rtol=rtol, atol=atol),
        saveat=saveat,
        max_steps=max_steps,
        event=event,
        dt0=dt0,
        progress_meter=progress_meter,
    )


# ------------------------------------------------------------------ segments of one run


class Segment(eqx.Module):
    """One segment of a run (`integrate_segment`): the state at its end (or at the NC1 stop),
    the time reached, whether the NC1 target stopped it, its solver steps, and the carry for the
    next segment (`SolverCarry`)."""

    final_state: PyTree
    final_time: float
    stopped_early: bool
    num_steps: int
    carry: SolverCarry


def _segment_controller(rtol, atol, end, norm=None):
    pid = diffrax.PIDController(rtol=rtol, atol=atol, **({} if norm is None else {"norm": norm}))
    return SegmentController(pid, jnp.asarray(end, float))


@eqx.filter_jit
def first_carry(flow, y0, t1, rtol: float, atol: float) -> SolverCarry:
    """The carry of a run's first segment (`start_carry` with the solver and controller of
    `integrate_segment`): its own small program, so that every segment is one program."""
    return start_carry(flow, default_solver(flow), _segment_controller(rtol, atol, t1), y0, t1)


def integrate_segment(
    flow: AbstractFlow,
    y0: PyTree,
    t1: float,
    carry: SolverCarry | None = None,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 100_000,
    nc1_target: float | None = None,
) -> Segment:
    """Solve dy/dt = flow(t, y) from 0 to t1 (`default_solver`, PID controller) continuing the
    solver and controller states `carry` of the previous segment (`None`: the first segment).
    Cutting a run into segments this way takes about the steps of one solve; the same carry gives
    bit-identical steps, so a run resumed from a checkpointed state and carry repeats an
    uninterrupted one.

    `nc1_target`: stop where NC1 falls below it (as `integrate`). Only the end state is kept:
    the caller takes its snapshot. A failed solve raises `ODEFailure`.
    """
    require(np.isfinite(t1) and t1 > 0, f"t_end must be a finite number > 0, got {t1}")
    require(rtol > 0 and atol > 0, f"rtol and atol must be > 0, got {rtol}, {atol}")
    if carry is None:
        carry = first_carry(flow, y0, jnp.asarray(t1, float), float(rtol), float(atol))
    event = None
    if nc1_target is not None:
        require(nc1_target > 0, f"the NC1 target must be > 0, got {nc1_target}")
        event = diffrax.Event(_BelowNC1(flow, jnp.asarray(nc1_target, float)))
    final, time, result, num_steps, carry = _solve_segment(
        flow, y0, jnp.asarray(t1, float), carry, float(rtol), float(atol), max_steps, event
    )
    stopped_early = _check_result(result, flow, t1, max_steps, lambda: (float(time), final))
    return Segment(
        final_state=final,
        final_time=float(time),
        stopped_early=stopped_early,
        num_steps=int(num_steps),
        carry=carry,
    )


def solve_segment(flow, y0, t1, carry, controller, max_steps, event=None, solver=None):
    """One segment, traceable (the sweep maps it over its save times): (end state, end time,
    result, steps, carry). Saved only at t1, with a boolean event: nothing interpolates."""
    sol = solve(
        flow,
        default_solver(flow) if solver is None else solver,
        t1,
        y0,
        controller=controller,
        saveat=diffrax.SaveAt(t1=True, solver_state=True, controller_state=True),
        max_steps=max_steps,
        event=event,
        carry=carry,
    )
    final = jax.tree_util.tree_map(lambda a: a[0], sol.ys)
    carry = SolverCarry(sol.solver_state, sol.controller_state)
    return final, sol.ts[0], sol.result, sol.stats["num_steps"], carry


@eqx.filter_jit
def _solve_segment(flow, y0, t1, carry, rtol, atol, max_steps, event):
    # Taken apart here, not by the caller: indexing the solution outside compiles a small
    # program per leaf and dispatches it at every segment.
    return solve_segment(flow, y0, t1, carry, _segment_controller(rtol, atol, t1), max_steps, event)


def compile_segment(
    flow: AbstractFlow,
    y0: PyTree,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 100_000,
    nc1_target: float | None = None,
) -> None:
    """Compile `integrate_segment`'s programs for states shaped like `y0` (any values: it is
    solved over an empty interval, t1 = 0, so nothing steps), e.g. on another thread while the
    real initial state is still being drawn. The same arguments but values as the later calls:
    they then find the programs compiled."""
    event = None
    if nc1_target is not None:
        event = diffrax.Event(_BelowNC1(flow, jnp.asarray(nc1_target, float)))
    t1 = jnp.asarray(0.0, float)
    carry = first_carry(flow, y0, t1, float(rtol), float(atol))
    out = _solve_segment(flow, y0, t1, carry, float(rtol), float(atol), max_steps, event)
    jax.block_until_ready(out)
