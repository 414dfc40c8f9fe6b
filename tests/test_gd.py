"""Gradient descent on the flows (docs/theory.md §6: t = kη after k steps).

- The moment-reduced GD steps are exact: GD on moments equals GD on samples to rounding.
- GD is the explicit Euler method of the flow: its error at fixed t falls like η (slope 1).
- UFM GD with λ_W, λ_H > 0 reaches the global minimum of §6 F1 and neural collapse.
- A too-large η raises `NumericalError` naming a stable step; bad arguments raise `InputError`.

Sizes match test_flows.py ((C, N, p) = (4, 3, 5)), ridges are arrays and every run saves two
snapshots, so each flow's GD loop and ODE solve compile once for both files.
"""

import functools
import re

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from _states import ODE, C, N, P, arr, raw_features, renormalised_start, ufm_start
from hypothesis import given, settings, strategies as st
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath._discrete import gradient_descent, stable_step_size
from centralpath._integrate import integrate
from centralpath._ufm import init_ufm, ufm_loss
from centralpath.flows import (
    CentralPathFlow,
    ReducedCentralPathFlow,
    ReducedRenormalisedFlow,
    ReducedUFMFlow,
    ReducedUFMState,
    RenormalisedFlow,
    UFMFlow,
)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def tree_distance(a, b):
    """Euclidean distance between two pytrees of the same structure."""
    return float(
        np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(leaves(a), leaves(b), strict=True)))
    )


def tree_norm(a):
    return float(np.sqrt(sum(np.sum(x**2) for x in leaves(a))))


UFM_RIDGES = dict(lam_W=0.02, lam_H=0.03, lam_b=0.01)
CP_RIDGES = dict(lam=0.1, lam_H=0.05)


def ufm_pair(lam_W, lam_H, lam_b, bias=True):
    state, labels = ufm_start()
    ridges = dict(lam_W=arr(lam_W), lam_H=arr(lam_H), lam_b=arr(lam_b), bias=bias)
    return (
        (UFMFlow(labels, C, **ridges), state),
        (ReducedUFMFlow(**ridges), ReducedUFMState.from_state(state, labels, C)),
        lambda y: ReducedUFMState.from_state(y, labels, C),
    )


def central_path_pair(lam, lam_H, bias=True):
    H, labels = raw_features()
    ridges = dict(lam=arr(lam), lam_H=arr(lam_H), bias=bias)
    return (
        (CentralPathFlow(labels, C, **ridges), H),
        (ReducedCentralPathFlow(**ridges), cp.class_stats(H, labels, C)),
        lambda y: cp.class_stats(y, labels, C),
    )


PAIRS = {
    "ufm": lambda: ufm_pair(**UFM_RIDGES),
    "ufm-no-ridge": lambda: ufm_pair(0.0, 0.0, 0.0),
    "central-path": lambda: central_path_pair(**CP_RIDGES),
    "central-path-lam=0": lambda: central_path_pair(0.0, 0.0),
}


# ---------------------------------------------------------------------------------------------
# The reduced GD step is exact


@settings(max_examples=25, deadline=None)
@given(
    C=st.integers(2, 6),
    p=st.integers(1, 12),
    n=st.integers(2, 50),
    lam_H=st.sampled_from([0.0, 0.05]),
    eta=st.floats(0.01, 3.0),
    seed=st.integers(0, 2**16),
)
def test_rank_c_deviation_updates_equal_the_dense_formulas(C, p, n, lam_H, eta, seed):
    """The O(C p²) forms equal B Σ + Σ B and (I − ηB) Σ (I − ηB)ᵀ with B = WᵀW/n + λ_H I formed
    densely (a p×p matrix, in numpy)."""
    from centralpath.flows._base import deviation_rate, deviation_step

    rng = np.random.default_rng(seed)
    W = rng.standard_normal((C, p))
    X = rng.standard_normal((p, 2 * p))
    sigma = X @ X.T / (2 * p)
    B = W.T @ W / n + lam_H * np.eye(p)
    T = np.eye(p) - eta * B
    rate = np.asarray(deviation_rate(jnp.asarray(W), n, lam_H, jnp.asarray(sigma)))
    step = np.asarray(deviation_step(jnp.asarray(W), n, lam_H, eta, jnp.asarray(sigma)))
    expected_rate, expected_step = B @ sigma + sigma @ B, T @ sigma @ T.T
    assert_allclose(rate, expected_rate, rtol=0, atol=1e-13 * np.abs(expected_rate).max())
    scale = np.linalg.norm(T, 2) ** 2 * np.abs(sigma).max()
    assert_allclose(step, expected_step, rtol=0, atol=1e-13 * scale)


@pytest.mark.parametrize(
    ("pair", "eta", "num_steps"),
    [
        ("ufm", 0.2, 60),
        ("ufm-no-ridge", 0.2, 60),
        ("central-path", 2.0, 40),
        ("central-path-lam=0", 2.0, 40),
    ],
)
def test_reduced_gd_equals_gd_on_samples(pair, eta, num_steps):
    """Σ_W ← (I − ηB) Σ_W (I − ηB)ᵀ is what the samples' deviations do under one GD step."""
    (full, y_full), (reduced, y_red), to_reduced = PAIRS[pair]()
    full_traj = gradient_descent(full, y_full, eta, num_steps)
    red_traj = gradient_descent(reduced, y_red, eta, num_steps)
    assert_allclose(np.asarray(full_traj.times), [0.0, num_steps * eta], rtol=1e-15, atol=0)
    assert full_traj.num_steps == red_traj.num_steps == num_steps
    expected, got = to_reduced(full_traj.final_state), red_traj.final_state
    for a, b in zip(leaves(got), leaves(expected), strict=True):
        assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())
    # The snapshots (statistics, classifier, objective) agree as well.
    for a, b in zip(leaves(red_traj.snapshots), leaves(full_traj.snapshots), strict=True):
        if np.all(np.isnan(a)):
            continue  # NC4 needs samples: NaN for reduced flows
        assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())
    # Far from the start, and downhill.
    assert tree_distance(got, y_red) > 0.01 * tree_norm(y_red)
    objective = np.asarray(red_traj.snapshots.objective)
    assert objective[1] < objective[0]


def _whiten_numpy(X, labels, project):
    """The retraction onto Σ_W = I: re-whiten within-class deviations (F3) or X − μ_G (F3′)."""
    labels = np.asarray(labels)
    M = np.stack([X[labels == c].mean(0) for c in range(C)])
    eps = X - M[labels]
    s, V = np.linalg.eigh(eps.T @ eps / len(X))
    root = V @ np.diag(s**-0.5) @ V.T
    if project:
        return M[labels] + eps @ root
    mu = X.mean(0)
    return mu + (X - mu) @ root


def renormalised_gd_numpy(X, labels, eta, steps, project):
    """Ordinary gradient step on L_LS (Section 4), then re-whitening (docs/theory.md §6 F3/F3′)."""
    X = np.asarray(X)
    labels = np.asarray(labels)
    Y = np.eye(C)[labels]
    n = len(X)
    for _ in range(steps):
        Xt = np.hstack([X, np.ones((n, 1))])
        Wt = np.linalg.solve(Xt.T @ Xt, Xt.T @ Y).T  # LS classifier with bias
        W, b = Wt[:, :P], Wt[:, P]
        V = -((X @ W.T + b - Y) @ W) / n
        X = _whiten_numpy(X + eta * V, labels, project)
    return X


def _renormalised_gd(flow, y, eta, steps):
    for _ in range(steps):
        y = flow.gd_step(y, eta)
    return y


RENORMALISED_ETA, RENORMALISED_STEPS = 2.0, 10


@pytest.mark.parametrize("reduced", [False, True], ids=["samples", "moments"])
def test_f3_gd_step_is_gradient_step_then_retraction(reduced):
    X, labels = renormalised_start()
    expected = renormalised_gd_numpy(X, labels, RENORMALISED_ETA, RENORMALISED_STEPS, True)
    expected_stats = cp.class_stats(jnp.asarray(expected), labels, C)
    if reduced:
        got = _renormalised_gd(
            ReducedRenormalisedFlow(),
            cp.class_stats(X, labels, C),
            RENORMALISED_ETA,
            RENORMALISED_STEPS,
        )
    else:
        x = _renormalised_gd(RenormalisedFlow(labels, C), X, RENORMALISED_ETA, RENORMALISED_STEPS)
        assert_allclose(np.asarray(x), expected, rtol=1e-10, atol=1e-10)
        got = cp.class_stats(x, labels, C)
    assert_allclose(
        np.asarray(got.class_means), np.asarray(expected_stats.class_means), rtol=1e-10, atol=1e-10
    )
    assert_allclose(np.asarray(got.sigma_w), np.eye(P), rtol=0, atol=1e-10)
    assert (
        np.abs(
            np.asarray(got.class_means) - np.asarray(cp.class_stats(X, labels, C).class_means)
        ).max()
        > 0.01
    )


def test_f3prime_reduced_gd_step_is_gradient_step_then_rewhitening():
    X, labels = renormalised_start()
    expected = renormalised_gd_numpy(X, labels, RENORMALISED_ETA, RENORMALISED_STEPS, False)
    got = _renormalised_gd(
        ReducedRenormalisedFlow(project=False),
        cp.class_stats(X, labels, C),
        RENORMALISED_ETA,
        RENORMALISED_STEPS,
    )
    expected_stats = cp.class_stats(jnp.asarray(expected), labels, C)
    assert_allclose(
        np.asarray(got.class_means), np.asarray(expected_stats.class_means), rtol=1e-10, atol=1e-10
    )
    assert_allclose(np.asarray(got.sigma_w), np.eye(P), rtol=0, atol=1e-10)


def test_f3prime_gd_on_samples_is_gradient_step_then_rewhitening():
    X, labels = renormalised_start()
    expected = renormalised_gd_numpy(X, labels, RENORMALISED_ETA, RENORMALISED_STEPS, False)
    x = _renormalised_gd(
        RenormalisedFlow(labels, C, project=False), X, RENORMALISED_ETA, RENORMALISED_STEPS
    )
    assert_allclose(np.asarray(x), expected, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# GD is first order in η

ORDER_T = 2.0
ORDER_ETAS = np.array([0.05, 0.025, 0.0125, 0.00625])


@functools.cache
def reduced_reference(pair):
    """The reduced flow integrated to t = ORDER_T (8 save times, as in test_flows.py)."""
    _, (reduced, y_red), _ = PAIRS[pair]()
    trajectory = integrate(reduced, y_red, ORDER_T, ts=np.linspace(0, ORDER_T, 8), **ODE)
    return trajectory.final_state


def order_slope(errors):
    return np.polyfit(np.log(ORDER_ETAS), np.log(errors), 1)[0]


@pytest.mark.parametrize(
    # One ODE compilation (~10 s) per flow: F2's reference is in the slow tier.
    "pair",
    ["ufm", pytest.param("central-path", marks=pytest.mark.slow)],
)
@pytest.mark.parametrize("on_samples", [False, True], ids=["moments", "samples"])
def test_gd_converges_to_flow_at_first_order(pair, on_samples):
    """Error of GD at t = 2 against the integrated flow (its moments, which the flow on samples
    reproduces exactly — test_flows.py): slope 1 in η."""
    (full, y_full), (reduced, y_red), to_reduced = PAIRS[pair]()
    reference = reduced_reference(pair)
    errors = []
    for eta in ORDER_ETAS:
        steps = int(round(ORDER_T / eta))
        if on_samples:
            final = to_reduced(gradient_descent(full, y_full, eta, steps).final_state)
        else:
            final = gradient_descent(reduced, y_red, eta, steps).final_state
        errors.append(tree_distance(final, reference))
    errors = np.array(errors)
    assert np.all(np.diff(errors) < 0)
    assert abs(order_slope(errors) - 1.0) <= 0.15
    # Far above the ODE's tolerance, so the slope measures GD, not the solver.
    assert errors[-1] > 1e4 * ODE["rtol"] * tree_norm(reference)


@pytest.mark.slow
@pytest.mark.parametrize("pair", ["ufm", "central-path"])
def test_gd_on_samples_converges_to_flow_on_samples(pair):
    """The same against the flow on samples integrated itself (the whole state, H included)."""
    (full, y_full), _, _ = PAIRS[pair]()
    reference = integrate(full, y_full, ORDER_T, ts=np.linspace(0, ORDER_T, 8), **ODE).final_state
    errors = np.array(
        [
            tree_distance(
                gradient_descent(full, y_full, eta, int(round(ORDER_T / eta))).final_state,
                reference,
            )
            for eta in ORDER_ETAS
        ]
    )
    assert np.all(np.diff(errors) < 0)
    assert abs(order_slope(errors) - 1.0) <= 0.15


# ---------------------------------------------------------------------------------------------
# The UFM reaches its global minimum (docs/theory.md §6 F1)


def check_ufm_global_minimum(flow, y0, C, N, lam_W, lam_H, num_steps):
    eta = 0.5 * stable_step_size(flow, y0)
    y = gradient_descent(flow, y0, eta, num_steps).final_state
    value = float(flow.objective(y))
    tau = float(np.sqrt(N * lam_W * lam_H))
    expected = float(cp.ufm_global_minimum(C, N, lam_W, lam_H))
    if C * tau < 1:
        assert_allclose(expected, (C - 1) * tau * (1 - C * tau / 2), rtol=1e-14, atol=0)
    else:
        assert_allclose(expected, (C - 1) / (2 * C), rtol=1e-14, atol=0)
    assert_allclose(value, expected, rtol=1e-10, atol=0)
    stats = y.stats
    logits = np.asarray(y.W @ stats.centred_means)
    assert_allclose(
        logits, np.asarray(cp.ufm_collapsed_logits(C, N, lam_W, lam_H)), rtol=0, atol=1e-9
    )
    if C * tau < 1:
        # Neural collapse: no within-class variability, the means a simplex ETF, W ∝ M̄ᵀ.
        assert_allclose(logits, (1 - C * tau) * (np.eye(C) - 1 / C), rtol=0, atol=1e-7)
        assert abs(float(cp.nc1(stats))) <= 1e-10
        assert float(cp.etf_distance(stats)) <= 1e-7
        assert float(cp.nc3(stats, y.W)) <= 1e-7
    else:
        # Cτ ≥ 1: everything shrinks to zero and b → Ave y = 1/C.
        for x in (y.W, stats.class_means, stats.sigma_w):
            assert_allclose(np.asarray(x), 0.0, rtol=0, atol=1e-7)
        assert_allclose(np.asarray(y.b), 1.0 / C, rtol=0, atol=1e-7)
    return y


@pytest.mark.parametrize(("lam", "collapse"), [(0.05, True), (0.01, True), (0.4, False)])
def test_ufm_gd_reaches_global_minimum(lam, collapse):
    """λ_W = λ_H = λ, λ_b = 0; Cτ = C√N λ is 0.35, 0.07 (collapse) or 2.8 (zero solution)."""
    state, labels = ufm_start()
    flow = ReducedUFMFlow(lam_W=arr(lam), lam_H=arr(lam), lam_b=arr(0.0))
    y0 = ReducedUFMState.from_state(state, labels, C)
    assert (C * np.sqrt(N) * lam < 1) == collapse
    check_ufm_global_minimum(flow, y0, C, N, lam, lam, 20_000)


ufm_sizes = st.integers(2, 4).flatmap(
    lambda C: st.tuples(
        st.just(C),
        st.integers(2, 4),
        st.integers(C, C + 2),
        st.integers(0, 2**16),
        st.sampled_from([0.02, 0.05, 0.1, 0.5]),
    )
)


@pytest.mark.slow
@settings(max_examples=15)
@given(ufm_sizes)
def test_ufm_gd_reaches_global_minimum_any_size(size):
    """Random C ∈ [2, 4], N ∈ [2, 4], p ∈ [C, C + 2], seeds, λ_W = λ_H = λ (one GD compilation
    per shape)."""
    C, N, p, seed, lam = size
    state, labels = init_ufm(jax.random.PRNGKey(seed), C, N, p)
    flow = ReducedUFMFlow(lam_W=arr(lam), lam_H=arr(lam), lam_b=arr(0.0))
    check_ufm_global_minimum(
        flow, ReducedUFMState.from_state(state, labels, C), C, N, lam, lam, 50_000
    )


def test_ufm_gd_on_samples_reaches_global_minimum():
    """The same on samples, checked with `ufm_loss` and the features themselves."""
    state, labels = ufm_start()
    lam = 0.05
    flow = UFMFlow(labels, C, lam_W=arr(lam), lam_H=arr(lam), lam_b=arr(0.0))
    final = gradient_descent(flow, state, 0.3, 5_000).final_state  # 2/ρ ≈ 0.73 at the start
    assert_allclose(
        float(ufm_loss(final, labels, C, lam, lam)),
        float(cp.ufm_global_minimum(C, N, lam, lam)),
        rtol=1e-9,
        atol=0,
    )
    # Each feature sits on its class mean (NC1 on the samples).
    stats = cp.class_stats(final.H, labels, C)
    deviations = np.asarray(final.H - stats.class_means.T[labels])
    assert_allclose(deviations, 0.0, rtol=0, atol=1e-8)
    tau = np.sqrt(N) * lam
    assert_allclose(
        np.asarray(final.W @ stats.centred_means),
        (1 - C * tau) * (np.eye(C) - 1 / C),
        rtol=0,
        atol=1e-7,
    )


# ---------------------------------------------------------------------------------------------
# Step-size stability and bad input


def small_ufm():
    state, labels = ufm_start()
    flow = ReducedUFMFlow(lam_W=arr(0.05), lam_H=arr(0.05), lam_b=arr(0.0))
    return flow, ReducedUFMState.from_state(state, labels, C)


def test_stable_step_size_separates_convergence_from_divergence():
    flow, y0 = small_ufm()
    stable = stable_step_size(flow, y0)
    assert 0 < stable < np.inf
    # Below the bound: GD converges to a stationary point, downhill.
    final = gradient_descent(flow, y0, 0.9 * stable, 2_000).final_state
    assert float(flow.objective(final)) < float(flow.objective(y0))
    assert tree_norm(flow(0.0, final, None)) <= 1e-10
    # Three times the bound: divergence, reported with the stable step.
    with pytest.raises(cp.NumericalError) as excinfo:
        gradient_descent(flow, y0, 3.0 * stable, 2_000)
    message = str(excinfo.value)
    assert f"{stable:.4g}" in message
    assert re.search(r"diverged at step \d+", message)


@pytest.mark.slow
def test_stable_step_size_is_two_over_the_sharpness():
    """For a gradient flow (F1 on samples) ρ is the largest |eigenvalue| of the Hessian."""
    state, labels = ufm_start()
    flow = UFMFlow(labels, C, lam_W=arr(0.05), lam_H=arr(0.05), lam_b=arr(0.0))
    flat, unravel = jax.flatten_util.ravel_pytree(state)
    hessian = np.asarray(jax.hessian(lambda z: flow.objective(unravel(z)))(flat))
    rho = np.abs(np.linalg.eigvalsh(hessian)).max()
    assert_allclose(stable_step_size(flow, state, iterations=500), 2.0 / rho, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("eta", "num_steps", "save_steps"),
    [
        (-0.1, 10, None),
        (0.0, 10, None),
        (np.nan, 10, None),
        (np.inf, 10, None),
        (0.1, 0, None),
        (0.1, 2.5, None),
        (0.1, 10, [0, 5, 3]),
        (0.1, 10, [0, 5, 5]),
        (0.1, 10, [0, 11]),
        (0.1, 10, [-1, 5]),
    ],
)
def test_gradient_descent_rejects_bad_input(eta, num_steps, save_steps):
    flow, y0 = small_ufm()
    with pytest.raises(cp.InputError):
        gradient_descent(flow, y0, eta, num_steps, save_steps=save_steps)
