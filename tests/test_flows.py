"""The flows of docs/theory.md §6 integrated with `integrate`: invariants, closed forms, reductions.

- F3/F3′ (`RenormalisedFlow`, `ReducedRenormalisedFlow`): Σ_W ≡ I, μ_G conserved, fixed singular
  vectors of Ω, ω_j(t) equal to the closed form of `eigen_dynamics`, NC1 ∝ t^{-1/2}.
- F4: the moment-reduced flows reproduce the flows on samples (F2 and F1): exactly at the level
  of vector fields (fast tier) and at every saved time of an integration (slow tier: each flow
  on samples is one more ODE compilation).
- Every flow descends its objective; `integrate` stops at an NC1 target and rejects bad input.

Sizes are small and shared (C, N, p) = (4, 3, 5) and 8 save times everywhere, so each flow
compiles once for the whole session (ridges are passed as arrays so they do not recompile).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _states import ODE, SHIFT, C, N, P, arr, raw_features, renormalised_start, ufm_start
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath._integrate import integrate
from centralpath.flows import (
    CentralPathFlow,
    ReducedCentralPathFlow,
    ReducedRenormalisedFlow,
    ReducedUFMFlow,
    ReducedUFMState,
    RenormalisedFlow,
    UFMFlow,
)

F3_TIMES = np.array([0.0, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6])
LATE_TIMES = np.logspace(6, 9, 8)


def per_time_rel_err(a, b):
    """max over saved times of ‖a(t) − b(t)‖ / ‖b(t)‖ (leading axis = time)."""
    a, b = np.asarray(a), np.asarray(b)
    a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    return float(np.max(np.linalg.norm(a2 - b2, axis=1) / np.linalg.norm(b2, axis=1)))


# ---------------------------------------------------------------------------------------------
# F3 and F3′


@functools.cache
def renormalised_trajectory(project, reduced):
    X, labels = renormalised_start()
    if reduced:
        flow, y0 = ReducedRenormalisedFlow(project=project), cp.class_stats(X, labels, C)
    else:
        flow, y0 = RenormalisedFlow(labels, C, project=project), X
    trajectory = integrate(flow, y0, F3_TIMES[-1], ts=F3_TIMES, **ODE)
    return trajectory, trajectory.metrics()


F3_CASES = [
    pytest.param(True, False, id="F3"),
    pytest.param(False, False, id="F3'"),
    pytest.param(True, True, id="reduced-F3"),
    # One more compilation (~10 s); its vector field equals the pushforward of F3′'s on samples
    # (test_vector_field_commutes_with_reduction), which is checked here in the fast tier.
    pytest.param(False, True, id="reduced-F3'", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("project", "reduced"), F3_CASES)
def test_renormalised_flow_invariants(project, reduced):
    """Σ_W stays I and μ_G is conserved at every saved time."""
    trajectory, _ = renormalised_trajectory(project, reduced)
    assert_allclose(np.asarray(trajectory.times), F3_TIMES, rtol=0.0, atol=0.0)
    stats = trajectory.snapshots.stats
    sigma_w = np.asarray(stats.sigma_w)
    assert_allclose(sigma_w, np.broadcast_to(np.eye(P), sigma_w.shape), rtol=0.0, atol=1e-10)
    mu = np.asarray(jax.vmap(lambda s: s.global_mean)(stats))
    X, _ = renormalised_start()
    assert_allclose(mu, np.broadcast_to(np.asarray(X.mean(0)), mu.shape), rtol=0.0, atol=1e-12)
    assert_allclose(np.asarray(X.mean(0)), SHIFT, rtol=0.0, atol=1e-12)


@pytest.mark.parametrize(("project", "reduced"), F3_CASES)
def test_renormalised_flow_matches_closed_form(project, reduced):
    """ω_j(t) from the integrated flow equals F⁻¹(F(ω_j(0)) + t) (F3) or its F3′ analogue."""
    _, m = renormalised_trajectory(project, reduced)
    snr = m["snr"]
    closed = np.asarray(
        cp.eigen_dynamics(snr[0], C, N, flow="renormalised" if project else "whitened")(F3_TIMES)
    )
    assert_allclose(snr, closed, rtol=1e-8, atol=0.0)
    # The ω_j moved far (the smallest more than doubles), each increasing in t.
    assert snr[-1, -1] > 2.0 * snr[0, -1]
    assert np.all(np.diff(snr, axis=0) > 0)
    # ω_max/ω_min falls towards 1.
    ratio = snr[:, 0] / snr[:, -1]
    assert np.all(np.diff(ratio) < 0)
    assert ratio[-1] - 1.0 < 0.25 * (ratio[0] - 1.0)


@pytest.mark.parametrize(("project", "reduced"), F3_CASES)
def test_renormalised_flow_singular_vectors_fixed(project, reduced):
    """Ω(t) = U diag(ω(t)) Vᵀ with U, V those of Ω(0) (up to sign)."""
    trajectory, _ = renormalised_trajectory(project, reduced)
    omega_matrices = np.asarray(jax.vmap(cp.snr_matrix)(trajectory.snapshots.stats))
    U0, _, V0t = np.linalg.svd(omega_matrices[0])
    U0, V0t = U0[:, : C - 1], V0t[: C - 1]
    eye = np.eye(C - 1)
    for Omega in omega_matrices[1:]:
        U, _, Vt = np.linalg.svd(Omega)
        assert_allclose(np.abs(U[:, : C - 1].T @ U0), eye, rtol=0.0, atol=1e-8)
        assert_allclose(np.abs(Vt[: C - 1] @ V0t.T), eye, rtol=0.0, atol=1e-8)


@pytest.mark.parametrize(("project", "reduced"), F3_CASES)
def test_renormalised_flow_descends_the_central_path_loss(project, reduced):
    """The objective is L_LS = ½ Σ 1/(C + ω²) (§5), on the central path, strictly decreasing."""
    _, m = renormalised_trajectory(project, reduced)
    objective = m["objective"]
    L_ls, L_nc1, L_nc23 = (np.asarray(x) for x in cp.central_path_loss_terms(m["snr"], C))
    assert_allclose(objective, L_ls, rtol=1e-10, atol=0.0)
    assert_allclose(m["loss_nc1"], L_nc1, rtol=1e-9, atol=0.0)
    assert_allclose(m["loss_nc23"], L_nc23, rtol=1e-9, atol=0.0)
    assert_allclose(m["loss_perp"], 0.0, rtol=0.0, atol=1e-13 * objective[0])
    assert np.all(np.diff(objective) < 0)
    assert_allclose(m["nc1"], np.asarray(cp.nc1_from_snr(m["snr"])), rtol=1e-9, atol=0.0)


@pytest.mark.parametrize("project", [True, False], ids=["F3", "F3'"])
def test_renormalised_flow_freezes_within_class_deviations(project):
    """On Σ_W = I the within-class part of the velocity vanishes (docs/theory.md §6 F3)."""
    trajectory, _ = renormalised_trajectory(project, False)
    X, labels = renormalised_start()
    X1 = trajectory.final_state

    def deviations(x):
        return np.asarray(x - cp.class_stats(x, labels, C).class_means.T[labels])

    assert_allclose(deviations(X1), deviations(X), rtol=0.0, atol=1e-10)
    # …while the class means moved a lot.
    assert np.linalg.norm(np.asarray(X1 - X)) > 1.0


def test_late_nc1_rate_on_reduced_f3():
    """NC1(t) ∝ t^{-1/2} late on F3, approaching ((C−1)/2)√(N/t) (docs/theory.md §6 F3)."""
    X, labels = renormalised_start()
    stats0 = cp.class_stats(X, labels, C)
    trajectory = integrate(ReducedRenormalisedFlow(), stats0, LATE_TIMES[-1], ts=LATE_TIMES, **ODE)
    m = trajectory.metrics()
    nc1 = m["nc1"]
    slope = np.polyfit(np.log(LATE_TIMES), np.log(nc1), 1)[0]
    assert abs(slope + 0.5) <= 0.05
    # The closed form, at large t.
    omega0 = np.asarray(cp.snr_singular_values(stats0))
    closed = np.asarray(cp.eigen_dynamics(omega0, C, N)(LATE_TIMES))
    assert_allclose(m["snr"], closed, rtol=1e-8, atol=0.0)
    # The asymptote: relative corrections are (a_j)/(2t) from the starting point and
    # C√(N/t) from the N C ω² term of F; both shrink.
    asymptote = np.asarray(cp.asymptotic_nc1(LATE_TIMES, C, N))
    a = np.abs(np.asarray(cp.potential(C, N)(omega0)))
    bound = a.max() / (2 * LATE_TIMES) + 2 * C * np.sqrt(N / LATE_TIMES)
    rel = np.abs(nc1 / asymptote - 1.0)
    assert np.all(rel <= bound)
    assert rel[-1] < 1e-3
    assert np.all(np.diff(rel) < 0)
    ratio = m["snr"][:, 0] / m["snr"][:, -1]
    assert np.all(np.diff(ratio) < 0)
    assert ratio[-1] - 1.0 < 1e-3


# ---------------------------------------------------------------------------------------------
# F2 against F4 (central path on samples and on moments)

CP_TIMES = np.linspace(0.0, 20.0, 8)
CP_RIDGES = [
    pytest.param(0.0, 0.0, id="lam=0"),
    pytest.param(0.1, 0.0, id="lam=0.1"),
    pytest.param(0.0, 0.05, id="lam_H=0.05"),
    pytest.param(0.2, 0.05, id="lam=0.2,lam_H=0.05"),
]


def central_path_pair(lam, lam_H, bias):
    H, labels = raw_features()
    full = CentralPathFlow(labels, C, lam=arr(lam), lam_H=arr(lam_H), bias=bias)
    reduced = ReducedCentralPathFlow(lam=arr(lam), lam_H=arr(lam_H), bias=bias)
    return (full, H), (reduced, cp.class_stats(H, labels, C))


def check_reduced_trajectory_matches(full_traj, red_traj, rtol):
    s_full, s_red = full_traj.snapshots, red_traj.snapshots
    assert_allclose(np.asarray(full_traj.times), np.asarray(red_traj.times), rtol=0, atol=0)
    assert_allclose(np.asarray(s_full.stats.counts), np.asarray(s_red.stats.counts), rtol=0, atol=0)
    for a, b in [
        (s_full.stats.class_means, s_red.stats.class_means),
        (s_full.stats.sigma_w, s_red.stats.sigma_w),
        (s_full.W, s_red.W),
        (s_full.objective, s_red.objective),
    ]:
        assert per_time_rel_err(a, b) <= rtol
    if np.any(np.asarray(s_red.b) != 0):
        assert per_time_rel_err(s_full.b, s_red.b) <= rtol


def check_descends(trajectory):
    objective = np.asarray(trajectory.snapshots.objective)
    assert np.all(np.diff(objective) < 0)


def run_central_path_pair(lam, lam_H, bias):
    (full, H), (reduced, stats) = central_path_pair(lam, lam_H, bias)
    full_traj = integrate(full, H, CP_TIMES[-1], ts=CP_TIMES, **ODE)
    red_traj = integrate(reduced, stats, CP_TIMES[-1], ts=CP_TIMES, **ODE)
    check_reduced_trajectory_matches(full_traj, red_traj, rtol=1e-9)
    check_descends(full_traj)
    check_descends(red_traj)
    # The comparison is not between two constant trajectories.
    M = np.asarray(red_traj.snapshots.stats.class_means)
    assert np.linalg.norm(M[-1] - M[0]) > 0.02 * np.linalg.norm(M[0])
    return full_traj, red_traj


# The flows on samples cost one ODE compilation each (~10 s): the integrated comparisons are in
# the slow tier; the fast tier checks the reduction exactly at the level of vector fields
# (test_vector_field_commutes_with_reduction) and of GD steps (test_gd.py).
@pytest.mark.slow
@pytest.mark.parametrize(("lam", "lam_H"), CP_RIDGES)
def test_reduced_central_path_matches_samples(lam, lam_H):
    full_traj, red_traj = run_central_path_pair(lam, lam_H, bias=True)
    mu = np.asarray(jax.vmap(lambda s: s.global_mean)(red_traj.snapshots.stats))
    if lam == 0 and lam_H == 0:
        # λ = 0: the mean of the LS residuals vanishes, so μ_G is conserved (docs/theory.md F4).
        assert_allclose(mu, np.broadcast_to(mu[0], mu.shape), rtol=0, atol=1e-12)
    else:
        assert np.linalg.norm(mu[-1] - mu[0]) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize(("lam", "lam_H"), CP_RIDGES)
def test_reduced_central_path_matches_samples_without_bias(lam, lam_H):
    run_central_path_pair(lam, lam_H, bias=False)


def test_reduced_central_path_rate_is_the_paper_formula():
    """λ = 0: dμ_G/dt = 0 and dM̄/dt = −(1/n) W_LSᵀ (W_LS M̄ − P) (docs/theory.md F4), with W_LS
    computed here from (1/C) M̄ᵀ Σ_T⁻¹."""
    H, labels = raw_features()
    stats = cp.class_stats(H, labels, C)
    d = ReducedCentralPathFlow()(0.0, stats, None)
    dM = np.asarray(d.class_means)
    assert_allclose(np.asarray(d.counts), 0.0, rtol=0, atol=0)
    assert_allclose(dM.mean(axis=1), 0.0, rtol=0, atol=1e-12 * np.abs(dM).max())

    M = np.asarray(stats.class_means)
    Mbar = M - M.mean(axis=1, keepdims=True)
    eps = np.asarray(H) - M.T[np.asarray(labels)]
    sigma_t = (eps.T @ eps) / (C * N) + Mbar @ Mbar.T / C
    W_ls = np.linalg.solve(sigma_t, Mbar).T / C
    Pc = np.eye(C) - 1.0 / C
    expected = -(W_ls.T @ (W_ls @ Mbar - Pc)) / (C * N)
    assert_allclose(dM, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    # Σ_W moves as dΣ_W/dt = −(AΣ_W + Σ_W A), A = (1/n) W_LSᵀ W_LS.
    A = W_ls.T @ W_ls / (C * N)
    sw = np.asarray(stats.sigma_w)
    expected_sw = -(A @ sw + sw @ A)
    assert_allclose(
        np.asarray(d.sigma_w), expected_sw, rtol=1e-12, atol=1e-12 * np.abs(expected_sw).max()
    )


# ---------------------------------------------------------------------------------------------
# F1 on samples against F1 on moments

UFM_TIMES = np.linspace(0.0, 10.0, 8)
UFM_RIDGES = [
    pytest.param(0.0, 0.0, 0.0, id="no-ridge"),
    pytest.param(0.02, 0.03, 0.01, id="ridges"),
]


def run_ufm_pair(lam_W, lam_H, lam_b, bias):
    state, labels = ufm_start()
    ridges = dict(lam_W=arr(lam_W), lam_H=arr(lam_H), lam_b=arr(lam_b), bias=bias)
    full_traj = integrate(UFMFlow(labels, C, **ridges), state, UFM_TIMES[-1], ts=UFM_TIMES, **ODE)
    red_traj = integrate(
        ReducedUFMFlow(**ridges),
        ReducedUFMState.from_state(state, labels, C),
        UFM_TIMES[-1],
        ts=UFM_TIMES,
        **ODE,
    )
    check_reduced_trajectory_matches(full_traj, red_traj, rtol=1e-9)
    check_descends(full_traj)
    check_descends(red_traj)
    # Cross-check the objective with ufm_loss on the final samples.
    final = full_traj.final_state
    value = cp._ufm.ufm_loss(final, labels, C, lam_W, lam_H, lam_b)
    assert_allclose(float(red_traj.snapshots.objective[-1]), float(value), rtol=1e-9, atol=0)
    W = np.asarray(red_traj.snapshots.W)
    assert np.linalg.norm(W[-1] - W[0]) > 0.1 * np.linalg.norm(W[0])
    b = np.asarray(red_traj.snapshots.b)
    if bias:
        assert np.linalg.norm(b[-1] - b[0]) > 1e-2
    else:
        assert_allclose(b, np.broadcast_to(b[0], b.shape), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize(("lam_W", "lam_H", "lam_b"), UFM_RIDGES)
def test_reduced_ufm_matches_samples(lam_W, lam_H, lam_b):
    run_ufm_pair(lam_W, lam_H, lam_b, bias=True)


@pytest.mark.slow
@pytest.mark.parametrize(("lam_W", "lam_H", "lam_b"), UFM_RIDGES)
def test_reduced_ufm_matches_samples_without_bias(lam_W, lam_H, lam_b):
    run_ufm_pair(lam_W, lam_H, lam_b, bias=False)


# ---------------------------------------------------------------------------------------------
# The reduction at the level of vector fields: d/dt stats(y) along the full flow = reduced flow.


def _pushforward_case(kind, options, name, slow=False):
    return pytest.param(kind, options, id=name, marks=[pytest.mark.slow] if slow else [])


PUSHFORWARD_CASES = [
    _pushforward_case("renormalised", dict(project=True), "F3"),
    _pushforward_case("renormalised", dict(project=False), "F3'"),
    *(
        _pushforward_case(
            "central-path",
            dict(lam=lam, lam_H=lam_H, bias=bias),
            f"F2-lam={lam}-lam_H={lam_H}-bias={bias}",
            slow=(lam, lam_H, bias) not in [(0.0, 0.0, True), (0.3, 0.1, True), (0.3, 0.1, False)],
        )
        for bias in (True, False)
        for lam, lam_H in [(0.0, 0.0), (0.3, 0.0), (0.0, 0.1), (0.3, 0.1)]
    ),
    *(
        _pushforward_case(
            "ufm",
            dict(bias=bias, **ridges),
            f"F1-{name}-bias={bias}",
            slow=(name, bias) == ("no-ridge", False),
        )
        for bias in (True, False)
        for name, ridges in [("no-ridge", {}), ("ridges", dict(lam_W=0.02, lam_H=0.03, lam_b=0.01))]
    ),
]


def flow_pair(kind, options):
    """(flow on samples, its state, moment-reduced flow, state ↦ moments)."""
    if kind == "renormalised":
        X, labels = renormalised_start()
        return (
            RenormalisedFlow(labels, C, **options),
            X,
            ReducedRenormalisedFlow(**options),
            lambda y: cp._stats._class_stats(y, labels, C),
        )
    if kind == "central-path":
        H, labels = raw_features()
        return (
            CentralPathFlow(labels, C, **options),
            H,
            ReducedCentralPathFlow(**options),
            lambda y: cp._stats._class_stats(y, labels, C),
        )
    state, labels = ufm_start()
    return (
        UFMFlow(labels, C, **options),
        state,
        ReducedUFMFlow(**options),
        lambda y: ReducedUFMState.from_state(y, labels, C),
    )


@pytest.mark.parametrize(("kind", "options"), PUSHFORWARD_CASES)
def test_vector_field_commutes_with_reduction(kind, options):
    """jvp of (state ↦ moments) along the flow on samples = the reduced flow at the moments;
    the objectives agree too (docs/theory.md §6 F4: the flows are closed in (μ_c, Σ_W))."""
    full, y, reduced, to_reduced = flow_pair(kind, options)
    velocity = full(0.0, y, None)
    moments, d_moments = jax.jvp(to_reduced, (y,), (velocity,))
    expected = reduced(0.0, moments, None)
    leaves = jax.tree_util.tree_leaves(d_moments)
    expected_leaves = jax.tree_util.tree_leaves(expected)
    assert len(leaves) == len(expected_leaves)
    # Absolute tolerance relative to the largest rate (dΣ_W/dt ≡ 0 on F3 and F3′).
    scale = max(np.abs(np.asarray(b)).max() for b in expected_leaves)
    assert scale > 1e-3  # the flow does move the moments
    for a, b in zip(leaves, expected_leaves, strict=True):
        assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-13 * scale)
    assert_allclose(float(full.objective(y)), float(reduced.objective(moments)), rtol=1e-12, atol=0)


DESCENT_CASES = [
    pytest.param("renormalised", dict(project=True), id="F3"),
    pytest.param("renormalised", dict(project=False), id="F3'"),
    pytest.param("central-path", dict(lam=0.0, lam_H=0.0, bias=True), id="F2"),
    pytest.param("central-path", dict(lam=0.3, lam_H=0.1, bias=False), id="F2-ridges-no-bias"),
    pytest.param("ufm", dict(bias=True), id="F1"),
    pytest.param("ufm", dict(lam_W=0.02, lam_H=0.03, lam_b=0.01, bias=True), id="F1-ridges"),
]


@pytest.mark.parametrize(("kind", "options"), DESCENT_CASES)
def test_flow_descends_its_objective(kind, options):
    """dL/dt = ⟨∇L, v⟩ < 0 at a generic state, by autodiff of the objective itself.

    F1, F2: v = −∇L exactly (for F2 by the envelope theorem, §4: the gradient through W̃_LS(H)
    equals the partial gradient). F3: v is the projection of −∇L, so ⟨∇L, v⟩ = −‖v‖². F3′: v adds
    A(X − μ_G), along which L_LS is invariant (§5), so ⟨∇L, v⟩ = −‖∇L‖².
    """
    full, y, reduced, to_reduced = flow_pair(kind, options)
    v = full(0.0, y, None)
    grad = jax.grad(full.objective)(y)
    g, vv = leaves_of(grad), leaves_of(v)
    rate = sum(float(np.sum(a * b)) for a, b in zip(g, vv, strict=True))
    grad_sq = sum(float(np.sum(a**2)) for a in g)
    if kind in ("central-path", "ufm"):
        for a, b in zip(vv, g, strict=True):
            assert_allclose(a, -b, rtol=1e-11, atol=1e-12 * max(np.abs(x).max() for x in g))
        assert_allclose(rate, -grad_sq, rtol=1e-11, atol=0)
    elif options["project"]:
        assert_allclose(rate, -sum(float(np.sum(a**2)) for a in vv), rtol=1e-10, atol=0)
        assert sum(float(np.sum(a**2)) for a in vv) < grad_sq  # a genuine projection
    else:
        assert_allclose(rate, -grad_sq, rtol=1e-10, atol=0)
    assert rate < 0
    # The moment-reduced flow descends at the same rate.
    moments = to_reduced(y)
    _, reduced_rate = jax.jvp(reduced.objective, (moments,), (reduced(0.0, moments, None),))
    assert_allclose(float(reduced_rate), rate, rtol=1e-10, atol=0)


def leaves_of(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


# ---------------------------------------------------------------------------------------------
# Stopping at an NC1 target

STOP_TIMES = F3_TIMES  # the un-stopped reference is the reduced-F3 trajectory above


@functools.cache
def nc1_stop():
    X, labels = renormalised_start()
    stats0 = cp.class_stats(X, labels, C)
    flow = ReducedRenormalisedFlow()
    full = renormalised_trajectory(True, True)[1]["nc1"]  # the same flow, not stopped
    target = 0.5 * (full[4] + full[5])  # crossed between t = 1e3 and t = 1e4
    stopped = integrate(flow, stats0, STOP_TIMES[-1], ts=STOP_TIMES, nc1_target=target, **ODE)
    return stopped, full, target, flow


def test_nc1_target_stops_early():
    stopped, full, target, flow = nc1_stop()
    assert stopped.stopped_early
    times = np.asarray(stopped.times)
    # Save times after the stop are dropped; those before are kept; the stop time comes last.
    assert_allclose(times[:5], STOP_TIMES[:5], rtol=0, atol=0)
    assert times.shape == (6,) and STOP_TIMES[4] < times[5] < STOP_TIMES[5]
    assert times[5] == stopped.final_time
    m = stopped.metrics()
    assert_allclose(m["nc1"][:5], full[:5], rtol=1e-9, atol=0)
    assert np.all(m["nc1"][:5] >= target)
    # The state where it stopped is past the target.
    assert float(cp.nc1(flow.class_stats(stopped.final_state))) < target


def test_nc1_target_last_saved_time_is_below_target():
    stopped, _, target, flow = nc1_stop()
    m = stopped.metrics()
    assert m["nc1"][-1] < target
    # final_state is documented as the state at times[-1].
    final_stats = flow.class_stats(stopped.final_state)
    assert_allclose(
        np.asarray(final_stats.class_means),
        np.asarray(stopped.snapshots.stats.class_means[-1]),
        rtol=1e-12,
        atol=0,
    )


def test_integrate_without_target_does_not_stop():
    trajectory, _ = renormalised_trajectory(True, True)
    assert not trajectory.stopped_early
    assert trajectory.num_steps > 0


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("t1", "kwargs"),
    [
        (0.0, {}),
        (-1.0, {}),
        (np.inf, {}),
        (1.0, dict(ts=[0.0, 0.5, 0.2, 1.0])),
        (1.0, dict(ts=[0.0, 0.5, 0.5, 1.0])),
        (1.0, dict(ts=[0.0, 2.0])),
        (1.0, dict(ts=[-0.5, 1.0])),
        (1.0, dict(nc1_target=0.0)),
        (1.0, dict(rtol=0.0)),
    ],
)
def test_integrate_rejects_bad_input(t1, kwargs):
    X, labels = renormalised_start()
    with pytest.raises(cp.InputError):
        integrate(ReducedRenormalisedFlow(), cp.class_stats(X, labels, C), t1, **kwargs)


# ---------------------------------------------------------------------------------------------
# Real features: dead units (docs/theory.md, "Real features")


def _with_dead_units(H, count=2):
    """H with `count` extra units that never vary (one at 0, others constant), as ReLU gives."""
    n = H.shape[0]
    dead = np.concatenate([np.zeros((n, 1)), np.full((n, count - 1), 0.7)], axis=1)
    return np.concatenate([np.asarray(H), dead], axis=1)


def test_renormalised_features_drop_dead_units():
    H, labels = raw_features()
    Hd = _with_dead_units(H)
    stats = cp.class_stats(Hd, labels, C)
    X = np.asarray(cp.renormalised_features(Hd, stats))
    assert X.shape == (H.shape[0], P)  # the dead columns are gone
    sx = cp.class_stats(X, labels, C)
    assert_allclose(np.asarray(sx.sigma_w), np.eye(P), rtol=0, atol=1e-12)
    # The SNR singular values do not see the dead units, and renormalising keeps them.
    omega = np.asarray(cp.snr_singular_values(cp.class_stats(np.asarray(H), labels, C)))
    assert_allclose(np.asarray(cp.snr_singular_values(stats)), omega, rtol=1e-10, atol=0)
    assert_allclose(np.asarray(cp.snr_singular_values(sx)), omega, rtol=1e-10, atol=0)
    # Under jit the width must be known in advance: dead directions raise instead.
    with pytest.raises(Exception, match="dead directions"):
        jax.block_until_ready(jax.jit(cp.renormalised_features)(jnp.asarray(Hd), stats))


@pytest.mark.parametrize("kind", ["renormalised", "central-path"])
@pytest.mark.parametrize("reduced", [False, True])
def test_flows_refuse_dead_units_in_one_line(kind, reduced):
    H, labels = raw_features()
    Hd = _with_dead_units(H)
    stats = cp.class_stats(Hd, labels, C)
    if kind == "renormalised":
        flow = ReducedRenormalisedFlow() if reduced else RenormalisedFlow(labels, C)
    else:
        flow = ReducedCentralPathFlow() if reduced else CentralPathFlow(labels, C)
    y0 = stats if reduced else jnp.asarray(Hd)
    for run in (lambda: integrate(flow, y0, 1.0), lambda: cp.gradient_descent(flow, y0, 1e-3, 2)):
        with pytest.raises(cp.InputError, match="2 dead direction.*renormalised_features") as e:
            run()
        assert "\n" not in str(e.value)


def test_central_path_with_a_ridge_accepts_dead_units():
    """A ridge keeps the least-squares system regular: nothing to refuse."""
    H, labels = raw_features()
    stats = cp.class_stats(_with_dead_units(H), labels, C)
    tr = cp.gradient_descent(ReducedCentralPathFlow(lam=1e-2), stats, 1e-3, 2)
    assert np.all(np.isfinite(np.asarray(tr.snapshots.objective)))


def test_renormalised_flows_refuse_states_off_the_manifold():
    H, labels = raw_features()
    with pytest.raises(cp.InputError, match="Sigma_W = I.*renormalised_features"):
        integrate(ReducedRenormalisedFlow(), cp.class_stats(H, labels, C), 1.0)


def test_ode_stall_names_the_likely_cause():
    X, labels = renormalised_start()
    with pytest.raises(cp.NumericalError, match="implicit solver.*Kvaerno5.*raise max_steps"):
        integrate(ReducedRenormalisedFlow(), cp.class_stats(X, labels, C), 1e6, max_steps=2)
