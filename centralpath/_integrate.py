"""Integrate a flow with Diffrax: adaptive steps, snapshots at requested times, an NC1 stop."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, PyTree

from ._errors import NumericalError, require
from ._moment_metrics import nc1_from_gram
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
    - `solver`: a Diffrax solver (default `Tsit5()`); `rtol`, `atol`: the PID controller's
      tolerances; `dt0`: first step (default: chosen by the controller); `max_steps`.
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
    solver = diffrax.Tsit5() if solver is None else solver
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
    result = sol.result
    stopped_early = bool(result == diffrax.RESULTS.event_occurred)
    if not (result == diffrax.RESULTS.successful or stopped_early):
        t_reached = float(sol.ts[1][-1]) if sol.ts is not None else float("nan")
        if result == diffrax.RESULTS.max_steps_reached:
            reason = f"{max_steps} steps (max_steps) were not enough"
            cond = _sigma_w_condition(flow, jax_tree_take(sol.ys[1], -1))
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
    return diffrax.diffeqsolve(
        diffrax.ODETerm(flow),
        solver,
        t0=0.0,
        t1=t1,
        dt0=dt0,
        y0=y0,
        saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        event=event,
        max_steps=max_steps,
        throw=False,
        progress_meter=progress_meter,
    )
