"""`simulate` cuts its ODE at the save times; the segments carry the step-size controller's
history over, so cutting costs about nothing against one solve and stays accurate."""

import jax
import jax.numpy as jnp
import numpy as np

import centralpath.simulate as S
from centralpath._integrate import integrate, integrate_segment


def _problem():
    config = dict(S.DEFAULTS, flow="ufm", classes=3, per_class=10, dim=6)
    flow, y0, _ = S.build(config)
    return flow, y0, S.save_times(50.0, 12)


def _segmented(flow, y0, ts, carry_over: bool):
    y, carry, steps = y0, None, 0
    for k in range(len(ts) - 1):
        segment = integrate_segment(flow, y, float(ts[k + 1] - ts[k]), carry)
        y, steps = segment.final_state, steps + segment.num_steps
        carry = segment.carry if carry_over else None
    return y, steps


def test_carried_segments_take_about_the_steps_of_one_solve():
    flow, y0, ts = _problem()
    one = integrate(flow, y0, float(ts[-1]), ts=ts)
    carried, carried_steps = _segmented(flow, y0, ts, carry_over=True)
    _, fresh_steps = _segmented(flow, y0, ts, carry_over=False)
    # At most the one solve's steps plus the shortened last step of each segment; a fresh
    # start per segment searches for a first step and ramps the controller up every time.
    assert carried_steps <= one.num_steps + len(ts) - 1, (carried_steps, one.num_steps)
    assert carried_steps < fresh_steps, (carried_steps, fresh_steps)
    for a, b in zip(jax.tree.leaves(carried), jax.tree.leaves(one.final_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_a_segment_resumed_from_its_carry_is_bit_identical():
    """What a resumed run relies on: the same state and carry (here through NumPy, as from a
    checkpoint) give the same steps and the same bits."""
    flow, y0, ts = _problem()
    first = integrate_segment(flow, y0, float(ts[3]))
    restored = jax.tree.map(lambda a: np.asarray(a), (first.final_state, first.carry))
    a = integrate_segment(flow, first.final_state, 7.0, first.carry)
    b = integrate_segment(flow, jax.tree.map(jax.numpy.asarray, restored[0]), 7.0, restored[1])
    assert a.num_steps == b.num_steps
    for x, y in zip(jax.tree.leaves(a.final_state), jax.tree.leaves(b.final_state), strict=True):
        np.testing.assert_array_equal(x, y)


def test_written_out_tsit5_is_diffrax_tsit5():
    """`_Tsit5` only reorganises the stage sums: the same solve to rounding, and the same
    number of steps."""
    import diffrax

    from centralpath._integrate import _Tsit5

    flow, y0, _ = _problem()

    def solve(solver):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(flow),
            solver,
            0.0,
            20.0,
            None,
            y0,
            saveat=diffrax.SaveAt(ts=[5.0, 20.0]),
            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
        )

    ours, theirs = solve(_Tsit5()), solve(diffrax.Tsit5())
    assert int(ours.stats["num_steps"]) == int(theirs.stats["num_steps"])
    for a, b in zip(jax.tree.leaves(ours.ys), jax.tree.leaves(theirs.ys), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_the_ode_program_compiles_while_the_initial_state_is_drawn():
    """`simulate` compiles the segment program on a second thread from the state's shapes; the
    first segment then finds it compiled (a failure there would only be silent slowness)."""
    import logging

    threads = []

    class Handler(logging.Handler):
        def emit(self, record):
            if "Finished XLA compilation of jit(_solve_segment)" in record.getMessage():
                threads.append(record.threadName)

    logger, handler = logging.getLogger("jax"), Handler()
    logger.addHandler(handler)
    previous = jax.config.jax_log_compiles
    jax.config.update("jax_log_compiles", True)
    try:  # a shape no other test compiles
        config = dict(flow="ufm", classes=4, per_class=3, dim=7, methods=["ode"], t_end=5.0)
        lines = []
        S.simulate({**config, "num_saves": 3}, log=lines.append)
    finally:
        jax.config.update("jax_log_compiles", previous)
        logger.removeHandler(handler)
    assert threads == ["centralpath-compile"], threads
    # The run counts its steps (the segments' sum; it used to log 0).
    steps = [int(s.split()[1]) for s in lines if s.startswith("ode:") and "adaptive" in s]
    assert steps and steps[0] > 0, lines


def _reduced_problem(lam_h=0.05):
    """A reduced UFM with p > 2C, so Σ_W's rank-2C moves are a real factorisation, and weight
    decay on H, so Σ_W's own decay term is exercised."""
    config = dict(S.DEFAULTS, flow="ufm", classes=3, per_class=10, dim=16, lam_h=lam_h)
    flow, y0, _ = S.build(config)
    assert hasattr(flow, "rates_given")
    return flow, y0


def test_low_rank_tsit5_step_is_the_dense_step():
    """`_LowRankTsit5` forms Σ_W only at y1 and in the error estimate, from factored stages:
    exact algebra, so y1, the error estimate and every dense-output increment equal the dense
    step's to rounding, on the first step and on an FSAL step after it."""
    import diffrax
    import equinox as eqx

    from centralpath._integrate import _LowRankTsit5, _Tsit5

    flow, y0 = _reduced_problem()
    terms = diffrax.ODETerm(flow)
    for h in (0.1, 0.5):  # steps of the size the controller takes here (h = 4 overflows)
        runs = []
        for solver in (_Tsit5(), _LowRankTsit5()):
            step = eqx.filter_jit(solver.step)
            state = solver.init(terms, 0.0, h, y0, None)
            y1, err1, _, state, _ = step(terms, 0.0, h, y0, None, state, False)
            y2, err2, dense2, _, _ = step(terms, h, 2 * h, y1, None, state, False)
            runs.append((y1, err1, y2, err2, dense2["k"]))
        # Each quantity is compared at the scale its rounding lives on: an error estimate is a
        # small difference of stage sums, so it is held to the state's scale, and a constant
        # leaf's (the class counts') increments are exactly zero in both.
        (y1, err1, y2, err2, k), (y1_, err1_, y2_, err2_, k_) = runs
        for dense, low_rank, ref in (
            (y1, y1_, y1),
            (err1, err1_, y1),
            (y2, y2_, y2),
            (err2, err2_, y2),
            (k, k_, k),
        ):
            for a, b, r in zip(*map(jax.tree.leaves, (dense, low_rank, ref)), strict=True):
                scale = max(float(np.max(np.abs(r))), float(np.max(np.abs(a))))
                np.testing.assert_allclose(b, a, rtol=0, atol=1e-12 * scale)


def test_low_rank_tsit5_solves_as_diffrax_tsit5():
    """Through `diffeqsolve` (its wrapped terms, the controller, the interpolation at save
    times): the same steps as Diffrax's Tsit5 and the same solution to solver tolerance; and
    `integrate_segment` takes the factored step for the reduced UFM."""
    import diffrax

    from centralpath._integrate import _LowRankTsit5

    flow, y0 = _reduced_problem()

    def solve(solver):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(flow),
            solver,
            0.0,
            30.0,
            None,
            y0,
            saveat=diffrax.SaveAt(ts=[2.5, 11.0, 30.0]),
            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
        )

    ours, theirs = solve(_LowRankTsit5()), solve(diffrax.Tsit5())
    assert int(ours.stats["num_steps"]) == int(theirs.stats["num_steps"])
    for a, b in zip(jax.tree.leaves(ours.ys), jax.tree.leaves(theirs.ys), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    segment = integrate_segment(flow, y0, 30.0)
    final = jax.tree.map(lambda a: a[-1], theirs.ys)
    for a, b in zip(jax.tree.leaves(segment.final_state), jax.tree.leaves(final), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_segment_stopped_by_the_nc1_event_is_diffrax_tsit5s():
    """`integrate_segment` leaves out the dense output (nothing interpolates a t1-only save with
    a boolean event): the NC1 stop comes at the same step, with the same state, as a solve that
    forms it; `integrate_segment` stops after as many steps as Diffrax's own Tsit5."""
    import diffrax

    from centralpath._integrate import _BelowNC1, _LowRankTsit5
    from centralpath._moment_metrics import nc1_from_gram

    flow, y0 = _reduced_problem()
    target = 0.5 * float(nc1_from_gram(flow.class_stats(y0)))

    def solve(solver):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(flow),
            solver,
            0.0,
            1e4,
            None,
            y0,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
            event=diffrax.Event(_BelowNC1(flow, jnp.asarray(target))),
            max_steps=100_000,
        )

    segment = integrate_segment(flow, y0, 1e4, nc1_target=target)
    assert segment.stopped_early
    left_out, formed = solve(_LowRankTsit5(interpolates=False)), solve(_LowRankTsit5())
    theirs = solve(diffrax.Tsit5())
    # Left out or formed, the dense output changes nothing: bit for bit.
    for a, b in zip(jax.tree.leaves(left_out.ys), jax.tree.leaves(formed.ys), strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(left_out.ts[0]) == float(formed.ts[0])
    # Against Diffrax's own Tsit5: the same steps; the step sizes differ by rounding (their
    # error norms do), which moves the stop time by ~1e-8 relative over 150 steps.
    assert segment.num_steps == int(theirs.stats["num_steps"])
    np.testing.assert_allclose(segment.final_time, float(theirs.ts[0]), rtol=1e-7)
    assert float(nc1_from_gram(flow.class_stats(segment.final_state))) < target
