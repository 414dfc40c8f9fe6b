"""Class statistics (docs/theory.md §1) against an independent plain-numpy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath import InputError

RTOL = 1e-12
ATOL = 1e-12


def make_features(counts, p, seed, offset=1.5):
    """Gaussian features with class-dependent means and a non-zero global mean."""
    rng = np.random.default_rng(seed)
    C = len(counts)
    labels = np.repeat(np.arange(C), counts)
    rng.shuffle(labels)
    centres = rng.normal(size=(C, p)) * 2.0 + offset
    features = centres[labels] + rng.normal(size=(len(labels), p))
    return features, labels


def numpy_stats(features, labels, C):
    """Plain loops over samples, no vectorisation shared with the library."""
    n, p = features.shape
    counts = np.zeros(C)
    sums = np.zeros((p, C))
    for h, c in zip(features, labels, strict=True):
        counts[c] += 1
        sums[:, c] += h
    M = sums / counts
    mu_G = features.sum(axis=0) / n
    sigma_w = np.zeros((p, p))
    sigma_t = np.zeros((p, p))
    for h, c in zip(features, labels, strict=True):
        d = h - M[:, c]
        sigma_w += np.outer(d, d)
        e = h - mu_G
        sigma_t += np.outer(e, e)
    sigma_w /= n
    sigma_t /= n
    Mbar = M - mu_G[:, None]
    sigma_b = Mbar @ Mbar.T / C
    return dict(
        counts=counts, M=M, mu_G=mu_G, Mbar=Mbar, sigma_w=sigma_w, sigma_b=sigma_b, sigma_t=sigma_t
    )


@jax.jit
def derived(s):
    """Every property at once: one compilation per shape instead of one per operation."""
    return dict(
        counts=s.counts,
        M=s.class_means,
        mu_G=s.global_mean,
        Mbar=s.centred_means,
        sigma_w=s.sigma_w,
        sigma_b=s.sigma_b,
        sigma_t=s.sigma_t,
        second_moment=s.second_moment,
        priors=s.priors,
        n=s.n,
    )


def assert_stats_match(s, ref):
    d = derived(s)
    assert_allclose(d["counts"], ref["counts"], rtol=0, atol=0)
    for name in ("M", "mu_G", "Mbar", "sigma_w", "sigma_b", "sigma_t"):
        assert_allclose(d[name], ref[name], rtol=RTOL, atol=ATOL, err_msg=name)
    mu = ref["mu_G"]
    assert_allclose(d["second_moment"], ref["sigma_t"] + np.outer(mu, mu), rtol=RTOL, atol=ATOL)
    assert_allclose(d["priors"], ref["counts"] / ref["counts"].sum(), rtol=RTOL, atol=0)
    assert_allclose(d["n"], ref["counts"].sum(), rtol=0, atol=0)


@pytest.mark.parametrize("counts", [(4, 4, 4), (3, 3, 3, 3), (2, 3, 7), (5, 2, 2, 3)])
def test_class_stats_matches_numpy(counts):
    features, labels = make_features(counts, p=4, seed=sum(counts))
    C = len(counts)
    s = cp.class_stats(features, labels, C)
    assert s.num_classes == C and s.dim == 4
    assert_stats_match(s, numpy_stats(features, labels, C))


def test_global_mean_is_sample_weighted():
    # Imbalanced: μ_G is the sample average, not the average of the class means.
    features = np.array([[0.0], [0.0], [0.0], [4.0]])
    labels = np.array([0, 0, 0, 1])
    s = cp.class_stats(features, labels, 2)
    assert_allclose(s.global_mean, [1.0], rtol=0, atol=1e-15)  # (0+0+0+4)/4, not (0+4)/2
    assert_allclose(s.class_means, [[0.0, 4.0]], rtol=0, atol=1e-15)


def test_balanced_total_equals_within_plus_between():
    features, labels = make_features((3, 3, 3, 3), p=4, seed=1)
    d = derived(cp.class_stats(features, labels, 4))
    ref = numpy_stats(features, labels, 4)
    assert_allclose(d["sigma_t"], d["sigma_w"] + d["sigma_b"], rtol=RTOL, atol=ATOL)
    assert_allclose(ref["sigma_t"], d["sigma_w"] + d["sigma_b"], rtol=RTOL, atol=ATOL)
    # Balanced: M̄ 1 = 0 and μ_G is the mean of the class means.
    assert_allclose(d["Mbar"].sum(axis=1), 0.0, rtol=0, atol=1e-12)
    assert_allclose(d["mu_G"], d["M"].mean(axis=1), rtol=RTOL, atol=ATOL)


def test_imbalanced_total_is_not_within_plus_between():
    # Guards against a Σ_T implemented as Σ_W + Σ_B: for imbalanced data they differ.
    features, labels = make_features((2, 6, 4), p=4, seed=2)
    d = derived(cp.class_stats(features, labels, 3))
    gap = np.linalg.norm(d["sigma_t"] - (d["sigma_w"] + d["sigma_b"]))
    assert gap > 1e-3 * np.linalg.norm(d["sigma_t"])


def random_counts(n, C, rng, min_per_class=1):
    """A random split of n samples into C classes (n fixed so that jit caches are reused)."""
    extra = rng.multinomial(n - C * min_per_class, rng.dirichlet(np.ones(C)))
    return tuple(int(k) for k in extra + min_per_class)


# A few (C, p) pairs with n fixed: each new shape costs two compilations (~0.5 s).
@given(
    shape=st.sampled_from([(2, 1), (3, 4), (4, 4)]),
    balanced=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sigma_t_property_equals_direct_computation(shape, balanced, seed):
    (C, p), n = shape, 12
    counts = (n // C,) * C if balanced else random_counts(n, C, np.random.default_rng(seed))
    features, labels = make_features(counts, p, seed)
    s = cp.class_stats(features, labels, C)
    assert_stats_match(s, numpy_stats(features, labels, C))
    if balanced:
        d = derived(s)
        assert_allclose(d["sigma_t"], d["sigma_w"] + d["sigma_b"], rtol=RTOL, atol=ATOL)


def test_from_moments_round_trip():
    features, labels = make_features((4, 4, 4), p=4, seed=3)
    s = cp.class_stats(features, labels, 3)
    t = cp.ClassStats.from_moments(
        np.asarray(s.counts).astype(int), np.asarray(s.class_means), np.asarray(s.sigma_w)
    )
    assert t.counts.dtype == jnp.float64
    ds, dt = derived(s), derived(t)
    for name in ds:
        assert_allclose(dt[name], ds[name], rtol=0, atol=0, err_msg=name)


def test_jit_matches_eager():
    features, labels = make_features((4, 4, 4), p=4, seed=4)
    eager = cp.class_stats(features, labels, 3)
    jitted = jax.jit(lambda h: cp.class_stats(h, labels, 3))(jnp.asarray(features))
    assert_allclose(jitted.sigma_w, eager.sigma_w, rtol=RTOL, atol=ATOL)
    assert_allclose(jitted.class_means, eager.class_means, rtol=RTOL, atol=ATOL)
    assert_allclose(jitted.counts, eager.counts, rtol=0, atol=0)


def test_vmap_over_batch_of_feature_sets():
    labels = np.repeat(np.arange(3), [2, 3, 7])
    batch = np.stack([make_features((2, 3, 7), p=4, seed=k)[0] for k in range(4)])
    batched = jax.vmap(lambda h: cp.class_stats(h, labels, 3))(jnp.asarray(batch))
    assert batched.sigma_w.shape == (4, 4, 4)
    for k in range(4):
        ref = numpy_stats(batch[k], labels, 3)
        assert_allclose(batched.class_means[k], ref["M"], rtol=RTOL, atol=ATOL)
        assert_allclose(batched.sigma_w[k], ref["sigma_w"], rtol=RTOL, atol=ATOL)


def test_within_class_deviations():
    features, labels = make_features((5, 7), p=1, seed=5)
    s = cp.class_stats(features, labels, 2)
    eps = np.asarray(cp.within_class_deviations(features, labels, s))
    ref = numpy_stats(features, labels, 2)
    assert_allclose(eps, features - ref["M"].T[labels], rtol=RTOL, atol=ATOL)
    for c in range(2):
        assert_allclose(eps[labels == c].sum(axis=0), 0.0, rtol=0, atol=1e-12)


_H = np.arange(12.0).reshape(6, 2)
_Y = np.array([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize(
    "features, labels, C, match",
    [
        (_H[:, 0], _Y, 3, "2-D"),
        (_H[None], _Y, 3, "2-D"),
        (_H, _Y[:5], 3, "shape"),
        (_H, _Y[:, None], 3, "shape"),
        (np.where(np.eye(6, 2) > 0, np.nan, _H), _Y, 3, "non-finite"),
        (np.where(np.eye(6, 2) > 0, np.inf, _H), _Y, 3, "non-finite"),
        (_H, np.array([0, 0, 1, 1, 3, 3]), 3, "0..2"),
        (_H, np.array([0, 0, 1, 1, -1, 2]), 3, "0..2"),
        (_H, np.array([0, 0, 1, 1, 1, 1]), 3, "no sample"),
        (_H, np.zeros(6, int), 1, "at least 2 classes"),
        (_H, _Y.astype(float), 3, "integer"),
        (_H, _Y, 3.0, "int"),
    ],
    ids=[
        "features-1d",
        "features-3d",
        "labels-short",
        "labels-2d",
        "nan",
        "inf",
        "label-too-large",
        "label-negative",
        "empty-class",
        "one-class",
        "float-labels",
        "float-num-classes",
    ],
)
def test_bad_inputs_raise_input_error(features, labels, C, match):
    with pytest.raises(InputError, match=match) as info:
        cp.class_stats(features, labels, C)
    assert isinstance(info.value, ValueError)
    assert len(str(info.value)) > 20


def test_input_error_is_value_error():
    assert issubclass(InputError, ValueError)


@pytest.mark.parametrize(
    "counts, M, sigma_w",
    [
        (np.ones(3), np.ones((2, 2)), np.eye(2)),
        (np.ones(3), np.ones((2, 3)), np.eye(3)),
        (np.ones((3, 1)), np.ones((2, 3)), np.eye(2)),
    ],
)
def test_from_moments_bad_shapes(counts, M, sigma_w):
    with pytest.raises(InputError):
        cp.ClassStats.from_moments(counts, M, sigma_w)
