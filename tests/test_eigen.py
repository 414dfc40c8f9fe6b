"""Closed-form eigen-dynamics of the renormalised flow (docs/theory.md §6 F3, F3′)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath import InputError

CASES = [(2, 1), (3, 5), (10, 100)]  # (C, N)
FLOWS = ["renormalised", "whitened"]


def F_renormalised(omega, C, N):
    return N * C**2 * np.log(omega) + N * C * omega**2 + (N / 4) * omega**4


def F_whitened(omega, C, N):
    return C * N * (C * np.log(omega) + omega**2 / 2)


def F_numpy(flow):
    return F_renormalised if flow == "renormalised" else F_whitened


# Newton's while-loop costs ~0.5 s to compile and is re-traced on every eager call, so the
# tests go through these jitted wrappers: (C, N, κ) are traced and inputs are padded to fixed
# shapes, so each compiles once per flow.
_VALUES, _OMEGAS, _TIMES = 128, 4, 8


def _pad(x, size, fill):
    x = np.atleast_1d(np.asarray(x, dtype=float))
    assert x.ndim == 1 and len(x) <= size
    return np.concatenate([x, np.full(size - len(x), fill)])


@functools.partial(jax.jit, static_argnames=("flow",))
def _inverse(values, C, N, kappa, flow):
    return cp.potential(C, N, kappa=kappa, flow=flow).inverse(values)


def inverse(values, C, N, kappa=1.0, flow="renormalised"):
    """F⁻¹(values) for the potential with constants (C, N, κ)."""
    out = _inverse(_pad(values, _VALUES, 1.0), C, N, kappa, flow=flow)
    return np.asarray(out)[: np.size(values)]


@functools.partial(jax.jit, static_argnames=("flow",))
def _omega_at(omega0, t, C, N, kappa, flow):
    predict = cp.eigen_dynamics(omega0, C, N, kappa=kappa, flow=flow)
    rate = jax.jvp(predict, (t,), (jnp.ones_like(t),))[1]  # dω/dt by forward mode
    return predict(t), rate


def omega_at(omega0, t, C, N, kappa=1.0, flow="renormalised", *, rate=False):
    """ω(t) [T, len(omega0)] from `eigen_dynamics` (and dω/dt with `rate=True`)."""
    k, T = np.size(omega0), np.size(t)
    omega, d = _omega_at(_pad(omega0, _OMEGAS, 1.0), _pad(t, _TIMES, 0.0), C, N, kappa, flow=flow)
    omega, d = np.asarray(omega)[:T, :k], np.asarray(d)[:T, :k]
    return (omega, d) if rate else omega


# --------------------------------------------------------------------------------------------
# The potential F


@pytest.mark.parametrize("C, N", CASES)
def test_potential_is_the_closed_form(C, N):
    F = cp.potential(C, N)
    omega = np.logspace(-6, 4, 31)
    assert_allclose(np.asarray(F(omega)), F_renormalised(omega, C, N), rtol=1e-13, atol=1e-13)
    assert_allclose([F.c1, F.c2, F.c3], [N * C**2, N * C, N / 4], rtol=1e-15, atol=0)
    # c₂² = 4 c₁ c₃ in every time convention, and κ divides all three constants.
    for kappa in (1.0, 0.37, 12.0):
        Fk = cp.potential(C, N, kappa=kappa)
        assert_allclose(Fk.c2**2, 4 * Fk.c1 * Fk.c3, rtol=1e-14, atol=0)
        expected = np.array([N * C**2, N * C, N / 4]) / kappa
        assert_allclose([Fk.c1, Fk.c2, Fk.c3], expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("C, N", CASES)
def test_whitened_potential(C, N):
    # F3′: F = C N (C log ω + ω²/2), no ω⁴ term.
    F = cp.potential(C, N, flow="whitened")
    omega = np.logspace(-6, 4, 31)
    assert_allclose(np.asarray(F(omega)), F_whitened(omega, C, N), rtol=1e-13, atol=1e-13)
    assert float(F.c3) == 0.0
    F2 = cp.potential(C, N, flow="whitened", kappa=4.0)
    assert_allclose(np.asarray(F2(omega)), F_whitened(omega, C, N) / 4, rtol=1e-13, atol=1e-13)


def test_unknown_flow_raises():
    with pytest.raises(InputError, match="flow"):
        cp.potential(3, 5, flow="gradient")
    with pytest.raises(InputError, match="flow"):
        cp.omega_rate(1.0, 3, 5, flow="gradient")


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("C, N", CASES)
def test_derivative_log_is_dF_du(C, N, flow):
    F = cp.potential(C, N, flow=flow)
    u = jnp.linspace(-8.0, 8.0, 33)
    dF = jax.jit(jax.vmap(jax.grad(lambda F, u: F(jnp.exp(u)), argnums=1), (None, 0)))(F, u)
    assert_allclose(np.asarray(F.derivative_log(u)), np.asarray(dF), rtol=1e-13, atol=0)
    w2 = np.exp(2 * np.asarray(u))
    # Written out: N (C + ω²)² for F3, C N (C + ω²) for F3′.
    expected = N * (C + w2) ** 2 if flow == "renormalised" else C * N * (C + w2)
    assert_allclose(np.asarray(F.derivative_log(u)), expected, rtol=1e-13, atol=0)


# --------------------------------------------------------------------------------------------
# F⁻¹


OMEGA_GRID = np.logspace(-8, 6, 57)
TINY = np.array([1e-300, 1e-200, 1e-100, 1e-30])  # very negative targets, F ≈ −690 c₁


@pytest.mark.parametrize("kappa", [1.0, 1e-3, 1e3])
@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("C, N", CASES)
def test_inverse_inverts_F(C, N, flow, kappa):
    Fnp = F_numpy(flow)
    omega = np.concatenate([OMEGA_GRID, TINY])
    got = inverse(Fnp(omega, C, N) / kappa, C, N, kappa, flow)
    assert_allclose(got, omega, rtol=1e-12, atol=0)
    # Large targets, up to 1e12 (beyond that, see the two xfails below).
    targets = np.array([1e8, 1e9, 3e10, 1e12])
    omega_big = inverse(targets, C, N, kappa, flow)
    assert_allclose(Fnp(omega_big, C, N) / kappa, targets, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kappa", [1.0, 1e-3, 1e3])
@pytest.mark.parametrize("C, N", CASES)
def test_inverse_renormalised_huge_targets(C, N, kappa):
    targets = np.logspace(40, 120, 81)
    omega = inverse(targets, C, N, kappa, "renormalised")
    assert_allclose(F_renormalised(omega, C, N) / kappa, targets, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kappa", [1.0, 1e-3, 1e3])
@pytest.mark.parametrize("C, N", CASES)
def test_inverse_whitened_large_targets(C, N, kappa):
    targets = np.logspace(13, 40, 109)
    omega = inverse(targets, C, N, kappa, "whitened")
    assert np.all(np.isfinite(omega))
    assert_allclose(F_whitened(omega, C, N) / kappa, targets, rtol=1e-12, atol=0)


def test_inverse_limits():
    out = inverse([np.inf, -np.inf, -1e6, 0.0], 3, 5)
    assert out[0] == np.inf
    assert out[1] == 0.0
    assert out[2] == 0.0  # ω = exp(−1e6/45) underflows to 0
    assert_allclose(F_renormalised(out[3], 3, 5), 0.0, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# ω(t)

TIMES = np.array([0.0, 1.0, 1e2, 1e4, 1e6])


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("C, N", CASES)
def test_eigen_dynamics_closed_form(C, N, flow):
    omega0 = np.array([0.05, 0.7, 4.0, 20.0])  # ω_j evolve independently: any number of them
    omega = omega_at(omega0, TIMES, C, N, flow=flow)
    assert omega.shape == (len(TIMES), len(omega0))
    # F(ω(t)) = F(ω0) + t, with F written here.
    Fnp = F_numpy(flow)
    rhs = Fnp(omega0, C, N) + TIMES[:, None]
    assert_allclose(Fnp(omega, C, N), rhs, rtol=1e-12, atol=1e-12 * np.max(np.abs(rhs)))
    assert_allclose(omega[0], omega0, rtol=1e-14, atol=0)  # t = 0 returns ω0
    assert np.all(np.diff(omega, axis=0) > 0)  # ω increases with t


def test_eigen_dynamics_zero_and_infinity():
    out = omega_at([0.5, 0.0, 3.0], [0.0, 10.0, np.inf], 4, 5)
    assert_allclose(out[:, 1], 0.0, rtol=0, atol=0)  # a zero ω stays zero, even at t = inf
    assert_allclose(out[0], [0.5, 0.0, 3.0], rtol=1e-14, atol=0)
    assert out[2, 0] == np.inf and out[2, 2] == np.inf


def test_public_calls_outside_jit():
    # An eager call re-traces the Newton loop (~1 s), so only this test makes one.
    omega0 = np.array([0.2, 3.0])
    predict = cp.eigen_dynamics(omega0, 3, 5)
    scalar = np.asarray(predict(1e2))  # a scalar time gives shape [C − 1]
    assert scalar.shape == (2,)
    assert_allclose(scalar, omega_at(omega0, [1e2], 3, 5)[0], rtol=1e-15, atol=0)
    assert_allclose(
        F_renormalised(scalar, 3, 5), F_renormalised(omega0, 3, 5) + 1e2, rtol=1e-12, atol=0
    )


@pytest.mark.parametrize(
    "omega0", [np.array([-0.1, 1.0]), np.array([np.nan, 1.0]), np.ones((2, 2))]
)
def test_eigen_dynamics_bad_omega0(omega0):
    with pytest.raises(InputError, match="omega0"):
        cp.eigen_dynamics(omega0, 3, 5)


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("kappa", [0.25, 7.0])
def test_kappa_rescales_time(kappa, flow):
    omega0 = np.array([0.3, 1.0, 4.0])
    t = np.array([0.0, 0.5, 30.0, 1e3, 1e5])
    with_kappa = omega_at(omega0, t, 4, 3, kappa, flow)
    plain = omega_at(omega0, kappa * t, 4, 3, 1.0, flow)
    assert_allclose(with_kappa, plain, rtol=1e-12, atol=0)


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("C, N", [(3, 5), (10, 100)])
def test_omega_rate_is_the_time_derivative(C, N, flow):
    omega0 = np.array([0.1, 1.0, 10.0])
    t = np.array([0.0, 3.0, 1e3, 1e6])
    omega, derivative = omega_at(omega0, t, C, N, flow=flow, rate=True)
    rate = np.asarray(cp.omega_rate(omega, C, N, flow=flow))
    # Forward mode through the Newton iteration ...
    assert_allclose(derivative, rate, rtol=1e-8, atol=0)
    # ... and a central finite difference, independent of it (error ~ h²ω‴ + eps·ω/h).
    h = 1e-3 * np.maximum(1.0, t)
    plus = omega_at(omega0, t + h, C, N, flow=flow)
    minus = omega_at(omega0, t - h, C, N, flow=flow)
    assert_allclose((plus - minus) / (2 * h[:, None]), rate, rtol=1e-6, atol=0)
    # The ODE, written out: dω/dt = ω/(N(C + ω²)²) (F3), ω/(CN(C + ω²)) (F3′).
    w = np.array([0.1, 1.0, 10.0])
    expected = w / (N * (C + w**2) ** 2) if flow == "renormalised" else w / (C * N * (C + w**2))
    assert_allclose(np.asarray(cp.omega_rate(w, C, N, flow=flow)), expected, rtol=1e-14, atol=0)


# --------------------------------------------------------------------------------------------
# Asymptotics


def test_asymptotics_agree_with_closed_form():
    C, N = 4, 5
    omega0 = np.array([0.2, 1.0, 3.0])
    a = F_renormalised(omega0, C, N)
    times = np.array([1e8, 1e10])
    errors = []
    for t, omega in zip(times, omega_at(omega0, times, C, N), strict=True):
        L_ls = float(cp.central_path_loss_terms(omega, C)[0])
        errors.append(
            {
                "omega": np.max(np.abs(np.asarray(cp.asymptotic_omega(t, N)) / omega - 1)),
                "nc1": abs(float(cp.asymptotic_nc1(t, C, N)) / float(cp.nc1_from_snr(omega)) - 1),
                "loss": abs(float(cp.asymptotic_loss(t, C, N)) / L_ls - 1),
                "gap": abs(
                    float(cp.asymptotic_ratio_gap(a[2], a[0], t)) / (omega[2] / omega[0] - 1) - 1
                ),
            }
        )
    early, late = errors
    for name, err in late.items():
        assert err < 1e-2, (name, err)
        assert err < 0.5 * early[name], (name, early[name], err)  # and shrinking with t


def test_asymptotic_formulas():
    C, N, kappa, t = 3, 5, 4.0, 1e9
    # (4t/N)^{1/4}, ((C−1)/2)√(N/t), ((C−1)/4)√(N/t), Δa/(4t) ...
    assert_allclose(cp.asymptotic_omega(t, N), (4 * t / N) ** 0.25, rtol=1e-15, atol=0)
    assert_allclose(cp.asymptotic_nc1(t, C, N), (C - 1) / 2 * np.sqrt(N / t), rtol=1e-15, atol=0)
    assert_allclose(cp.asymptotic_loss(t, C, N), (C - 1) / 4 * np.sqrt(N / t), rtol=1e-15, atol=0)
    assert_allclose(cp.asymptotic_ratio_gap(7.0, 2.0, t), 5.0 / (4 * t), rtol=1e-15, atol=0)
    # ... and κ rescales time in them as in the closed form.
    pairs = [
        (cp.asymptotic_omega(t, N, kappa=kappa), cp.asymptotic_omega(kappa * t, N)),
        (cp.asymptotic_nc1(t, C, N, kappa=kappa), cp.asymptotic_nc1(kappa * t, C, N)),
        (cp.asymptotic_loss(t, C, N, kappa=kappa), cp.asymptotic_loss(kappa * t, C, N)),
        (
            cp.asymptotic_ratio_gap(7.0, 2.0, t, kappa=kappa),
            cp.asymptotic_ratio_gap(7.0, 2.0, kappa * t),
        ),
    ]
    for got, want in pairs:
        assert_allclose(got, want, rtol=1e-15, atol=0)


def test_central_path_loss_terms_and_nc1_from_snr():
    omega = np.array([[0.1, 1.0, 5.0], [2.0, 2.0, 2.0]])
    L, L1, L23 = (np.asarray(x) for x in cp.central_path_loss_terms(omega, 4))
    assert L.shape == (2,)
    # ω²/(C + ω²)² + C/(C + ω²)² = 1/(C + ω²)
    assert_allclose(L1 + L23, L, rtol=1e-14, atol=0)
    # ω = 2, C = 4: L_LS = ½·3/(4 + 4) = 3/16; L_NC1 = ½·3·4/64 = 3/32; NC1 = 3/4.
    assert_allclose(L[1], 3 / 16, rtol=1e-15, atol=0)
    assert_allclose(L1[1], 3 / 32, rtol=1e-15, atol=0)
    assert_allclose(np.asarray(cp.nc1_from_snr(omega[1])), 3 / 4, rtol=1e-15, atol=0)


def test_values_are_checked_at_run_time_under_jit():
    """Under jit the values are unknown while tracing: the same checks run in the program
    (eqx.error_if) instead of being skipped."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    predict = eqx.filter_jit(lambda w: cp.eigen_dynamics(w, 3, 4)(jnp.array([0.0, 1.0])))
    assert np.all(np.isfinite(np.asarray(predict(jnp.array([1.0, 2.0])))))
    with pytest.raises(Exception, match="omega0 must be finite and >= 0"):
        jax.block_until_ready(predict(jnp.array([1.0, -2.0])))
    rng = np.random.default_rng(0)
    stats = cp.class_stats(rng.normal(size=(12, 4)), np.arange(12) % 3, 3)
    W, b = jnp.ones((3, 4)), jnp.zeros(3)
    loss = eqx.filter_jit(lambda lam: cp.loss_decomposition(stats, W, b, lam).loss)
    assert np.isfinite(float(loss(jnp.asarray(0.1))))
    with pytest.raises(Exception, match="ridge lambda must be a finite number >= 0"):
        jax.block_until_ready(loss(jnp.asarray(-0.1)))
