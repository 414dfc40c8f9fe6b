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


# ------------------------------------------------------------------ segments of one run

#: What a segmented solve carries from one segment to the next: the PID controller's error
#: history (1/error of the last two accepted steps, and whether it sits at dtmin) and the step
#: it proposes next. `dt` = NaN: nothing carried, search for a first step as a fresh solve does.
StepCarry = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


def fresh_carry() -> StepCarry:
    """The carry of a run's first segment: no step history yet."""
    return (jnp.ones(()), jnp.ones(()), jnp.asarray(False), jnp.asarray(jnp.nan))


def _carry_arrays(carry: StepCarry | None) -> StepCarry:
    """The carry as the arrays the compiled segment takes (one dtype whatever its source: a
    previous segment, a checkpoint, or a fresh start), so that all share one program."""
    carry = fresh_carry() if carry is None else carry
    dtypes = (float, float, bool, float)
    return tuple(jnp.asarray(c, dtype=d) for c, d in zip(carry, dtypes, strict=True))


class Segment(eqx.Module):
    """One segment of a run (`integrate_segment`): the state at its end (or at the NC1 stop),
    the time reached, whether the NC1 target stopped it, its solver steps, and the carry for the
    next segment."""

    final_state: PyTree
    final_time: float
    stopped_early: bool
    num_steps: int
    carry: StepCarry


class _CarriedPID(diffrax.AbstractAdaptiveStepSizeController):
    """A PID controller that starts from a carried step history (`StepCarry`) and hands it on.

    A fresh `diffeqsolve` per segment searched for its first step and ramped the PID controller
    up again at every save time (836 steps against 756 for one solve at C = 10, p = 512). The
    segment's last step is shortened to land on its end: it says nothing about the step the
    solution allows, so the carry skips it, and the next segment continues as an uncut solve
    would have. The carry lives in the controller's fields (arrays), so the first segment and
    every later one are the same compiled program."""

    pid: diffrax.PIDController
    end: jax.Array
    carry: StepCarry
    rtol: float
    atol: float
    norm: object = eqx.field(static=True)

    def wrap(self, direction):
        return eqx.tree_at(lambda c: c.pid, self, self.pid.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        inv_error, prev_inv_error, at_dtmin, dt = self.carry
        t0 = jnp.asarray(t0, jnp.result_type(dt))

        def search(_):
            tnext, (a, b, c) = self.pid.init(terms, t0, t1, y0, None, args, func, error_order)
            return jnp.asarray(tnext, t0.dtype), (
                jnp.asarray(a, inv_error.dtype),
                jnp.asarray(b, inv_error.dtype),
                jnp.asarray(c, bool),
            )

        def carried(_):
            return t0 + dt, (inv_error, prev_inv_error, at_dtmin)

        tnext, state = jax.lax.cond(jnp.isnan(dt), search, carried, None)
        return tnext, (state, tnext - t0)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        pid_state, proposed = state
        keep, next_t0, next_t1, jump, new_state, result = self.pid.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, pid_state
        )
        cut = keep & (t1 >= self.end) & (t1 - t0 < proposed)
        new_state = jax.tree_util.tree_map(
            lambda old, new: jnp.where(cut, old, new), pid_state, new_state
        )
        proposed = jnp.where(cut, proposed, next_t1 - next_t0)
        return keep, next_t0, next_t1, jump, (new_state, proposed), result


def _linear_combination(coefficients, increments):
    """Σ_j a_j k_j over the nonzero a_j, leaf by leaf: one fused elementwise pass."""
    pairs = [(float(a), k) for a, k in zip(coefficients, increments, strict=True) if a != 0]
    return jax.tree.map(
        lambda *leaves: sum(a * k for (a, _), k in zip(pairs, leaves, strict=True)),
        *(k for _, k in pairs),
    )


class _Tsit5(diffrax.Tsit5):
    """Diffrax's Tsit5 (the same tableau, FSAL state and dense output) with its stages written
    out: each stage's input is one fused pass over the previous stages' increments. Diffrax
    loops over the stages and forms every stage's input as a dot with all seven stored stages,
    which on a large state (Σ_W, p×p) cost more than the vector field: ~12 ms of every ~20 ms
    step at C = 10, p = 512 against ~3 ms here."""

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        first_step, f_last = solver_state
        control = terms.contr(t0, t1)
        dt = t1 - t0
        f0 = jax.lax.cond(first_step | made_jump, lambda: terms.vf(t0, y0, args), lambda: f_last)
        ks = [terms.prod(f0, control)]

        for row, c in zip(self.tableau.a_lower, self.tableau.c, strict=True):
            yi = jax.tree.map(jnp.add, y0, _linear_combination(row, ks))
            fi = terms.vf(t0 + float(c) * dt, yi, args)
            ks.append(terms.prod(fi, control))
        # The last stage is evaluated at y1 itself (Tsit5 is FSAL): its vector field starts the
        # next step.
        y_error = _linear_combination(self.tableau.b_error, ks)
        dense_info = dict(y0=y0, y1=yi, k=jax.tree.map(lambda *k: jnp.stack(k), *ks))
        return yi, y_error, dense_info, (jnp.asarray(False), fi), diffrax.RESULTS.successful


class _LowRankTsit5(_Tsit5):
    """Tsit5 for flows whose p×p leaf Σ moves by a rank-structured rate (the reduced UFM):
    dΣ/dt = −s (WᵀG + GᵀW) − 2λ Σ with G = W Σ (W: C×p), and Σ enters every other rate only
    through G (`flow.congruence`, `flow.rates_given`, `flow.sigma_of`).

    Every stage's Σ is then α Σ₀ + Σ_k β_k P_k with P_k = W_kᵀG_k + G_kᵀW_k the stages' rank-2C
    terms and scalars α, β from the tableau (exact algebra, no approximation). A stage needs
    only its G = α (W Σ₀) + Σ_k β_k [(W W_kᵀ) G_k + (W G_kᵀ) W_k]: one C×p×p product (y1's
    too). Σ is formed only at y1 and for the error estimate, both by one product of the shared
    p×(2C·stages) factor (`_low_rank_sums`). The dense Tsit5 formed the p×p rate and the p×p
    input of every stage (5.4–7.0 ms per step at C = 10, p = 512, against 3.1–4.0 ms here, same
    runs): same tableau, same error estimate and norm, so the same steps to rounding.

    `interpolates=False` leaves out the dense output (its stage increments as zeros of their
    shape): for a solve that saves only at t1 and stops on a boolean event, where Diffrax
    carries the dense output but never reads it. Forming it was ~0.4 s of tracing and
    compiling at C = 10, p = 512.
    """

    interpolates: bool = True

    def init(self, terms, t0, t1, y0, args):
        flow = _flow_of(terms)
        W, _, _ = flow.congruence(y0)
        G = W @ flow.sigma_of(y0)
        f = flow.rates_given(eqx.tree_at(flow.sigma_of, y0, None), G)
        zeros = jax.tree.map(jnp.zeros_like, (f, G))
        return jnp.asarray(True), zeros

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        flow = _flow_of(terms)
        tab = self.tableau
        h = t1 - t0
        S0 = flow.sigma_of(y0)
        small0 = eqx.tree_at(flow.sigma_of, y0, None)
        W0, scale, lam = flow.congruence(y0)
        first_step, last = solver_state

        def fresh():
            G = W0 @ S0
            return flow.rates_given(small0, G), G

        f0, G0 = jax.lax.cond(first_step | made_jump, fresh, lambda: last)
        # Stage k's Σ = alpha[k] Σ₀ + Σ_m beta[k][m] P_m; its rate −scale P_k − 2λ (that Σ).
        alpha, beta = [1.0], [[]]
        Ws, Gs, ks = [W0], [G0], [jax.tree.map(lambda a: h * a, f0)]

        def combine(row, values):
            return sum(float(a) * v for a, v in zip(row, values, strict=True) if a != 0)

        def sigma_coefficients(row):
            """(α, β) of Σ₀ + h Σ_k row[k] (rate of stage k)."""
            a = 1 - 2 * lam * h * combine(row, alpha)
            b = [
                -scale * h * float(row[m])
                - 2 * lam * h * combine(row, [bk[m] if m < len(bk) else 0.0 for bk in beta])
                for m in range(len(row))
            ]
            return a, b

        # Every stage's G in factored form, y1's included (the last row: Tsit5 is FSAL), so that
        # Σ is formed only at the end, at y1 and in the error estimate, by one product.
        for row in tab.a_lower:
            small = jax.tree.map(jnp.add, small0, _linear_combination(row, ks))
            a, b = sigma_coefficients(row)
            W, _, _ = flow.congruence(small)
            G = a * (W @ S0) + sum(
                bm * ((W @ Wm.T) @ Gm + (W @ Gm.T) @ Wm)
                for bm, Wm, Gm in zip(b, Ws, Gs, strict=True)
            )
            f = flow.rates_given(small, G)
            alpha.append(a), beta.append(b), Ws.append(W), Gs.append(G)
            ks.append(jax.tree.map(lambda v: h * v, f))
        small1, a1, b1, f1, G1 = small, a, b, f, G
        # The error estimate Σ_k e_k (h · rate of stage k), Σ's part in the same form.
        e = tab.b_error
        small_err = _linear_combination(e, ks)
        a_err = -2 * lam * h * combine(e, alpha)
        b_err = [
            -scale * h * float(e[m])
            - 2 * lam * h * combine(e, [bk[m] if m < len(bk) else 0.0 for bk in beta])
            for m in range(len(e))
        ]
        S1, S_err = _low_rank_sums(S0, Ws, Gs, [(a1, b1), (a_err, b_err)])
        y1 = eqx.tree_at(flow.sigma_of, small1, S1, is_leaf=lambda x: x is None)
        y_error = eqx.tree_at(flow.sigma_of, small_err, S_err, is_leaf=lambda x: x is None)

        def dense_increment(k):  # h · (rate of stage k), Σ's leaf formed (only if interpolated)
            coefficients = [
                -scale * h * (m == k) - 2 * lam * h * (beta[k][m] if m < len(beta[k]) else 0.0)
                for m in range(k + 1)
            ]
            (S_rate,) = _low_rank_sums(
                S0, Ws[: k + 1], Gs[: k + 1], [(-2 * lam * h * alpha[k], coefficients)]
            )
            return eqx.tree_at(flow.sigma_of, ks[k], S_rate, is_leaf=lambda x: x is None)

        if self.interpolates:
            k_dense = [dense_increment(k) for k in range(len(ks))]
        else:
            k_dense = [jax.tree.map(jnp.zeros_like, y0)] * len(ks)
        dense_info = dict(y0=y0, y1=y1, k=jax.tree.map(lambda *k: jnp.stack(k), *k_dense))
        return y1, y_error, dense_info, (jnp.asarray(False), (f1, G1)), diffrax.RESULTS.successful


def _flow_of(terms):
    """The flow inside `diffeqsolve`'s terms (it wraps the ODETerm to fix the direction of
    time; the flows are autonomous and solved forward, so the wrapper changes nothing here)."""
    while not isinstance(terms, diffrax.ODETerm):
        terms = terms.term
    return terms.vector_field


def _low_rank_sums(S0, Ws, Gs, coefficients):
    """[a Σ₀ + Σ_m b_m (W_mᵀG_m + G_mᵀW_m) for (a, b) in coefficients] (b padded with zeros to
    the length of Ws) from one product: the shared p×2K factor [W; G]ᵀ times the 2K×p factors
    [b·G; b·W] side by side (K: the rows of all the W_m). At p = 512 forming y1 and the error
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


def integrate_segment(
    flow: AbstractFlow,
    y0: PyTree,
    t1: float,
    carry: StepCarry | None = None,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 100_000,
    nc1_target: float | None = None,
) -> Segment:
    """Solve dy/dt = flow(t, y) from 0 to t1 (Tsit5, PID controller) continuing the step history
    `carry` of the previous segment (`None`: the first segment). Cutting a run into segments
    this way takes about the steps of one solve; the same carry gives bit-identical steps, so a
    run resumed from a checkpointed state and carry repeats an uninterrupted one.

    `nc1_target`: stop where NC1 falls below it (as `integrate`). Only the end state is kept:
    the caller takes its snapshot. A failed solve raises `ODEFailure`.
    """
    require(np.isfinite(t1) and t1 > 0, f"t_end must be a finite number > 0, got {t1}")
    require(rtol > 0 and atol > 0, f"rtol and atol must be > 0, got {rtol}, {atol}")
    carry = _carry_arrays(carry)
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


@eqx.filter_jit
def _solve_segment(flow, y0, t1, carry, rtol, atol, max_steps, event):
    pid = diffrax.PIDController(rtol=rtol, atol=atol)
    controller = _CarriedPID(pid, t1, carry, pid.rtol, pid.atol, pid.norm)
    # Flows whose Σ_W moves by a multiple of itself plus a rank-2C term take the factored step;
    # saved only at t1, with a boolean event (no root find), nothing interpolates.
    solver = _LowRankTsit5(interpolates=False) if hasattr(flow, "rates_given") else _Tsit5()
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(flow),
        solver,
        t0=0.0,
        t1=t1,
        dt0=None,
        y0=y0,
        saveat=diffrax.SaveAt(t1=True, controller_state=True),
        stepsize_controller=controller,
        event=event,
        max_steps=max_steps,
        throw=False,
    )
    (inv_error, prev_inv_error, at_dtmin), dt = sol.controller_state
    # Taken apart here, not by the caller: indexing the solution outside compiles a small
    # program per leaf and dispatches it at every segment.
    final = jax.tree_util.tree_map(lambda a: a[0], sol.ys)
    carry = (inv_error, prev_inv_error, at_dtmin, dt)
    return final, sol.ts[0], sol.result, sol.stats["num_steps"], carry


def compile_segment(
    flow: AbstractFlow,
    y0: PyTree,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 100_000,
    nc1_target: float | None = None,
) -> None:
    """Compile `integrate_segment`'s program for states shaped like `y0` (any values: it is
    solved over an empty interval, t1 = 0, so nothing steps), e.g. on another thread while the
    real initial state is still being drawn. The same arguments but values as the later calls:
    they then find the program compiled."""
    event = None
    if nc1_target is not None:
        event = diffrax.Event(_BelowNC1(flow, jnp.asarray(nc1_target, float)))
    out = _solve_segment(
        flow,
        y0,
        jnp.asarray(0.0, float),
        _carry_arrays(None),
        float(rtol),
        float(atol),
        max_steps,
        event,
    )
    jax.block_until_ready(out)
