"""The reduced UFM's initial state drawn as class statistics (`ReducedUFMState.draw`): the same
distribution as reducing `init_ufm`'s n × p draw, checked against moments known in closed form
and against the sample-based draw itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import ks_2samp

from centralpath._ufm import init_ufm, wishart_bartlett
from centralpath.flows import ReducedUFMState

DRAWS = 4000


def _draws(C, N, p, m, s, reduce_samples: bool):
    keys = jax.random.split(jax.random.PRNGKey(11), DRAWS)
    if reduce_samples:

        def one(k):
            state, labels = init_ufm(k, C, N, p, mean_scale=m, noise_scale=s)
            return ReducedUFMState.from_state(state, labels, C)
    else:

        def one(k):
            return ReducedUFMState.draw(k, C, N, p, mean_scale=m, noise_scale=s)

    return jax.jit(jax.vmap(one))(keys)


@pytest.mark.parametrize("C,N,p", [(3, 4, 5), (2, 2, 5)], ids=["full-rank", "rank-2"])
def test_drawn_statistics_have_the_moments_of_the_sample_statistics(C, N, p):
    """E tr Σ_W = s²(n − C)/n, Var Σ_W[0,0] = 2(n − C)(s²/(pn))², Var Σ_W[0,1] = (n − C)(s²/(pn))²
    (Wishart W_p(n − C, I) scaled by s²/(pn)), Var μ_c[i] = m²/p + s²/(pN); 4,000 draws, each
    checked to 5 standard errors."""
    m, s = 2.0, 1.5
    n, dof = C * N, C * N - C
    y = _draws(C, N, p, m, s, reduce_samples=False)
    S = np.asarray(y.stats.sigma_w)
    unit = s**2 / (p * n)

    def close(samples, expected, variance_of_samples):
        se = np.sqrt(variance_of_samples / samples.size)
        assert abs(samples.mean() - expected) < 5 * se, (samples.mean(), expected, se)

    tr = np.trace(S, axis1=1, axis2=2)
    close(tr, s**2 * dof / n, 2 * dof * p * unit**2)  # tr of W_p(ν, I) ~ χ²(νp)
    close(S[:, 0, 0], unit * dof, 2 * dof * unit**2)
    close((S[:, 0, 0] - unit * dof) ** 2, 2 * dof * unit**2, (8 * dof**2 + 48 * dof) * unit**4)
    close(S[:, 0, 1] ** 2, dof * unit**2, (3 * dof**2 + 6 * dof) * unit**4 - (dof * unit**2) ** 2)
    mean_var = m**2 / p + s**2 / (p * N)
    M = np.asarray(y.stats.class_means)
    close(M.reshape(DRAWS, -1) ** 2, mean_var, 2 * mean_var**2)
    assert np.all(np.asarray(y.stats.counts) == N)
    rank = np.linalg.matrix_rank(S[:20], tol=1e-10 * unit * dof)
    assert np.all(rank == min(dof, p))


@pytest.mark.parametrize("C,N,p", [(3, 4, 5), (2, 2, 5)], ids=["full-rank", "rank-2"])
def test_drawn_statistics_are_distributed_as_reduced_samples(C, N, p):
    """Two-sample Kolmogorov–Smirnov tests of the drawn statistics against `init_ufm`'s draw
    reduced with `from_state` (fixed seeds: the p-values are deterministic), on the extreme
    eigenvalues of Σ_W, its trace, an off-diagonal entry and a class-mean entry; the classifier
    W is the same array as `init_ufm`'s for the same key."""
    drawn = _draws(C, N, p, 2.0, 1.5, reduce_samples=False)
    sampled = _draws(C, N, p, 2.0, 1.5, reduce_samples=True)
    np.testing.assert_array_equal(drawn.W, sampled.W)
    np.testing.assert_array_equal(drawn.b, 0.0)
    eig = {
        k: np.linalg.eigvalsh(np.asarray(y.stats.sigma_w))
        for k, y in (("d", drawn), ("s", sampled))
    }
    pairs = {
        "largest eigenvalue": (eig["d"][:, -1], eig["s"][:, -1]),
        "smallest nonzero eigenvalue": (
            eig["d"][:, -min(p, C * N - C)],
            eig["s"][:, -min(p, C * N - C)],
        ),
        "trace": (eig["d"].sum(1), eig["s"].sum(1)),
        "Sigma_W[0, 1]": (drawn.stats.sigma_w[:, 0, 1], sampled.stats.sigma_w[:, 0, 1]),
        "mu_0[0]": (drawn.stats.class_means[:, 0, 0], sampled.stats.class_means[:, 0, 0]),
    }
    for name, (a, b) in pairs.items():
        assert ks_2samp(np.asarray(a), np.asarray(b)).pvalue > 1e-3, name


def test_wishart_bartlett_mean_is_dof_times_identity():
    """E[Z Zᵀ] = ν I (exact moments of the Wishart): averaged over 2,000 draws at p = 4, ν = 7,
    within 5 standard errors (Var of a diagonal entry 2ν, of an off-diagonal one ν)."""
    keys = jax.random.split(jax.random.PRNGKey(3), 2000)
    A = np.asarray(jax.vmap(lambda k: wishart_bartlett(k, 7, 4, jnp.float64))(keys))
    mean = A.mean(0)
    se_diag, se_off = np.sqrt(14 / 2000), np.sqrt(7 / 2000)
    assert np.all(np.abs(np.diag(mean) - 7) < 5 * se_diag)
    off = mean[~np.eye(4, dtype=bool)]
    assert np.all(np.abs(off) < 5 * se_off)
    np.testing.assert_allclose(A, np.swapaxes(A, 1, 2), rtol=0, atol=0)


@pytest.mark.parametrize("df", [1.0, 2.0, 3.0, 40.0, 5e4])
def test_chi_square_matches_its_distribution(df):
    """`chi_square` (Marsaglia–Tsang) against the χ²(df) distribution: one-sample KS test on
    20,000 draws (fixed seed) and the exact mean df and variance 2 df to 5 standard errors."""
    from scipy.stats import chi2, kstest

    from centralpath._ufm import chi_square

    x = np.asarray(chi_square(jax.random.PRNGKey(5), jnp.full(20_000, df)))
    assert kstest(x, chi2(df).cdf).pvalue > 1e-3
    assert abs(x.mean() - df) < 5 * np.sqrt(2 * df / x.size)
    assert abs(x.var() - 2 * df) < 5 * np.sqrt((8 * df**2 + 48 * df) / x.size)
