"""centralpath's Diffrax solvers (`centralpath._solver`): the same method as `diffrax.Tsit5`
(tableau, steps, values, dense output), the factored step equal to the staged one, and the
seam itself (public Diffrax API only, one `diffeqsolve` call)."""

import ast
import pathlib

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import centralpath.simulate as S
from centralpath._integrate import _BelowNC1, first_carry, integrate, integrate_segment
from centralpath._metrics import nc1_from_gram
from centralpath._solver import (
    DENSE,
    TABLEAU,
    FactoredTsit5,
    SegmentController,
    StagedTsit5,
    dense_weights,
)

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "centralpath"


def _problem():
    config = S.SimulationConfig(flow="ufm", classes=3, per_class=10, dim=6)
    flow, y0, _ = S.build(config)
    return flow, y0


def _reduced_problem(lam_h=0.05):
    """A reduced UFM with p > 2C, so Σ_W's rank-2C moves are a real factorisation, and weight
    decay on H, so Σ_W's own decay term is exercised."""
    config = S.SimulationConfig(flow="ufm", classes=3, per_class=10, dim=16, lam_h=lam_h)
    flow, y0, _ = S.build(config)
    assert hasattr(flow, "rates_given")
    return flow, y0


def _solve(flow, y0, solver, t1, dt0=None, **kw):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(flow),
        solver,
        0.0,
        t1,
        dt0,
        y0,
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
        **kw,
    )


def _close(a_tree, b_tree, rtol, atol):
    for a, b in zip(jax.tree.leaves(a_tree), jax.tree.leaves(b_tree), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_dense_weights_are_tsitouras_continuous_extension():
    """b_i(0) = 0 (the interpolant starts at y0), b_i(1) = the step's weights (it ends at y1),
    and Σ_i b_i(θ) = θ (exact for a constant vector field)."""
    np.testing.assert_allclose(np.asarray(dense_weights(0.0)), 0.0, atol=0)
    # The coefficients are given to 17 digits and summed: rounding of a few ulps of the terms.
    rounding = 4 * np.finfo(float).eps * np.abs(DENSE).sum(axis=1)
    assert np.all(np.abs(np.asarray(dense_weights(1.0)) - TABLEAU.b_sol) <= rounding)
    for theta in (0.1, 0.37, 0.9):
        assert abs(float(jnp.sum(dense_weights(theta))) - theta) < rounding.sum()
    assert DENSE.shape == (7, 4)


def test_dense_output_is_fourth_order():
    """The interpolant's error at mid-step on y' = −y falls as h⁵ (local order 4 + 1): the
    slope of log error against log h, as Diffrax checks solver orders."""
    f = lambda t, y, args: -y  # noqa: E731
    term = diffrax.ODETerm(f)
    solver = StagedTsit5()
    errors, hs = [], [0.4, 0.2, 0.1, 0.05]
    for h in hs:
        y0 = jnp.asarray([1.0])
        state = solver.init(term, 0.0, h, y0, None)
        _, _, dense, _, _ = solver.step(term, 0.0, h, y0, None, state, False)
        mid = solver.interpolation_cls(t0=0.0, t1=h, **dense).evaluate(h / 2)
        errors.append(abs(float(mid[0]) - np.exp(-h / 2)))
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert 4.6 < slope < 5.6, (slope, errors)


def test_staged_tsit5_is_diffrax_tsit5():
    """`StagedTsit5` only reorganises the stage sums: the same steps, the same solution at the
    save times (interpolated by our dense output against Diffrax's) to rounding."""
    flow, y0 = _problem()
    ts = diffrax.SaveAt(ts=[0.7, 5.0, 13.3, 20.0])
    ours, theirs = (
        _solve(flow, y0, StagedTsit5(), 20.0, saveat=ts),
        _solve(flow, y0, diffrax.Tsit5(), 20.0, saveat=ts),
    )
    assert int(ours.stats["num_steps"]) == int(theirs.stats["num_steps"])
    _close(ours.ys, theirs.ys, 1e-11, 1e-13)


def test_factored_step_is_the_staged_step():
    """`FactoredTsit5` forms Σ_W only at y1 and in the error estimate, from factored stages:
    exact algebra, so y1, the error estimate and the dense output at any θ equal the staged
    step's to rounding, on the first step and on an FSAL step after it."""
    flow, y0 = _reduced_problem()
    terms = diffrax.ODETerm(flow)
    for h in (0.1, 0.5):  # steps of the size the controller takes here (h = 4 overflows)
        runs = []
        for solver in (StagedTsit5(), FactoredTsit5(flow)):
            step = eqx.filter_jit(solver.step)
            state = solver.init(terms, 0.0, h, y0, None)
            y1, err1, _, state, _ = step(terms, 0.0, h, y0, None, state, False)
            y2, err2, dense2, _, _ = step(terms, h, 2 * h, y1, None, state, False)
            interp = solver.interpolation_cls(t0=h, t1=2 * h, **dense2)
            between = [interp.evaluate(h + theta * h) for theta in (0.0, 0.3, 0.85, 1.0)]
            runs.append((y1, err1, y2, err2, between))
        # Each quantity is compared at the scale its rounding lives on: an error estimate is a
        # small difference of stage sums, so it is held to the state's scale, and a constant
        # leaf's (the class counts') increments are exactly zero in both.
        (y1, err1, y2, err2, mid), (y1_, err1_, y2_, err2_, mid_) = runs
        for staged, factored, ref in (
            (y1, y1_, y1),
            (err1, err1_, y1),
            (y2, y2_, y2),
            (err2, err2_, y2),
            (mid, mid_, mid),
        ):
            for a, b, r in zip(*map(jax.tree.leaves, (staged, factored, ref)), strict=True):
                scale = max(float(np.max(np.abs(r))), float(np.max(np.abs(a))))
                np.testing.assert_allclose(b, a, rtol=0, atol=1e-12 * scale)
        # The dense output ends where the step does.
        _close(mid_[-1], y2_, 0, 1e-12 * float(np.max(np.abs(y2_.stats.sigma_w))))


def test_factored_tsit5_solves_as_diffrax_tsit5():
    """Through `diffeqsolve` (its wrapped terms, the controller, the interpolation at save
    times, and dense output): the same steps as Diffrax's Tsit5 and the same solution to
    solver tolerance; `integrate_segment` and `integrate` take the factored step."""
    flow, y0 = _reduced_problem()
    ts = diffrax.SaveAt(ts=[2.5, 11.0, 30.0], dense=True)
    ours = _solve(flow, y0, FactoredTsit5(flow), 30.0, saveat=ts)
    theirs = _solve(flow, y0, diffrax.Tsit5(), 30.0, saveat=ts)
    assert int(ours.stats["num_steps"]) == int(theirs.stats["num_steps"])
    _close(ours.ys, theirs.ys, 1e-9, 1e-12)
    for t in (0.3, 7.77, 29.0):  # the dense solution between save times
        _close(ours.evaluate(t), theirs.evaluate(t), 1e-9, 1e-12)
    final = jax.tree.map(lambda a: a[-1], theirs.ys)
    _close(integrate_segment(flow, y0, 30.0).final_state, final, 1e-9, 1e-11)
    trajectory = integrate(flow, y0, 30.0, ts=[0.0, 2.5, 11.0, 30.0])
    assert trajectory.num_steps == int(theirs.stats["num_steps"])
    _close(trajectory.final_state, final, 1e-9, 1e-12)


def test_segment_stopped_by_the_nc1_event_is_diffrax_tsit5s():
    """The NC1 stop comes at the same step, with the same state, for `integrate_segment` (the
    factored solver, a carried controller) as for Diffrax's own Tsit5 started with the same
    first step. (A run's first step is chosen by the PID controller's public `init` on the
    flow's term; inside `diffeqsolve` the term is wrapped and Diffrax starts at 0.01.)"""
    flow, y0 = _reduced_problem()
    target = 0.5 * float(nc1_from_gram(flow.class_stats(y0)))
    carry = first_carry(flow, y0, jnp.asarray(1e4), 1e-10, 1e-12)
    dt0 = float(SegmentController.next_step(carry.controller_state))
    theirs = _solve(
        flow,
        y0,
        diffrax.Tsit5(),
        1e4,
        dt0=dt0,
        saveat=diffrax.SaveAt(t1=True),
        event=diffrax.Event(_BelowNC1(flow, jnp.asarray(target))),
        max_steps=100_000,
    )
    segment = integrate_segment(flow, y0, 1e4, nc1_target=target)
    assert segment.stopped_early
    # The same steps; the step sizes differ by rounding (their error norms do), which moves the
    # stop time by ~1e-8 relative over 150 steps.
    assert segment.num_steps == int(theirs.stats["num_steps"])
    np.testing.assert_allclose(segment.final_time, float(theirs.ts[0]), rtol=1e-7)
    assert float(nc1_from_gram(flow.class_stats(segment.final_state))) < target


@pytest.mark.parametrize("reduced", [False, True])
def test_solver_state_resumes_a_solve_exactly(reduced):
    """Diffrax's public resume: a solve cut at t = 4 and continued with the saved solver and
    controller states (no carry wrapper) reaches the uncut solve's state to solver tolerance."""
    flow, y0 = _reduced_problem() if reduced else _problem()
    solver = FactoredTsit5(flow) if reduced else StagedTsit5()
    whole = _solve(flow, y0, solver, 10.0)
    first = _solve(
        flow,
        y0,
        solver,
        4.0,
        saveat=diffrax.SaveAt(t1=True, solver_state=True, controller_state=True),
    )
    rest = diffrax.diffeqsolve(
        diffrax.ODETerm(flow),
        solver,
        4.0,
        10.0,
        None,
        jax.tree.map(lambda a: a[0], first.ys),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
        solver_state=first.solver_state,
        controller_state=first.controller_state,
    )
    _close(rest.ys, whole.ys, 1e-8, 1e-11)


def _sources():
    return {p: p.read_text() for p in PACKAGE.rglob("*.py")}


def test_one_diffeqsolve_and_public_diffrax_only():
    """The seam: exactly one `diffeqsolve(` call in the package; no class derives from a
    concrete Diffrax solver or controller; no private Diffrax name (`diffrax._…`, `WrapTerm`)
    is read."""
    calls = [
        (p.name, node.lineno)
        for p, source in _sources().items()
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "diffeqsolve"
    ]
    assert [name for name, _ in calls] == ["_solve.py"], calls
    concrete = set(dir(diffrax)) - {n for n in dir(diffrax) if n.startswith("Abstract")}
    for path, source in _sources().items():
        assert "WrapTerm" not in source and "diffrax._" not in source, path
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
                        if base.value.id == "diffrax":
                            assert base.attr not in concrete, (path, node.name, base.attr)
