"""Neural-collapse metrics and SNR singular values (docs/theory.md §5, §7, §7½)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath import InputError

# Most tests share (C, p, n) = (4, 6, 24) so that each jitted helper below compiles once.
C4, P6 = 4, 6


@jax.jit
def stat_metrics(stats):
    """Every statistics-only metric at once (one compilation per (C, p))."""
    return dict(
        nc1=cp.nc1(stats),
        nc1_notebook=cp.nc1(stats, variant="notebook"),
        nc1_pinv=cp.nc1(stats, variant="pinv"),
        nc1_trace_ratio=cp.nc1(stats, variant="trace_ratio"),
        equinorm=cp.nc2_equinorm_means(stats),
        equiangular=cp.nc2_equiangular_means(stats),
        etf_distance=cp.etf_distance(stats),
        snr=cp.snr_singular_values(stats),
    )


@jax.jit
def classifier_metrics(stats, W):
    return dict(
        equinorm=cp.nc2_equinorm_classifier(W),
        equiangular=cp.nc2_equiangular_classifier(W),
        nc3=cp.nc3(stats, W),
    )


@jax.jit
def feature_metrics(features, labels, stats, W, b):
    return dict(
        nc4=cp.nc4(features, stats, W, b),
        cdnv=cp.nc1_cdnv(features, labels, stats.num_classes),
    )


@jax.jit
def central_path_terms(stats):
    """(L_NC1, L_NC2/3) of the least-squares classifier at λ = 0."""
    return cp.least_squares_loss_terms(stats, cp.least_squares_classifier(stats, 0.0), 0.0)


_renormalise = jax.jit(cp.renormalised_features)


def metrics(features, labels, C):
    stats = cp.class_stats(features, labels, C)
    return stats, jax.tree_util.tree_map(np.asarray, stat_metrics(stats))


def gaussian_features(counts, p, seed, spread=3.0, offset=1.0):
    rng = np.random.default_rng(seed)
    C = len(counts)
    labels = np.repeat(np.arange(C), counts)
    rng.shuffle(labels)
    centres = rng.normal(size=(C, p)) * spread + offset * rng.normal(size=p)
    # Correlated within-class noise, cond(Σ_W) ~ 10: identities then hold to ~1e-13.
    noise = rng.normal(size=(len(labels), p)) @ random_well_conditioned(p, rng)
    return centres[labels] + noise, labels


def random_orthogonal(p, rng):
    q, r = np.linalg.qr(rng.normal(size=(p, p)))
    return q * np.sign(np.diag(r))


def random_well_conditioned(p, rng):
    return random_orthogonal(p, rng) @ np.diag(rng.uniform(0.5, 2.0, p)) @ random_orthogonal(p, rng)


# --------------------------------------------------------------------------------------------
# (a) exact simplex ETF with collapsed features


def etf_problem(C=C4, p=P6, N=6, offset_scale=0.1, seed=0):
    Mbar = np.asarray(cp.simplex_etf(C, p, key=jax.random.PRNGKey(seed)))
    offset = offset_scale * np.random.default_rng(seed).normal(size=p)
    features, labels = cp.collapsed_features(jnp.asarray(Mbar + offset[:, None]), N)
    W = 2.5 * Mbar.T  # W ∝ M̄ᵀ
    b = -W @ offset  # W h + b = W (h − μ_G): the logits of a simplex ETF
    return np.asarray(features), np.asarray(labels), W, b, Mbar


def test_simplex_etf_construction():
    C, p = C4, P6
    Mbar = np.asarray(cp.simplex_etf(C, p, key=jax.random.PRNGKey(1)))
    P = np.eye(C) - 1.0 / C
    assert_allclose(Mbar.T @ Mbar, C / (C - 1) * P, rtol=0, atol=1e-14)
    assert_allclose(Mbar.sum(axis=1), 0.0, rtol=0, atol=1e-14)
    assert_allclose(np.asarray(cp.simplex_etf_gram(C)), P, rtol=0, atol=0)


def test_all_metrics_vanish_on_exact_simplex_etf():
    features, labels, W, b, Mbar = etf_problem()
    stats, m = metrics(features, labels, C4)
    assert_allclose(np.asarray(stats.centred_means), Mbar, rtol=0, atol=1e-14)
    assert_allclose(np.asarray(stats.sigma_w), 0.0, rtol=0, atol=1e-28)
    for name in ("nc1", "nc1_notebook", "nc1_pinv", "nc1_trace_ratio", "equinorm", "equiangular"):
        assert_allclose(m[name], 0.0, rtol=0, atol=1e-12, err_msg=name)
    assert_allclose(m["etf_distance"], 0.0, rtol=0, atol=1e-12)
    c = jax.tree_util.tree_map(np.asarray, classifier_metrics(stats, jnp.asarray(W)))
    for name in ("equinorm", "equiangular", "nc3"):
        assert_allclose(c[name], 0.0, rtol=0, atol=1e-12, err_msg=name)
    f = feature_metrics(jnp.asarray(features), jnp.asarray(labels), stats, W, b)
    assert_allclose(f["nc4"], 0.0, rtol=0, atol=0)
    assert_allclose(f["cdnv"], 0.0, rtol=0, atol=1e-12)
    # Collapsed features: Σ_W = 0, infinite signal-to-noise ratio.
    assert m["snr"].shape == (C4 - 1,)
    assert np.all(np.isposinf(m["snr"]))


def test_snr_is_infinite_for_collapsed_features_with_large_global_mean():
    # Same simplex ETF as above, translated by a global mean of norm ~10 (an affine map of the
    # collapsed features: ω must not change).
    features, labels, _, _, _ = etf_problem(offset_scale=10.0)
    _, m = metrics(features, labels, C4)
    assert np.all(np.isposinf(m["snr"])), m["snr"]


# --------------------------------------------------------------------------------------------
# (b) nearly collapsed features


def test_nc1_scales_like_noise_squared():
    N = 6
    Mbar = np.asarray(cp.simplex_etf(C4, P6, key=jax.random.PRNGKey(3)))
    means, labels = (np.asarray(a) for a in cp.collapsed_features(jnp.asarray(Mbar + 0.2), N))
    noise = np.random.default_rng(4).normal(size=means.shape)
    for c in range(C4):  # centre the noise in each class: the class means stay exact
        noise[labels == c] -= noise[labels == c].mean(axis=0)
    values = {}
    for s in (1e-2, 1e-3, 1e-4):
        _, m = metrics(means + s * noise, labels, C4)
        values[s] = m
    for name in ("nc1", "nc1_trace_ratio"):
        assert values[1e-3][name] > 0
        assert_allclose(values[1e-2][name] / values[1e-3][name], 100.0, rtol=1e-6, atol=0)
        assert_allclose(values[1e-3][name] / values[1e-4][name], 100.0, rtol=1e-6, atol=0)
    # ω ∝ 1/s and NC1 = Σ 1/ω²: both go as s².
    assert_allclose(values[1e-3]["snr"] / values[1e-2]["snr"], 10.0, rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------------
# (c) invariances


INVARIANT = ("nc1", "equinorm", "equiangular", "etf_distance", "snr")


@given(
    balanced=st.booleans(),
    scale=st.sampled_from([1e-3, 0.5, 7.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_invariant_under_rotation_scaling_and_relabelling(balanced, scale, seed):
    rng = np.random.default_rng(seed)
    counts = (6,) * C4 if balanced else tuple(rng.permutation([3, 5, 7, 9]))
    features, labels = gaussian_features(counts, P6, seed)
    _, base = metrics(features, labels, C4)
    Q = random_orthogonal(P6, rng)
    _, rotated = metrics(scale * features @ Q.T, labels, C4)
    perm = rng.permutation(C4)
    _, relabelled = metrics(features, perm[labels], C4)
    for name in INVARIANT:
        assert_allclose(rotated[name], base[name], rtol=1e-10, atol=1e-13, err_msg=name)
        assert_allclose(relabelled[name], base[name], rtol=1e-10, atol=1e-13, err_msg=name)


@given(balanced=st.booleans(), seed=st.integers(0, 2**16))
def test_snr_invariant_under_affine_maps(balanced, seed):
    rng = np.random.default_rng(seed)
    counts = (6,) * C4 if balanced else tuple(rng.permutation([3, 5, 7, 9]))
    features, labels = gaussian_features(counts, P6, seed)
    _, base = metrics(features, labels, C4)
    A = random_well_conditioned(P6, rng)
    v = 3.0 * rng.normal(size=P6)
    _, mapped = metrics(features @ A.T + v, labels, C4)
    assert_allclose(mapped["snr"], base["snr"], rtol=1e-10, atol=0)
    # NC1 (paper) is not affine invariant in general: the test above would notice a mix-up.
    assert abs(mapped["nc1"] - base["nc1"]) > 1e-6 * base["nc1"]


# --------------------------------------------------------------------------------------------
# (d) docs/theory.md §5 formulas (balanced, λ = 0, p ≥ C − 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_section5_formulas(seed):
    N = 6
    features, labels = gaussian_features((N,) * C4, P6, seed, spread=1.0 + seed)  # n = 24
    stats, m = metrics(features, labels, C4)
    omega = m["snr"]
    assert omega.shape == (C4 - 1,) and np.all(np.isfinite(omega)) and np.all(omega > 0)
    L_ls, L_nc1, L_nc23 = (np.asarray(x) for x in cp.central_path_loss_terms(omega, C4))
    nc1_ls, nc23_ls = (np.asarray(x) for x in central_path_terms(stats))
    # The closed forms, written out here.
    w2 = omega**2
    assert_allclose(L_ls, 0.5 * np.sum(1 / (C4 + w2)), rtol=1e-14, atol=0)
    assert_allclose(L_nc1, 0.5 * np.sum(w2 / (C4 + w2) ** 2), rtol=1e-14, atol=0)
    assert_allclose(L_nc23, 0.5 * np.sum(C4 / (C4 + w2) ** 2), rtol=1e-14, atol=0)
    # ... against the least-squares classifier of the actual features.
    assert_allclose(nc1_ls + nc23_ls, L_ls, rtol=1e-10, atol=0)
    assert_allclose(nc1_ls, L_nc1, rtol=1e-10, atol=0)
    assert_allclose(nc23_ls, L_nc23, rtol=1e-10, atol=0)
    # Renormalised features have Σ_W = I, M̄ = Ω, and NC1 = Tr(Σ_B^†)/C = Σ 1/ω².
    X = np.asarray(_renormalise(jnp.asarray(features), stats))
    stats_x, m_x = metrics(X, labels, C4)
    assert_allclose(np.asarray(stats_x.sigma_w), np.eye(P6), rtol=0, atol=1e-12)
    assert_allclose(np.asarray(stats_x.global_mean), 0.0, rtol=0, atol=1e-12)
    assert_allclose(m_x["snr"], omega, rtol=1e-10, atol=0)
    assert_allclose(m_x["nc1"], np.sum(1 / w2), rtol=1e-10, atol=0)
    assert_allclose(np.asarray(cp.nc1_from_snr(omega)), np.sum(1 / w2), rtol=1e-14, atol=0)
    # ω² are the generalised eigenvalues of (M̄ M̄ᵀ, Σ_W), from numpy directly.
    M = np.stack([features[labels == c].mean(axis=0) for c in range(C4)], axis=1)
    Mbar = M - features.mean(axis=0)[:, None]
    eps = features - M.T[labels]
    sigma_w = eps.T @ eps / len(labels)
    ev = np.sort(np.linalg.eigvals(np.linalg.solve(sigma_w, Mbar @ Mbar.T)).real)[::-1]
    assert_allclose(ev[: C4 - 1], w2, rtol=1e-10, atol=0)
    assert_allclose(ev[C4 - 1 :], 0.0, rtol=0, atol=1e-10 * ev[0])


def test_snr_matrix_is_whitened_centred_means():
    features, labels = gaussian_features((6,) * C4, P6, seed=5)
    stats, m = metrics(features, labels, C4)
    Omega = np.asarray(jax.jit(cp.snr_matrix)(stats))
    # Ωᵀ Ω = M̄ᵀ Σ_W⁻¹ M̄ whatever square root is used.
    sw, Mbar = np.asarray(stats.sigma_w), np.asarray(stats.centred_means)
    assert_allclose(Omega.T @ Omega, Mbar.T @ np.linalg.solve(sw, Mbar), rtol=1e-10, atol=1e-10)
    assert_allclose(np.linalg.svd(Omega, compute_uv=False)[: C4 - 1], m["snr"], rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------
# (e) a 3-class example in R², computed by hand

# Class 0: (4, 1), (2, 1)    μ₀ = (3, 1)    deviations ±(1, 0)
# Class 1: (1, 4), (1, 2)    μ₁ = (1, 3)    deviations ±(0, 1)
# Class 2: (0, −1), (−2, −1) μ₂ = (−1, −1)  deviations ±(1, 0)
HAND_FEATURES = np.array([[4, 1], [2, 1], [1, 4], [1, 2], [0, -1], [-2, -1]], dtype=float)
HAND_LABELS = np.array([0, 0, 1, 1, 2, 2])


def test_hand_computed_example():
    s, m = metrics(HAND_FEATURES, HAND_LABELS, 3)
    # μ_G = ((3 + 1 − 1)/3, (1 + 3 − 1)/3) = (1, 1); M̄ = [[2, 0, −2], [0, 2, −2]].
    assert_allclose(np.asarray(s.global_mean), [1.0, 1.0], rtol=0, atol=1e-15)
    assert_allclose(np.asarray(s.centred_means), [[2, 0, -2], [0, 2, -2]], rtol=0, atol=1e-15)
    # Σ_W = (1/6)(2·e₁e₁ᵀ + 2·e₂e₂ᵀ + 2·e₁e₁ᵀ) = (1/6)[[4, 0], [0, 2]] = [[2/3, 0], [0, 1/3]].
    assert_allclose(np.asarray(s.sigma_w), [[2 / 3, 0], [0, 1 / 3]], rtol=0, atol=1e-15)
    # M̄M̄ᵀ = [[4 + 0 + 4, 0 + 0 + 4], [4, 0 + 4 + 4]] = [[8, 4], [4, 8]]; Σ_B = M̄M̄ᵀ/3.
    assert_allclose(np.asarray(s.sigma_b), [[8 / 3, 4 / 3], [4 / 3, 8 / 3]], rtol=0, atol=1e-15)
    # Balanced: Σ_T = Σ_W + Σ_B = [[10/3, 4/3], [4/3, 3]].
    assert_allclose(np.asarray(s.sigma_t), [[10 / 3, 4 / 3], [4 / 3, 3]], rtol=0, atol=1e-14)

    # NC1: Σ_B⁻¹ = 3·[[8, 4], [4, 8]]⁻¹ = (3/48)[[8, −4], [−4, 8]] = [[1/2, −1/4], [−1/4, 1/2]];
    # diag(Σ_W Σ_B⁻¹) = (2/3 · 1/2, 1/3 · 1/2) = (1/3, 1/6), trace 1/2; NC1 = (1/2)/3 = 1/6.
    assert_allclose(m["nc1"], 1 / 6, rtol=1e-13, atol=0)
    assert_allclose(m["nc1_notebook"], 1 / 2, rtol=1e-13, atol=0)
    assert_allclose(m["nc1_pinv"], 1 / 6, rtol=1e-13, atol=0)
    # tr Σ_W / tr Σ_B = (2/3 + 1/3)/(8/3 + 8/3) = 1/(16/3) = 3/16.
    assert_allclose(m["nc1_trace_ratio"], 3 / 16, rtol=1e-13, atol=0)

    # NC2 equinorm: ‖μ̄_c‖ = (2, 2, 2√2) = 2 + (0, 0, d), d = 2√2 − 2; mean 2 + d/3;
    # deviations (−d/3, −d/3, 2d/3), Σ² = (6/9) d², ddof=1 variance d²/3, std d/√3;
    # ratio (d/√3)/(2 + d/3) = √3(√2 − 1)/(2 + √2) = √3(3√2 − 4)/2 ≈ 0.2101.
    assert_allclose(m["equinorm"], np.sqrt(3) * (3 * np.sqrt(2) - 4) / 2, rtol=1e-13, atol=0)
    # Equiangularity: cos(μ̄₀, μ̄₁) = 0, cos(μ̄₀, μ̄₂) = cos(μ̄₁, μ̄₂) = −4/(2·2√2) = −1/√2;
    # |cos + 1/2| = 1/2, 1/√2 − 1/2, 1/√2 − 1/2; mean = (1/2 + √2 − 1)/3 = (√2 − 1/2)/3.
    assert_allclose(m["equiangular"], (np.sqrt(2) - 0.5) / 3, rtol=1e-13, atol=0)
    # ETF distance: G = M̄ᵀM̄ = [[4, 0, −4], [0, 4, −4], [−4, −4, 8]], ‖G‖ = √160 = 4√10,
    # ‖P‖ = √2, ⟨G, P⟩ = tr G − 1ᵀG1/3 = 16 − 0; distance² = 2 − 2·16/(4√10·√2) = 2 − 4/√5.
    assert_allclose(m["etf_distance"], np.sqrt(2 - 4 / np.sqrt(5)), rtol=1e-13, atol=0)
    # SNR: Σ_W⁻¹ M̄M̄ᵀ = [[3/2, 0], [0, 3]]·[[8, 4], [4, 8]] = [[12, 6], [12, 24]]:
    # trace 36, det 288 − 72 = 216, eigenvalues 18 ± √(324 − 216) = 18 ± 6√3; ω = √(18 ± 6√3).
    # (Σ 1/ω² = 36/216 = 1/6 = NC1, as §5 says.)
    assert_allclose(
        m["snr"], np.sqrt([18 + 6 * np.sqrt(3), 18 - 6 * np.sqrt(3)]), rtol=1e-13, atol=0
    )

    # Classifier rows w₀ = (1, 0), w₁ = (0, 1), w₂ = (−1, 0); b = (0, 0, 3.5).
    W = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    b = np.array([0.0, 0.0, 3.5])
    c = classifier_metrics(s, jnp.asarray(W))
    # Row norms (1, 1, 1): equinorm 0. cos(w₀, w₁) = 0, cos(w₀, w₂) = −1, cos(w₁, w₂) = 0;
    # |cos + 1/2| = 1/2 each: mean 1/2.
    assert_allclose(c["equinorm"], 0.0, rtol=0, atol=1e-15)
    assert_allclose(c["equiangular"], 0.5, rtol=1e-14, atol=0)
    # NC3: ‖W‖ = √3, ‖M̄‖ = 4, ⟨Wᵀ, M̄⟩ = 1·2 + (−1)(−2) + 1·2 = 6;
    # ‖Wᵀ/√3 − M̄/4‖² = 1 + 1 − 2·6/(4√3) = 2 − √3.
    assert_allclose(c["nc3"], 2 - np.sqrt(3), rtol=1e-13, atol=0)
    # NC4: logits W h + b and nearest means (squared distances to μ₀, μ₁, μ₂):
    #   (4, 1): (4, 1, −0.5) → 0; (1, 13, 29) → 0     (2, 1): (2, 1, 1.5) → 0; (1, 5, 13) → 0
    #   (1, 4): (1, 4, 2.5) → 1; (13, 1, 29) → 1      (1, 2): (1, 2, 2.5) → 2; (5, 1, 13) → 1 ✗
    #   (0, −1): (0, −1, 3.5) → 2; (13, 17, 1) → 2    (−2, −1): (−2, −1, 5.5) → 2; (29, 25, 1) → 2
    # one disagreement out of six.
    f = feature_metrics(jnp.asarray(HAND_FEATURES), jnp.asarray(HAND_LABELS), s, W, b)
    assert_allclose(f["nc4"], 1 / 6, rtol=1e-15, atol=0)
    # CDNV: σ_c² = 1 for every class; ‖μ₀ − μ₁‖² = 8, ‖μ₀ − μ₂‖² = 20, ‖μ₁ − μ₂‖² = 20;
    # (1 + 1)/(2·d²) = 1/8, 1/20, 1/20; mean = (1/8 + 1/20 + 1/20)/3 = 3/40.
    assert_allclose(f["cdnv"], 3 / 40, rtol=1e-14, atol=0)


# --------------------------------------------------------------------------------------------
# (f) NC1 variants


# p = C − 1 (Σ_B invertible) and p > C − 1, at shapes compiled elsewhere in this file.
@pytest.mark.parametrize("counts, p", [((2, 2, 2), 2), ((3, 6, 7, 8), P6)])
def test_nc1_variants(counts, p):
    C = len(counts)
    features, labels = gaussian_features(counts, p, seed=p)
    stats, m = metrics(features, labels, C)
    assert_allclose(m["nc1_notebook"], C * m["nc1"], rtol=1e-14, atol=0)
    sw, sb = np.asarray(stats.sigma_w), np.asarray(stats.sigma_b)
    assert_allclose(m["nc1_trace_ratio"], np.trace(sw) / np.trace(sb), rtol=1e-13, atol=0)
    # Well-conditioned data: the pinned eigen-cutoff and numpy's pinv agree.
    assert_allclose(m["nc1_pinv"], m["nc1"], rtol=1e-10, atol=0)
    nc1 = np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10)) / C
    assert_allclose(m["nc1"], nc1, rtol=1e-10, atol=0)


def test_unknown_nc1_variant_raises():
    stats = cp.class_stats(HAND_FEATURES, HAND_LABELS, 3)
    with pytest.raises(InputError, match="variant"):
        cp.nc1(stats, variant="cdnv")
    assert set(cp.NC1_VARIANTS) == {"paper", "notebook", "pinv", "trace_ratio"}


def test_cdnv_against_numpy_loop():
    features, labels = gaussian_features((3, 6, 7, 8), P6, seed=9)
    stats = cp.class_stats(features, labels, C4)
    means = [features[labels == c].mean(axis=0) for c in range(C4)]
    var = [np.mean(np.sum((features[labels == c] - means[c]) ** 2, axis=1)) for c in range(C4)]
    total, pairs = 0.0, 0
    for c in range(C4):
        for k in range(C4):
            if c != k:
                total += (var[c] + var[k]) / (2 * np.sum((means[c] - means[k]) ** 2))
                pairs += 1
    W, b = np.zeros((C4, P6)), np.zeros(C4)
    f = feature_metrics(jnp.asarray(features), jnp.asarray(labels), stats, W, b)
    assert_allclose(f["cdnv"], total / pairs, rtol=1e-13, atol=0)


def test_nc4_against_numpy():
    features, labels = gaussian_features((3, 6, 7, 8), P6, seed=10, spread=0.7)
    stats = cp.class_stats(features, labels, C4)
    rng = np.random.default_rng(10)
    W, b = rng.normal(size=(C4, P6)), rng.normal(size=C4)
    means = np.stack([features[labels == c].mean(axis=0) for c in range(C4)])
    nearest = np.argmin(((features[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    predicted = np.argmax(features @ W.T + b, axis=1)
    expected = np.mean(nearest != predicted)
    assert 0 < expected < 1
    f = feature_metrics(jnp.asarray(features), jnp.asarray(labels), stats, W, b)
    assert_allclose(f["nc4"], expected, rtol=1e-15, atol=0)


# --------------------------------------------------------------------------------------------
# (g) dead units


@pytest.mark.parametrize("value", [0.0, 0.7, 123.0])
def test_dead_unit_drops_out(value):
    p = P6 - 1  # plus one dead unit: the metrics compile at (C, p) = (4, 6) like the rest
    features, labels = gaussian_features((6, 6, 6, 6), p, seed=11)
    _, base = metrics(features[:, :p] @ np.eye(p, P6), labels, C4)  # reference: zero column
    dead = np.hstack([features[:, :2], np.full((len(labels), 1), value), features[:, 2:]])
    _, m = metrics(dead, labels, C4)
    assert np.all(np.isfinite(m["snr"]))
    assert_allclose(m["snr"], base["snr"], rtol=1e-10, atol=0)
    assert_allclose(m["nc1"], base["nc1"], rtol=1e-10, atol=0)
    # ... and both equal the values without the unit, computed in numpy (ω² as generalised
    # eigenvalues, NC1 = Tr(Σ_W Σ_B^†)/C with Σ_B invertible on p − 1 ≥ C − 1 dimensions).
    M = np.stack([features[labels == c].mean(axis=0) for c in range(C4)], axis=1)
    Mbar = M - features.mean(axis=0)[:, None]
    eps = features - M.T[labels]
    sw = eps.T @ eps / len(labels)
    ev = np.sort(np.linalg.eigvals(np.linalg.solve(sw, Mbar @ Mbar.T)).real)[::-1]
    assert_allclose(m["snr"], np.sqrt(ev[: C4 - 1]), rtol=1e-10, atol=0)
    nc1 = np.trace(sw @ np.linalg.pinv(Mbar @ Mbar.T / C4, rcond=1e-10)) / C4
    assert_allclose(m["nc1"], nc1, rtol=1e-10, atol=0)
