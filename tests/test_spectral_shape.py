"""The spectral-shape finding of docs/theory.md §8 ("What sets ω_max/ω_min"): along F3 every
ω_j obeys d log ω_j/dt = 1/(N (C + ω_j²)²), slower for larger ω_j, so ω_max/ω_min falls toward
1 from any start — the renormalised flow cannot hold the spread a network keeps; only the
unwhitened central path (and its ridge) can."""

import jax.numpy as jnp
import numpy as np
import pytest

import centralpath as cp


@pytest.mark.parametrize("spread", [1.3, 2.6, 6.0])
def test_the_closed_form_always_narrows_the_spectrum(spread):
    C, N = 10, 100.0
    omega0 = np.geomspace(1.0, spread, C - 1)
    times = np.geomspace(1e2, 1e8, 40)
    omega = np.asarray(cp.eigen_dynamics(omega0, C, N)(jnp.asarray(times)))
    ratio = omega.max(1) / omega.min(1)
    assert np.all(np.diff(ratio) < 0) and ratio[0] < spread
    # The rate itself: d log ω_j/dt = 1/(N (C + ω_j²)²), by a centred difference of the flow.
    t, h = 1e4, 1.0
    w = np.asarray(cp.eigen_dynamics(omega0, C, N)(jnp.asarray([t - h, t, t + h])))
    rate = (np.log(w[2]) - np.log(w[0])) / (2 * h)
    np.testing.assert_allclose(rate, 1.0 / (N * (C + w[1] ** 2) ** 2), rtol=1e-6)
    assert np.all(np.diff(rate[np.argsort(w[1])]) < 0)  # larger ω_j grow more slowly
