"""`simulate` cuts its ODE at the save times; the segments carry the step-size controller's
history over, so cutting costs about nothing against one solve and stays accurate."""

import jax
import numpy as np

import centralpath.simulate as S
from centralpath._integrate import integrate, integrate_segment


def _problem():
    config = S.SimulationConfig(flow="ufm", classes=3, per_class=10, dim=6)
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


def test_background_work_is_one_switch_with_the_same_bits():
    """`background=False` compiles and computes the metrics on the calling thread: the same
    results bit for bit as the default (a second thread for both)."""
    config = dict(flow="ufm", classes=3, per_class=4, dim=5, t_end=5.0, num_saves=4, eta=0.1)
    a = S.simulate(config)
    b = S.simulate(config, background=False)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_failure_while_compiling_ahead_is_raised_not_swallowed(monkeypatch):
    """The early compile is the same program as the first segment: what fails there is raised
    when the run joins it, never lost in a daemon thread."""
    import centralpath._integrate as integ

    def broken(*args, **kwargs):
        raise RuntimeError("compiling ahead failed")

    monkeypatch.setattr(integ, "compile_segment", broken)
    config = dict(
        flow="ufm", classes=3, per_class=4, dim=5, t_end=5.0, num_saves=3, methods=["ode"]
    )
    import pytest

    with pytest.raises(RuntimeError, match="compiling ahead failed"):
        S.simulate(config)
