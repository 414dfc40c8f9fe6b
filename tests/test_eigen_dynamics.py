"""The closed-form eigen-dynamics against an ODE solve, and its limit: the simplex ETF.

docs/theory.md §6 F3/F3′. `eigen_dynamics` (Newton on F(ω) = F(ω₀) + t) is checked against an
independent Diffrax solve of the scalar ODE dω/dt = omega_rate(ω); then, along F3, the class
means rebuilt from the closed form approach a simplex ETF (the same on the integrated flow is in
the slow tier). Algebraic properties of F, F⁻¹ and the asymptotic formulas are in test_eigen.py;
the flows themselves against the closed form in test_flows.py.
"""

import functools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath._integrate import integrate
from centralpath.flows import ReducedRenormalisedFlow

ODE_TIMES = np.array([0.0, 1.0, 1e2, 1e4, 1e6])
OMEGA0 = np.array([1e-3, 0.1, 1.0, 3.0, 10.0])


def _rate(t, y, args):
    C, N, whitened = args
    return jnp.where(
        whitened,
        cp.omega_rate(y, C, N, flow="whitened"),
        cp.omega_rate(y, C, N, flow="renormalised"),
    )


def solve_omega_ode(flow, omega0, C, N, ts):
    """Reference: Dopri8 on the scalar ODE, independent of the closed form's Newton inverse."""
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_rate),
        diffrax.Dopri8(),
        t0=0.0,
        t1=float(ts[-1]),
        dt0=None,
        y0=jnp.asarray(omega0),
        # (C, N, flow) as arrays: one compilation for every case.
        args=(jnp.asarray(C, float), jnp.asarray(N, float), jnp.asarray(flow == "whitened")),
        saveat=diffrax.SaveAt(ts=jnp.asarray(ts)),
        stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-14),
        max_steps=100_000,
    )
    assert sol.result == diffrax.RESULTS.successful
    return np.asarray(sol.ys)


@functools.partial(jax.jit, static_argnames=("flow",))
def _closed_form(omega0, ts, C, N, flow):
    return cp.eigen_dynamics(omega0, C, N, flow=flow)(ts)


def closed_form(omega0, ts, C, N, flow="renormalised"):
    """ω(ts) from `eigen_dynamics`; (C, N) traced so that each flow compiles once per shape."""
    return np.asarray(
        _closed_form(
            jnp.asarray(omega0, float),
            jnp.asarray(ts, float),
            jnp.asarray(C, float),
            jnp.asarray(N, float),
            flow=flow,
        )
    )


@pytest.mark.parametrize("flow", ["renormalised", "whitened"])
@pytest.mark.parametrize(("C", "N"), [(3, 4), (5, 2), (10, 7)])
def test_closed_form_matches_ode_solve(flow, C, N):
    predicted = closed_form(OMEGA0, ODE_TIMES, C, N, flow)
    reference = solve_omega_ode(flow, OMEGA0, C, N, ODE_TIMES)
    assert predicted.shape == (len(ODE_TIMES), len(OMEGA0))
    assert_allclose(predicted, reference, rtol=1e-9, atol=0.0)
    # The solution moved (by far, for small ω₀): the comparison is not between two constants.
    assert np.all(predicted[-1] > 1.5 * OMEGA0)


def test_closed_form_eager_call_matches_jitted():
    """The public, un-jitted call (with its input validation) gives the same numbers."""
    eager = np.asarray(cp.eigen_dynamics(OMEGA0, 6, 4, flow="whitened")(ODE_TIMES))
    assert_allclose(
        eager, closed_form(OMEGA0, ODE_TIMES, 6, 4, "whitened"), rtol=1e-14, atol=0
    )  # a few ulps


@pytest.mark.parametrize("flow", ["renormalised", "whitened"])
def test_closed_form_flow_properties(flow):
    """t = 0 is the start; restarting from ω(s) for t − s gives ω(t); each ω_j increases and
    ω_max/ω_min falls, strictly (d log ω/dt decreases in ω for both flows)."""
    C, N = 4, 3
    ts = np.array([0.0, 0.5, 3.0, 1e3, 1e7])
    omega = closed_form(OMEGA0, ts, C, N, flow)
    assert_allclose(omega[0], OMEGA0, rtol=1e-14, atol=0.0)
    restarted = closed_form(omega[2], ts - ts[2], C, N, flow)
    assert_allclose(restarted[2:], omega[2:], rtol=1e-12, atol=0.0)
    assert np.all(np.diff(omega, axis=0) > 0)
    ratio = omega.max(axis=1) / omega.min(axis=1)
    assert np.all(np.diff(ratio) < 0)


# ---------------------------------------------------------------------------------------------
# Along F3 the class means approach a simplex ETF (hypothesis over sizes and seeds).

ETF_TIMES = np.array([0.0, 1e2, 1e4, 1e6, 1e8])


def numpy_renormalised_stats(seed, C, N, p):
    """Balanced Gaussian features, renormalised in numpy: (counts, M [p, C], Σ_W = I)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(C), N)
    H = 2.0 * rng.normal(size=(C, p))[labels] / np.sqrt(p) + rng.normal(size=(C * N, p))
    M = np.stack([H[labels == c].mean(0) for c in range(C)], axis=1)
    eps = H - M.T[labels]
    s, V = np.linalg.eigh(eps.T @ eps / (C * N))
    whiten = V @ np.diag(s**-0.5) @ V.T
    X = (H - H.mean(0)) @ whiten
    Mx = np.stack([X[labels == c].mean(0) for c in range(C)], axis=1)
    return np.full(C, float(N)), Mx


@functools.partial(jax.jit, static_argnames=("C",))
def _etf_path(omega0, Vt, counts, ts, N, C):
    """Metrics of the class means M̄(t) = diag(ω(t)) Vᵀ with Σ_W = I in R^{C−1}.

    The metrics are invariant under the fixed orthonormal U of Ω = U diag(ω) Vᵀ, so working in
    R^{C−1} keeps one compilation per C.
    """
    omega = cp.eigen_dynamics(omega0, C, N)(ts)

    def at(w):
        stats = cp.ClassStats(counts, w[:, None] * Vt, jnp.eye(C - 1))
        return jnp.stack(
            [cp.etf_distance(stats), cp.nc2_equinorm_means(stats), cp.nc2_equiangular_means(stats)]
        ), cp.snr_singular_values(stats)

    metrics, snr = jax.vmap(at)(omega)
    return omega, metrics, snr


# C ∈ [2, 5], N ∈ [2, 6], p ∈ [C − 1, C + 3] with p ≤ n − C, so that Σ_W is invertible (the
# renormalised flows need Σ_W = I).
sizes = st.tuples(st.integers(2, 5), st.integers(2, 6)).flatmap(
    lambda CN: st.tuples(
        st.just(CN[0]),
        st.just(CN[1]),
        st.integers(max(CN[0] - 1, 1), min(CN[0] + 3, CN[0] * (CN[1] - 1))),
        st.integers(0, 2**16),
    )
)


def check_etf_limit(C, N, omega0, omega, metrics, snr):
    """ω_j(t) all grow alike, so the means become equinorm and equiangular."""
    ratios = snr.max(axis=1) / snr.min(axis=1)
    if C == 2:
        # One singular value: two centred means are antipodal, always an exact ETF.
        assert_allclose(metrics, 0.0, rtol=0.0, atol=1e-12)
        return
    assert np.all(np.diff(ratios) < 0)
    # ω_max/ω_min − 1 ≈ Δa/(4t) with a = F(ω₀) (docs/theory.md §6 F3); here at t = 1e8.
    a = np.asarray(cp.potential(C, N)(omega0))
    gap = ratios[-1] - 1.0
    assert gap <= 1.01 * (a.max() - a.min()) / (4 * ETF_TIMES[-1])
    # With ω_j² = s(1 + δ_j), |δ_j| ≤ 2·gap: each metric is O(δ) (bounds in the docstrings of
    # the tests below), and all fall from their initial value.
    assert np.all(metrics[-1] <= 4.0 * gap + 1e-12)
    assert np.all(metrics[-1] < metrics[0])


@given(sizes)
def test_means_approach_simplex_etf_closed_form(size):
    """Ω(t) = U diag(ω(t)) Vᵀ with U, V fixed (checked on the flows in test_flows.py): the
    class means rebuilt from the closed form, measured with the library's NC2 metrics.

    Bounds: G = M̄ᵀM̄ = V diag(ω²) Vᵀ, so the ETF distance is ‖ω²/‖ω²‖ − 1/√(C−1)‖ ≤ max|δ|;
    ‖μ_c − μ_G‖² and the cosines are averages of ω_j² with weights V_cj², so equinorm and
    equiangularity are ≤ 2 max|δ| to first order.
    """
    C, N, p, seed = size
    counts, M = numpy_renormalised_stats(seed, C, N, p)
    Mbar = M - M.mean(axis=1, keepdims=True)
    _, omega0, Vt = np.linalg.svd(Mbar, full_matrices=False)  # Σ_W = I: Ω = M̄
    omega0, Vt = omega0[: C - 1], Vt[: C - 1]
    assert np.all(omega0 > 0)
    assert_allclose(Vt @ np.ones(C), 0.0, rtol=0, atol=1e-12)
    omega, metrics, snr = (
        np.asarray(x) for x in _etf_path(omega0, Vt, counts, ETF_TIMES, float(N), C=C)
    )
    assert_allclose(np.sort(snr, axis=1), np.sort(omega, axis=1), rtol=1e-10, atol=0.0)
    check_etf_limit(C, N, omega0, omega, metrics, snr)


@pytest.mark.slow
@settings(max_examples=12)
@given(sizes)
def test_means_approach_simplex_etf_along_reduced_flow(size):
    """The same on the integrated ReducedRenormalisedFlow (one compilation per shape)."""
    C, N, p, seed = size
    counts, M = numpy_renormalised_stats(seed, C, N, p)
    stats0 = cp.ClassStats.from_moments(counts, M, np.eye(p))
    trajectory = integrate(
        ReducedRenormalisedFlow(), stats0, ETF_TIMES[-1], ts=ETF_TIMES, rtol=1e-11, atol=1e-13
    )
    m = trajectory.metrics()
    omega = closed_form(m["snr"][0], ETF_TIMES, C, N)
    assert_allclose(m["snr"], omega, rtol=1e-8, atol=0.0)
    metrics = np.stack([m["etf_distance"], m["nc2_equinorm_means"], m["nc2_equiangular_means"]], 1)
    check_etf_limit(C, N, m["snr"][0], omega, metrics, m["snr"])
    assert np.all(np.diff(m["objective"]) < 0)
