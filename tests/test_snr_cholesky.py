"""ω_j of a state known only to a solver's tolerance (`accuracy` > 0, every snapshot of an ODE
run) by a Cholesky solve instead of the collapse frame, when its rounding is a small part of
that uncertainty; the frame otherwise, and always for statistics known to rounding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import centralpath.simulate as S
from centralpath._integrate import integrate_segment
from centralpath._metrics import _snr_by_cholesky, _snr_solve, snr_singular_values
from centralpath._stats import class_stats

RTOL = 1e-10


def _ode_stats(t1=60.0):
    """Class statistics of a reduced UFM part-way to collapse (ω_j spread over ~30%)."""
    config = S.SimulationConfig(flow="ufm", classes=4, per_class=50, dim=20)
    flow, y0, _ = S.build(config)
    return flow.class_stats(integrate_segment(flow, y0, t1).final_state)


def _cholesky(stats, accuracy):
    return _snr_by_cholesky(stats, RTOL, accuracy)


def test_cholesky_omega_is_the_frame_omega_on_an_ode_state():
    stats = _ode_stats()
    cheap = _cholesky(stats, 1e-10)
    assert bool(cheap.good_enough)
    frame_omega, _ = _snr_solve(stats, RTOL)  # accuracy 0: the frame
    np.testing.assert_allclose(cheap.omega, frame_omega, rtol=1e-13)
    # Through the public entry point with the ODE's accuracy: the same values, resolved.
    omega = snr_singular_values(stats, rtol=RTOL, accuracy=jnp.asarray(1e-10))
    np.testing.assert_allclose(omega, frame_omega, rtol=1e-13)


def test_cholesky_error_covers_a_backward_error_sized_perturbation():
    """Cholesky's backward error is |δΣ_ab| ≤ (p + 1)·eps·√(Σ_aa Σ_bb); a perturbation of that
    size moves ω_j² by no more than the error the path reports for statistics known to rounding
    (accuracy eps, so the ODE's 1e-10 cannot make the check hold by itself)."""
    stats = _ode_stats()
    p = stats.dim
    eps = float(jnp.finfo(float).eps)
    reference = _cholesky(stats, 0.0)
    d_w = np.sqrt(np.diagonal(np.asarray(stats.sigma_w)))
    rng = np.random.default_rng(0)
    for _ in range(5):
        E = rng.choice([-1.0, 1.0], size=(p, p))
        E = (p + 1) * eps * np.triu(E) + np.triu(E, 1).T * (p + 1) * eps
        perturbed = type(stats)(
            stats.counts, stats.class_means, stats.sigma_w + E * np.outer(d_w, d_w)
        )
        shifted = np.asarray(_cholesky(perturbed, 0.0).omega)
        change = np.abs(shifted**2 / np.asarray(reference.omega) ** 2 - 1)
        assert np.all(change <= np.asarray(reference.err)), (change, reference.err)
        assert np.any(change > 0)


def test_statistics_known_to_rounding_never_take_the_cholesky_path(monkeypatch):
    """accuracy = 0 (analyze, statistics files): the program never solves by Cholesky of Σ_W
    (`_snr_by_cholesky`), so every analysis result is the collapse frame's. (The frame itself
    factorises Σ_T and the scaled in-frame Σ_W by Cholesky where that is exact: not this path.)"""
    import centralpath._metrics as metrics

    calls = []
    shortcut = metrics._snr_by_cholesky
    monkeypatch.setattr(metrics, "_snr_by_cholesky", lambda *a: calls.append(a) or shortcut(*a))
    stats = _ode_stats()
    jax.make_jaxpr(lambda s: _snr_solve(s, RTOL))(stats)
    assert not calls
    jax.make_jaxpr(lambda s, a: _snr_solve(s, RTOL, accuracy=a))(stats, jnp.asarray(1e-10))
    assert len(calls) == 1


def test_accuracy_at_rounding_falls_back_to_the_frame():
    """When Σ_W is known to rounding, the Cholesky solve's own rounding is not small against
    it: the frame decides, with the frame's answer."""
    stats = _ode_stats()
    assert not bool(_cholesky(stats, 1e-17).good_enough)
    got = _snr_solve(stats, RTOL, accuracy=jnp.asarray(1e-17))
    want = _snr_solve(stats, RTOL)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)


@pytest.mark.parametrize("dead", ["axis", "rotated"])
def test_dead_units_fall_back_to_the_frame(dead):
    """A dead direction (Σ_T singular) is for the frame to drop: the Cholesky path declines
    (its factorisation breaks down or its live bound fails) and ω_j are the frame's."""
    rng = np.random.default_rng(1)
    C, N, p = 3, 40, 8
    labels = np.repeat(np.arange(C), N)
    H = rng.normal(size=(C * N, p)) + 3 * rng.normal(size=(C, p))[labels]
    H[:, -1] = 0.0  # a dead unit
    if dead == "rotated":
        Q, _ = np.linalg.qr(rng.normal(size=(p, p)))
        H = H @ Q
    stats = class_stats(jnp.asarray(H), jnp.asarray(labels), C)
    assert not bool(_cholesky(stats, 1e-10).good_enough)
    got, _ = _snr_solve(stats, RTOL, accuracy=jnp.asarray(1e-10))
    want, _ = _snr_solve(stats, RTOL)
    np.testing.assert_allclose(got, want, rtol=1e-12)
