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


# ------------------------------------------------------------------ simulate's initial draw
# `initial_draw = "statistics"` (`simulate.build`): the reduced central-path and renormalised
# flows reach their initial class statistics without the n × p features.


def _built(flow, draw, C, N, p, *, draws=DRAWS, m=2.0, s=1.5, part=1):
    from centralpath.simulate import SimulationConfig, build

    config = SimulationConfig(
        flow=flow, classes=C, per_class=N, dim=p, mean_scale=m, noise_scale=s, initial_draw=draw
    )
    keys = jax.random.split(jax.random.PRNGKey(23), draws)
    return jax.jit(jax.vmap(lambda k: build(config, key=k)[part]))(keys)


@pytest.mark.parametrize("C,N,p", [(3, 4, 5), (2, 2, 5)], ids=["full-rank", "rank-2"])
def test_central_path_statistics_draw_has_the_law_of_the_feature_draw(C, N, p):
    """The reduced central path's drawn statistics against its reduced n × p draw: exact
    moments E tr Σ_W = s²(n − C)/n and Var Σ_W[0,0] = 2(n − C)(s²/(pn))² (Wishart with n − C
    degrees of freedom, scaled by s²/(pn): n or n − 1 degrees of freedom, or a 1/(n − C)
    scale, move the mean trace by 10 or more standard errors), E μ_c[i]² = m²/p + s²/(pN), and
    two-sample KS tests of the trace, the extreme eigenvalues of Σ_W and a class-mean entry."""
    m, s = 2.0, 1.5
    n, dof = C * N, C * N - C
    unit = s**2 / (p * n)
    drawn = _built("central-path", "statistics", C, N, p, m=m, s=s)
    sampled = _built("central-path", "features", C, N, p, m=m, s=s)
    S = np.asarray(drawn.sigma_w)

    def close(samples, expected, variance_of_samples):
        se = np.sqrt(variance_of_samples / samples.size)
        assert abs(samples.mean() - expected) < 5 * se, (samples.mean(), expected, se)

    close(np.trace(S, axis1=1, axis2=2), s**2 * dof / n, 2 * dof * p * unit**2)
    close((S[:, 0, 0] - unit * dof) ** 2, 2 * dof * unit**2, (8 * dof**2 + 48 * dof) * unit**4)
    mean_var = m**2 / p + s**2 / (p * N)
    close(np.asarray(drawn.class_means).reshape(DRAWS, -1) ** 2, mean_var, 2 * mean_var**2)
    assert np.all(np.asarray(drawn.counts) == N)
    eig = {k: np.linalg.eigvalsh(np.asarray(y.sigma_w)) for k, y in (("d", drawn), ("s", sampled))}
    low = -min(p, dof)
    pairs = {
        "trace": (eig["d"].sum(1), eig["s"].sum(1)),
        "largest eigenvalue": (eig["d"][:, -1], eig["s"][:, -1]),
        "smallest nonzero eigenvalue": (eig["d"][:, low], eig["s"][:, low]),
        "mu_0[0]": (drawn.class_means[:, 0, 0], sampled.class_means[:, 0, 0]),
    }
    for name, (a, b) in pairs.items():
        assert ks_2samp(np.asarray(a), np.asarray(b)).pvalue > 1e-3, name


@pytest.mark.parametrize("flow", ["renormalised", "whitened"])
def test_renormalised_statistics_draw_has_the_law_of_the_feature_draw(flow):
    """The renormalised flows' initial ω_j (the SNR of the drawn statistics, renormalised) from
    the statistics draw against the features draw: KS tests of ω_1 and ω_{C−1}, whose law
    depends on Σ_W's Wishart law through Σ_W^{-1/2}; Σ_W = I and the means centred in both."""
    C, N, p = 3, 4, 5
    drawn = _built(flow, "statistics", C, N, p, part=2)
    sampled = _built(flow, "features", C, N, p, part=2)
    for j in (0, C - 2):
        a, b = np.asarray(drawn[:, j]), np.asarray(sampled[:, j])
        assert ks_2samp(a, b).pvalue > 1e-3, j
    stats = _built(flow, "statistics", C, N, p, draws=8)
    np.testing.assert_array_equal(stats.sigma_w, np.broadcast_to(np.eye(p), (8, p, p)))
    np.testing.assert_allclose(np.asarray(stats.class_means).sum(-1), 0.0, atol=1e-12)


def test_renormalising_the_means_is_renormalising_the_features():
    """The statistics path renormalises the class means, not samples: on one features draw,
    Σ_W^{-1/2}(μ_c − μ_G) equals the class means of the renormalised features to 1e-12."""
    from centralpath import class_stats, init_features, renormalised_features

    H, labels = init_features(jax.random.PRNGKey(4), 3, 6, 5, mean_scale=2.0, noise_scale=1.5)
    stats = class_stats(H, labels, 3)
    X = renormalised_features(H, stats)
    expected = class_stats(X, labels, 3).class_means
    got = renormalised_features(stats.class_means.T, stats).T
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_statistics_draw_shares_the_class_centres_of_the_feature_draw():
    """Both draws split the seed's key as `init_ufm` does: with the sampling noise scaled down
    to 1e-9 the class means of the two are the same true centres, to 1e-8."""
    from centralpath.simulate import SimulationConfig, build

    for flow in ("central-path", "ufm"):
        means = []
        for draw in ("features", "statistics"):
            c = SimulationConfig(flow=flow, noise_scale=1e-9, initial_draw=draw, seed=5)
            y = build(c)[1]
            means.append(np.asarray(y.stats.class_means if flow == "ufm" else y.class_means))
        np.testing.assert_allclose(means[0], means[1], rtol=0, atol=1e-8)
        assert np.abs(means[0]).max() > 0.1


def test_auto_draw_keeps_every_run_below_the_limit_and_draws_statistics_above(monkeypatch):
    """`auto` is the features draw up to C·N·p = 2**27 numbers (bit for bit: the same state as
    `features` and as reducing `init_ufm`'s draw by hand), statistics above it; the reduced UFM
    draws statistics and the full representation features; statistics with the full
    representation is refused in one line."""
    from centralpath._errors import InputError
    from centralpath._stats import _class_stats
    from centralpath.simulate import FEATURE_DRAW_LIMIT, SimulationConfig, build, initial_draw

    monkeypatch.setenv("CENTRALPATH_MEMORY_LIMIT", "1T")  # configurations at the limit: 3 GiB
    config = SimulationConfig(flow="central-path", seed=9)
    auto, features = build(config)[1], build(config.replace(initial_draw="features"))[1]
    state, labels = init_ufm(jax.random.PRNGKey(9), 4, 10, 8, mean_scale=2.0, noise_scale=1.0)
    by_hand = _class_stats(state.H, labels, 4)
    for a, b in ((auto, features), (auto, by_hand)):
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)
    at = SimulationConfig(flow="renormalised", classes=4, per_class=FEATURE_DRAW_LIMIT // 32)
    assert 4 * at.per_class * 8 == FEATURE_DRAW_LIMIT and initial_draw(at) == "features"
    assert initial_draw(at.replace(per_class=at.per_class + 1)) == "statistics"
    assert initial_draw(SimulationConfig(flow="ufm")) == "statistics"
    assert initial_draw(SimulationConfig(flow="ufm", initial_draw="features")) == "features"
    full = SimulationConfig(representation="full", per_class=at.per_class + 1)
    assert initial_draw(full) == "features"
    with pytest.raises(InputError, match="needs --representation reduced"):
        SimulationConfig(representation="full", initial_draw="statistics")
    with pytest.raises(InputError, match="unknown initial-draw 'wishart'"):
        SimulationConfig(initial_draw="wishart")


def test_runs_record_the_draw_they_made(tmp_path, capsys):
    """simulate's metadata.json and config.toml name the draw `auto` resolved to (so the file
    reruns that draw); a sweep's metadata counts its configurations per draw."""
    import json

    from centralpath.cli import main
    from centralpath.sweep import parse_sweep
    from centralpath.sweep._write import _initial_draws

    out = tmp_path / "run"
    argv = ["simulate", "--flow", "central-path", "--methods", "gd", "--t-end", "10"]
    assert main([*argv, "--num-saves", "3", "--quiet", "--no-figures", "--out", str(out)]) == 0
    assert json.loads((out / "metadata.json").read_text())["initial_draw"] == "features"
    assert 'initial_draw = "features"' in (out / "config.toml").read_text()
    capsys.readouterr()
    spec = parse_sweep(
        {"flow": "central-path", "dim": 8, "sweep": {"per_class": [10, 2**22 + 1], "seeds": 3}}
    )
    assert _initial_draws(spec) == {"features": 3, "statistics": 3}


def test_a_run_from_before_the_option_resumes_with_the_features_draw(tmp_path):
    """A partial run whose config.toml predates `initial_draw` drew features at any size: its
    resume keeps that draw, even above the size where `auto` now draws statistics; a file
    that names its draw keeps it."""
    from centralpath.cli.simulate import saved_config
    from centralpath.simulate import SimulationConfig, initial_draw

    big = 2**27 // (4 * 8) + 1  # C·N·p just above the features-draw limit
    path = tmp_path / "config.toml"
    path.write_text(f'flow = "central-path"\nclasses = 4\nper_class = {big}\ndim = 8\n')
    assert (
        initial_draw(SimulationConfig(flow="central-path", classes=4, per_class=big, dim=8))
        == "statistics"
    )
    assert initial_draw(saved_config(path)) == "features"
    path.write_text(path.read_text() + 'initial_draw = "statistics"\n')
    assert initial_draw(saved_config(path)) == "statistics"
