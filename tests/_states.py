"""Small starting states shared by the flow and gradient-descent tests (cached: each is built
once per session). C = 4 classes, N = 3 per class, p = 5, with a non-zero global mean."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import centralpath as cp
from centralpath._ufm import UFMState, init_features, init_ufm

C, N, P = 4, 3, 5
ODE = dict(rtol=1e-11, atol=1e-13)
SHIFT = np.array([0.7, -0.3, 0.2, 1.1, -0.5])  # a non-zero global mean


def arr(x):
    return jnp.asarray(x, dtype=float)


@functools.cache
def renormalised_start():
    """Renormalised features X (Σ_W(X) = I) with a non-zero global mean and distinct ω_j."""
    H, labels = init_features(jax.random.PRNGKey(4), C, N, P, mean_scale=2.0)
    X = cp.renormalised_features(H, cp.class_stats(H, labels, C)) + arr(SHIFT)
    return X, labels


@functools.cache
def raw_features():
    """Features that are not renormalised: Σ_W ≠ I, μ_G ≠ 0."""
    H, labels = init_features(jax.random.PRNGKey(7), C, N, P, mean_scale=2.0)
    return H + arr(SHIFT), labels


@functools.cache
def ufm_start():
    """A UFM state with a non-zero bias and shifted features."""
    state, labels = init_ufm(jax.random.PRNGKey(3), C, N, P, mean_scale=2.0)
    return UFMState(state.W, arr(0.1 * np.arange(1, C + 1)), state.H + arr(SHIFT)), labels
