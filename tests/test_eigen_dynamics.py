"""Closed-form eigen-dynamics of the renormalised flows (THEORY.md §5, §6 F3/F3′).

The closed form F(ω(t)) = F(ω(0)) + t is checked against an independent Diffrax solve of the
scalar ODE dω/dt = omega_rate(ω); its consequences (monotone ω, ω_max/ω_min → 1, NC1 ∝ t^{-1/2},
the simplex ETF as the limit of the class means) against the asymptotic formulas.
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath._integrate import integrate
from centralpath._ufm import init_features
from centralpath.flows import ReducedRenormalisedFlow

ODE_TIMES = np.array([0.0, 1.0, 1e2, 1e4, 1e6])
OMEGA0 = np.array([1e-3, 0.1, 1.0, 3.0, 10.0])


def _rate_renormalised(t, y, args):
    C, N = args
    return cp.omega_rate(y, C, N, flow="renormalised")


def _rate_whitened(t, y, args):
    C, N = args
    return cp.omega_rate(y, C, N, flow="whitened")


RATES = {"renormalised": _rate_renormalised, "whitened": _rate_whitened}


def solve_omega_ode(flow, omega0, C, N, ts):
    """Reference: Dopri8 on the scalar ODE, independent of the closed form's Newton inverse."""
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(RATES[flow]),
        diffrax.Dopri8(),
        t0=0.0,
        t1=float(ts[-1]),
        dt0=None,
        y0=jnp.asarray(omega0),
        # C, N as arrays: one compilation per flow for every (C, N).
        args=(jnp.asarray(C, float), jnp.asarray(N, float)),
        saveat=diffrax.SaveAt(ts=jnp.asarray(ts)),
        stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-14),
        max_steps=100_000,
    )
    assert sol.result == diffrax.RESULTS.successful
    return np.asarray(sol.ys)


@pytest.mark.parametrize("flow", ["renormalised", "whitened"])
@pytest.mark.parametrize(("C", "N"), [(3, 4), (5, 2), (10, 7)])
def test_closed_form_matches_ode_solve(flow, C, N):
    predicted = np.asarray(cp.eigen_dynamics(OMEGA0, C, N, flow=flow)(ODE_TIMES))
    reference = solve_omega_ode(flow, OMEGA0, C, N, ODE_TIMES)
    assert predicted.shape == (len(ODE_TIMES), len(OMEGA0))
    assert_allclose(predicted, reference, rtol=1e-9, atol=0.0)
    # The solution actually moved: the comparison is not between two constants.
    assert np.all(predicted[-1] > 1.5 * OMEGA0)


@pytest.mark.parametrize("flow", ["renormalised", "whitened"])
def test_closed_form_invariants(flow):
    C, N = 4, 3
    predict = cp.eigen_dynamics(OMEGA0, C, N, flow=flow)
    F = cp.potential(C, N, flow=flow)
    ts = np.array([0.0, 0.5, 3.0, 1e3, 1e7, 1e12])
    omega = np.asarray(predict(ts))
    # t = 0 returns the initial values; F(ω(t)) − F(ω(0)) = t (the closed form's definition).
    assert_allclose(omega[0], OMEGA0, rtol=1e-14, atol=0.0)
    a = np.asarray(F(OMEGA0))
    assert_allclose(np.asarray(F(omega)) - a, np.broadcast_to(ts[:, None], omega.shape),
                    rtol=1e-11, atol=1e-9)
    # Split time grids agree: restarting from ω(s) for time t − s gives ω(t).
    s = 3.0
    restarted = np.asarray(cp.eigen_dynamics(omega[2], C, N, flow=flow)(ts[3:] - s))
    assert_allclose(restarted, omega[3:], rtol=1e-12, atol=0.0)
    # F' · dω/dt = 1: the potential and the rate describe the same ODE.
    u = np.log(OMEGA0)
    dF_domega = np.asarray(F.derivative_log(u)) / OMEGA0
    assert_allclose(dF_domega * np.asarray(cp.omega_rate(OMEGA0, C, N, flow=flow)), 1.0,
                    rtol=1e-13, atol=0.0)
    # Each ω_j increases strictly, and ω_max/ω_min falls.
    assert np.all(np.diff(omega, axis=0) > 0)
    ratio = omega.max(axis=1) / omega.min(axis=1)
    assert np.all(np.diff(ratio) < 0)


def test_zero_singular_value_stays_zero_and_infinite_time_limit():
    omega0 = np.array([0.0, 0.5, 2.0])
    predict = cp.eigen_dynamics(omega0, 4, 3)
    omega = np.asarray(predict(np.array([0.0, 10.0, 1e6, np.inf])))
    assert_allclose(omega[:, 0], 0.0, rtol=0.0, atol=0.0)
    assert np.all(np.isinf(omega[-1, 1:]))
    assert np.all(np.isfinite(omega[:-1]))


def test_paper_constants_kappa_rescales_time():
    """Dividing c₁, c₂, c₃ by κ is the same as running the dynamics κ times faster."""
    C, N, kappa = 3, 5, 7.0
    F = cp.potential(C, N, kappa=kappa)
    assert_allclose(float(F.c2) ** 2, 4.0 * float(F.c1) * float(F.c3), rtol=1e-14, atol=0.0)
    ts = np.array([0.0, 2.0, 1e3, 1e8])
    slow = np.asarray(cp.eigen_dynamics(OMEGA0, C, N, kappa=kappa)(ts))
    fast = np.asarray(cp.eigen_dynamics(OMEGA0, C, N)(kappa * ts))
    assert_allclose(slow, fast, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize(("C", "N"), [(3, 4), (6, 2)])
def test_asymptotics(C, N):
    """ω ≈ (4t/N)^{1/4}, NC1 ≈ ((C−1)/2)√(N/t), L_LS ≈ ((C−1)/4)√(N/t), ω_j/ω_k − 1 ≈ Δa/(4t).

    The relative corrections are O(C √(N/t)) (from the N C ω² term of F), so the errors must
    shrink like t^{-1/2}.
    """
    omega0 = np.linspace(0.3, 4.0, C - 1)
    predict = cp.eigen_dynamics(omega0, C, N)
    ts = np.array([1e6, 1e8, 1e10])
    omega = np.asarray(predict(ts))
    bound = 2.0 * C * np.sqrt(N / ts)

    rel_omega = np.abs(omega / np.asarray(cp.asymptotic_omega(ts, N))[:, None] - 1.0)
    assert np.all(rel_omega.max(axis=1) <= bound)
    nc1 = np.asarray(cp.nc1_from_snr(omega))
    rel_nc1 = np.abs(nc1 / np.asarray(cp.asymptotic_nc1(ts, C, N)) - 1.0)
    assert np.all(rel_nc1 <= bound)
    assert np.all(np.diff(rel_nc1) < 0)
    loss, loss_nc1, loss_nc23 = (np.asarray(x) for x in cp.central_path_loss_terms(omega, C))
    assert_allclose(loss_nc1 + loss_nc23, loss, rtol=1e-13, atol=0.0)
    rel_loss = np.abs(loss / np.asarray(cp.asymptotic_loss(ts, C, N)) - 1.0)
    assert np.all(rel_loss <= bound)

    a = np.asarray(cp.potential(C, N)(omega0))
    gap = omega[:, -1] / omega[:, 0] - 1.0
    predicted_gap = np.asarray(cp.asymptotic_ratio_gap(a[-1], a[0], ts))
    assert_allclose(gap, predicted_gap, rtol=2.0 * bound[0], atol=0.0)


def test_nc1_exponent_from_closed_form():
    """log NC1 against log t on the late trajectory: slope −1/2."""
    C, N = 4, 3
    ts = np.logspace(6, 9, 7)
    omega = np.asarray(cp.eigen_dynamics(np.array([0.2, 1.0, 5.0]), C, N)(ts))
    slope = np.polyfit(np.log(ts), np.log(np.asarray(cp.nc1_from_snr(omega))), 1)[0]
    assert abs(slope + 0.5) <= 0.05


# ---------------------------------------------------------------------------------------------
# The class means approach a simplex ETF along F3 (hypothesis over sizes).


def renormalised_stats(seed, C, N, p):
    H, labels = init_features(jax.random.PRNGKey(seed), C, N, p, mean_scale=2.0)
    X = cp.renormalised_features(H, cp.class_stats(H, labels, C))
    return cp.class_stats(X, labels, C)


def etf_metrics(stats):
    return np.array(
        [
            float(cp.etf_distance(stats)),
            float(cp.nc2_equinorm_means(stats)),
            float(cp.nc2_equiangular_means(stats)),
        ]
    )


sizes = st.integers(2, 5).flatmap(
    lambda C: st.tuples(
        st.just(C), st.integers(2, 6), st.integers(max(C - 1, 1), C + 3), st.integers(0, 2**16)
    )
)

ETF_TIMES = np.array([0.0, 1e2, 1e4, 1e6, 1e8])


@given(sizes)
def test_means_approach_simplex_etf_closed_form(size):
    """Along F3 Ω = U diag(ω(t)) Vᵀ with U, V fixed (tested on the flow in test_flows.py) and
    Σ_W = I: rebuild M̄(t) from the closed form and measure it with the library's metrics."""
    C, N, p, seed = size
    stats0 = renormalised_stats(seed, C, N, p)
    U, omega0, Vt = np.linalg.svd(np.asarray(cp.snr_matrix(stats0)), full_matrices=False)
    U, omega0, Vt = U[:, : C - 1], omega0[: C - 1], Vt[: C - 1]
    assert np.all(omega0 > 0)
    omega = np.asarray(cp.eigen_dynamics(omega0, C, N)(ETF_TIMES))
    mu = np.asarray(stats0.global_mean)
    metrics, ratios = [], []
    for w in omega:
        Mbar = U @ np.diag(w) @ Vt
        stats = cp.ClassStats(stats0.counts, jnp.asarray(mu[:, None] + Mbar), stats0.sigma_w)
        metrics.append(etf_metrics(stats))
        snr = np.asarray(cp.snr_singular_values(stats))
        assert_allclose(np.sort(snr), np.sort(w), rtol=1e-10, atol=0.0)
        ratios.append(snr.max() / snr.min())
    metrics, ratios = np.array(metrics), np.array(ratios)
    if C == 2:
        # One singular value: the two centred means are always antipodal, an exact ETF.
        assert_allclose(metrics, 0.0, rtol=0.0, atol=1e-12)
        return
    assert np.all(np.diff(ratios) < 0)
    # ω_max/ω_min − 1 ≈ Δa/(4t) at t = 1e8: the means are an ETF up to that gap.
    gap = ratios[-1] - 1.0
    a = np.asarray(cp.potential(C, N)(omega0))
    assert gap <= 1.01 * (a.max() - a.min()) / (4 * ETF_TIMES[-1])
    assert np.all(metrics[-1] <= 2.0 * gap + 1e-12)
    assert np.all(metrics[-1] <= metrics[0])


@pytest.mark.slow
@settings(max_examples=12)
@given(sizes)
def test_means_approach_simplex_etf_along_reduced_flow(size):
    """The same on the integrated ReducedRenormalisedFlow (one compilation per shape: slow)."""
    C, N, p, seed = size
    stats0 = renormalised_stats(seed, C, N, p)
    trajectory = integrate(ReducedRenormalisedFlow(), stats0, ETF_TIMES[-1], ts=ETF_TIMES)
    m = trajectory.metrics()
    omega = np.asarray(cp.eigen_dynamics(m["snr"][0], C, N)(ETF_TIMES))
    assert_allclose(m["snr"], omega, rtol=1e-7, atol=0.0)
    metrics = np.stack([m["etf_distance"], m["nc2_equinorm_means"], m["nc2_equiangular_means"]], 1)
    ratios = m["snr"].max(axis=1) / m["snr"].min(axis=1)
    if C == 2:
        assert_allclose(metrics, 0.0, rtol=0.0, atol=1e-12)
        return
    assert np.all(np.diff(ratios) < 0)
    assert np.all(metrics[-1] <= 2.0 * (ratios[-1] - 1.0) + 1e-12)
    assert np.all(metrics[-1] <= metrics[0])
    assert np.all(np.diff(m["objective"]) < 0)
