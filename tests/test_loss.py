"""The MSE loss and its decomposition L = L_NC1 + L_NC2/3 + L_⊥LS (docs/theory.md §2–3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from numpy.testing import assert_allclose

import centralpath as cp

# n is fixed and (C, p) drawn from two pairs at the ends of C ∈ 2..5 and p ∈ 2..8 (p < C − 1
# included), so that the jitted functions below compile once per pair: each pair costs ~4 s of
# tracing and XLA compilation on CPU, which bounds how many the suite can afford.
N_SAMPLES = 60
SHAPES = [(2, 8), (5, 2)]


def random_counts(n, C, rng, min_per_class=2):
    extra = rng.multinomial(n - C * min_per_class, rng.dirichlet(np.ones(C)))
    return tuple(int(k) for k in extra + min_per_class)


def make_problem(C, p, balanced, seed, offset=3.0):
    """Features with a non-zero global mean, and a random classifier."""
    rng = np.random.default_rng(seed)
    counts = (N_SAMPLES // C,) * C if balanced else random_counts(N_SAMPLES, C, rng)
    labels = np.repeat(np.arange(C), counts)
    rng.shuffle(labels)
    centres = rng.normal(size=(C, p)) * 1.5 + offset * rng.normal(size=p)
    features = centres[labels] + rng.normal(size=(N_SAMPLES, p)) * rng.uniform(0.3, 1.5)
    W = rng.normal(size=(C, p))
    b = rng.normal(size=C)
    return features, labels, W, b


@jax.jit
def _decompose(stats, W, b, lam):
    return cp.loss_decomposition(stats, W, b, lam)


@jax.jit
def _decompose_no_bias(stats, W, lam):
    return cp.loss_decomposition(stats, W, None, lam)


@jax.jit
def _least_squares(stats, lam):
    ls = cp.least_squares_classifier(stats, lam)
    ls0 = cp.least_squares_classifier(stats, lam, bias=False)
    return dict(W_ls=ls.W, b_ls=ls.b, W_ls0=ls0.W, singular=ls.singular | ls0.singular)


_mse_loss = jax.jit(cp.mse_loss)
_mse_loss_from_stats = jax.jit(cp.mse_loss_from_stats)


def run(features, labels, W, b, lam, *, least_squares=False):
    """The decompositions (with and without bias) and the direct losses, as numpy."""
    features, labels = jnp.asarray(features), jnp.asarray(labels)
    W, b, lam = jnp.asarray(W), jnp.asarray(b), jnp.asarray(lam, float)
    stats = cp.class_stats(features, labels, W.shape[0])
    out = dict(
        loss=_mse_loss(features, labels, W, b, lam),
        loss_no_bias=_mse_loss(features, labels, W, jnp.zeros_like(b), lam),
        loss_from_stats=_mse_loss_from_stats(stats, W, b, lam),
        d=_decompose(stats, W, b, lam),
        d0=_decompose_no_bias(stats, W, lam),
    )
    if least_squares:
        out.update(_least_squares(stats, lam))
    return jax.tree_util.tree_map(np.asarray, out)


def assert_decomposes(d, loss):
    total = d.nc1 + d.nc23 + d.perp
    assert_allclose(d.loss, loss, rtol=1e-12, atol=0)
    assert_allclose(total, loss, rtol=1e-12, atol=0)
    for term in (d.nc1, d.nc23, d.perp):
        assert term >= 0.0


@given(
    shape=st.sampled_from(SHAPES),
    balanced=st.booleans(),
    lam=st.sampled_from([0.0, 1e-3, 0.25, 2.0]),
    seed=st.integers(0, 2**16),
)
def test_decomposition_sums_to_loss(shape, balanced, lam, seed):
    C, p = shape
    features, labels, W, b = make_problem(C, p, balanced, seed)
    out = run(features, labels, W, b, lam)
    # With bias, and without (b = None in the decomposition, b = 0 in the direct loss).
    assert_decomposes(out["d"], out["loss"])
    assert_decomposes(out["d0"], out["loss_no_bias"])
    assert_allclose(out["loss_from_stats"], out["loss"], rtol=1e-12, atol=0)
    # A random classifier is off the central path: the check below is not vacuous.
    assert out["d"].perp > 1e-3 * out["loss"]


@pytest.mark.parametrize("lam", [0.0, 0.25])
@pytest.mark.parametrize("balanced", [True, False], ids=["balanced", "imbalanced"])
@pytest.mark.parametrize("shape", SHAPES)
def test_on_the_central_path_perp_vanishes(shape, balanced, lam):
    C, p = shape
    features, labels, _, _ = make_problem(C, p, balanced, seed=21)
    first = run(features, labels, np.zeros((C, p)), np.zeros(C), lam, least_squares=True)
    assert not first["singular"]
    out = run(features, labels, first["W_ls"], first["b_ls"], lam)
    d = out["d"]
    assert_allclose(d.perp, 0.0, rtol=0, atol=1e-12 * out["loss"])
    assert_allclose(d.w_ls_distance, 0.0, rtol=0, atol=1e-12)
    assert_allclose(d.nc1 + d.nc23, out["loss"], rtol=1e-12, atol=0)
    # Same for the bias-free classifier and its own least-squares solution.
    out0 = run(features, labels, first["W_ls0"], np.zeros(C), lam)
    assert_allclose(out0["d0"].perp, 0.0, rtol=0, atol=1e-12 * out0["loss_no_bias"])
    assert_allclose(out0["d0"].w_ls_distance, 0.0, rtol=0, atol=1e-12)


def test_perp_and_distance_away_from_the_central_path():
    # L_⊥LS is exactly quadratic in the offset from W̃_LS: scaling the offset by 3 scales it by 9.
    C, p = 5, 2
    features, labels, W, b = make_problem(C, p, True, seed=5)
    ls = run(features, labels, W, b, 0.1, least_squares=True)
    dW, db = W - ls["W_ls"], b - ls["b_ls"]
    one = run(features, labels, ls["W_ls"] + dW, ls["b_ls"] + db, 0.1)["d"]
    three = run(features, labels, ls["W_ls"] + 3 * dW, ls["b_ls"] + 3 * db, 0.1)["d"]
    assert_allclose(three.perp, 9 * one.perp, rtol=1e-11, atol=0)
    assert_allclose(three.w_ls_distance, 3 * one.w_ls_distance, rtol=1e-12, atol=0)
    norm_ls = np.sqrt(np.sum(ls["W_ls"] ** 2) + np.sum(ls["b_ls"] ** 2))
    expected = np.sqrt(np.sum(dW**2) + np.sum(db**2)) / norm_ls
    assert_allclose(one.w_ls_distance, expected, rtol=1e-12, atol=0)
    assert_allclose(one.relative_perp, one.perp / one.loss, rtol=1e-14, atol=0)


@pytest.mark.parametrize("lam", [0.0, 0.25])
@pytest.mark.parametrize("shape", SHAPES)
def test_balanced_nc23_matches_theory_formula(shape, lam):
    # docs/theory.md §3, balanced: L_NC2/3 = (1/(2C)) ‖W_LS M + b_LS 1ᵀ − I_C‖_F².
    C, p = shape
    features, labels, W, b = make_problem(C, p, True, seed=8)
    out = run(features, labels, W, b, lam, least_squares=True)
    M = np.stack([features[labels == c].mean(axis=0) for c in range(C)], axis=1)
    R = out["W_ls"] @ M + out["b_ls"][:, None] - np.eye(C)
    assert_allclose(out["d"].nc23, np.sum(R**2) / (2 * C), rtol=1e-12, atol=0)
    # and L_NC1 = ½[tr(W_LS (Σ_W + λI) W_LSᵀ) + λ‖b_LS‖²] with Σ_W from the features directly.
    eps = features - M.T[labels]
    sigma_w = eps.T @ eps / len(labels)
    W_ls = out["W_ls"]
    nc1 = 0.5 * (
        np.trace(W_ls @ (sigma_w + lam * np.eye(p)) @ W_ls.T) + lam * out["b_ls"] @ out["b_ls"]
    )
    assert_allclose(out["d"].nc1, nc1, rtol=1e-12, atol=0)


def random_well_conditioned(p, rng):
    """Q₁ diag(d) Q₂ with d ∈ [0.5, 2]: condition number ≤ 4."""
    q1, _ = np.linalg.qr(rng.normal(size=(p, p)))
    q2, _ = np.linalg.qr(rng.normal(size=(p, p)))
    return q1 @ np.diag(rng.uniform(0.5, 2.0, size=p)) @ q2


@given(
    shape=st.sampled_from(SHAPES),
    balanced=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_lambda_zero_terms_invariant_under_affine_maps(shape, balanced, seed):
    C, p = shape
    features, labels, W, b = make_problem(C, p, balanced, seed)
    rng = np.random.default_rng(seed + 1)
    A = random_well_conditioned(p, rng)
    v = rng.normal(size=p) * 2.0
    before = run(features, labels, W, b, 0.0)
    after = run(features @ A.T + v, labels, W, b, 0.0)
    # Each term is unchanged by h ↦ A h + v (the classifier undoes it); L_LS = L_NC1 + L_NC2/3
    # is the loss on the central path (test_on_the_central_path_perp_vanishes). Tolerance: the
    # solves see cond(Σ_T)·cond(A)² ≲ 1e3, times float64 rounding.
    assert_allclose(after["d"].nc1, before["d"].nc1, rtol=1e-10, atol=0)
    assert_allclose(after["d"].nc23, before["d"].nc23, rtol=1e-10, atol=0)
    assert_allclose(
        after["d"].nc1 + after["d"].nc23, before["d"].nc1 + before["d"].nc23, rtol=1e-10, atol=0
    )


def test_least_squares_classifier_transforms_covariantly():
    # h ↦ A h + v maps W_LS ↦ W_LS A⁻¹ and b_LS ↦ b_LS − W_LS A⁻¹ v (λ = 0).
    features, labels, W, b = make_problem(2, 8, False, seed=4)
    rng = np.random.default_rng(9)
    A = random_well_conditioned(8, rng)
    v = rng.normal(size=8)
    before = run(features, labels, W, b, 0.0, least_squares=True)
    after = run(features @ A.T + v, labels, W, b, 0.0, least_squares=True)
    assert_allclose(after["W_ls"] @ A, before["W_ls"], rtol=1e-10, atol=1e-12)
    assert_allclose(after["b_ls"] + after["W_ls"] @ v, before["b_ls"], rtol=1e-10, atol=1e-12)


def test_ridge_terms_are_not_affine_invariant():
    # Sanity check of the previous test's power: with λ > 0 the terms do change under scaling.
    features, labels, W, b = make_problem(5, 2, True, seed=3)
    before = run(features, labels, W, b, 0.5)
    after = run(3.0 * features, labels, W, b, 0.5)
    assert abs(after["d"].nc1 - before["d"].nc1) > 1e-3 * before["d"].nc1


def test_mse_loss_by_hand():
    # Two samples in R^1, C = 2: h = 1 (class 0), h = 2 (class 1); W = [[1], [0]], b = [0, 1].
    # Outputs: h=1 → (1, 1) − e₀ = (0, 1) → ‖·‖² = 1; h=2 → (2, 1) − e₁ = (2, 0) → 4.
    # ½ Ave = ½ (1 + 4)/2 = 1.25; ridge (λ/2)(‖W‖² + ‖b‖²) = 0.1·(1 + 1) = 0.2 at λ = 0.2.
    features = jnp.array([[1.0], [2.0]])
    labels = jnp.array([0, 1])
    W, b = jnp.array([[1.0], [0.0]]), jnp.array([0.0, 1.0])
    assert_allclose(cp.mse_loss(features, labels, W, b), 1.25, rtol=1e-15, atol=0)
    assert_allclose(cp.mse_loss(features, labels, W, b, 0.2), 1.45, rtol=1e-15, atol=0)
