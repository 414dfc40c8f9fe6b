"""The ridge least-squares classifier (docs/theory.md §2) against brute-force numpy solves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath import InputError


def make_features(counts, p, seed, offset=2.0):
    rng = np.random.default_rng(seed)
    C = len(counts)
    labels = np.repeat(np.arange(C), counts)
    rng.shuffle(labels)
    centres = rng.normal(size=(C, p)) * 1.5 + offset
    return centres[labels] + rng.normal(size=(len(labels), p)), labels


def brute_force(features, labels, C, lam, bias):
    """argmin ½ Ave ‖W h + b − y‖² + (λ/2)(‖W‖² + ‖b‖²) as one stacked least-squares problem.

    n·(2L) = ‖H̃ W̃ᵀ − Y‖² + nλ‖W̃‖² = ‖[H̃; √(nλ) I] W̃ᵀ − [Y; 0]‖².
    """
    n, p = features.shape
    Y = np.eye(C)[labels]
    X = np.hstack([features, np.ones((n, 1))]) if bias else features
    d = X.shape[1]
    A = np.vstack([X, np.sqrt(n * lam) * np.eye(d)])
    T = np.vstack([Y, np.zeros((d, C))])
    Wt = np.linalg.lstsq(A, T, rcond=None)[0].T
    return (Wt[:, :p], Wt[:, p]) if bias else (Wt, np.zeros(C))


@jax.jit
def _ls_jit(stats, lam):
    ls = cp.least_squares_classifier(stats, lam, bias=True)
    return ls.W, ls.b, ls.singular


@jax.jit
def _ls_jit_nobias(stats, lam):
    ls = cp.least_squares_classifier(stats, lam, bias=False)
    return ls.W, ls.b, ls.singular


def ls(stats, lam, bias=True):
    return (_ls_jit if bias else _ls_jit_nobias)(stats, jnp.asarray(lam, float))


COUNT_CASES = {"balanced": (5, 5, 5), "imbalanced": (3, 8, 4)}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("lam", [0.0, 1e-3, 0.7])
@pytest.mark.parametrize("counts", list(COUNT_CASES.values()), ids=list(COUNT_CASES))
def test_matches_brute_force_least_squares(counts, lam, bias):
    C, p = len(counts), 4
    features, labels = make_features(counts, p, seed=sum(counts) + int(1e3 * lam))
    W, b, singular = ls(cp.class_stats(features, labels, C), lam, bias)
    W_ref, b_ref = brute_force(features, labels, C, lam, bias)
    assert not singular
    assert_allclose(W, W_ref, rtol=1e-10, atol=1e-12)
    assert_allclose(b, b_ref, rtol=1e-10, atol=1e-12)
    if not bias:
        assert_allclose(b, 0.0, rtol=0, atol=0)


def test_public_call_matches_jitted_call():
    features, labels = make_features((5, 5, 5), 4, seed=0)
    stats = cp.class_stats(features, labels, 3)
    eager = cp.least_squares_classifier(stats, 0.2)
    W, b, _ = ls(stats, 0.2)
    assert isinstance(eager, cp.LeastSquaresClassifier)
    assert_allclose(eager.W, W, rtol=1e-13, atol=1e-14)
    assert_allclose(eager.b, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_theory_augmented_formula_balanced(lam):
    # docs/theory.md §2: W̃_LS = (1/C) M̃ᵀ (Ave h̃ h̃ᵀ + λI)⁻¹ with M̃ = [M; 1ᵀ], balanced classes.
    C, p, N = 3, 4, 5
    features, labels = make_features((N,) * C, p, seed=7)
    n = C * N
    Ht = np.hstack([features, np.ones((n, 1))])
    M = np.stack([features[labels == c].mean(axis=0) for c in range(C)], axis=1)
    Mt = np.vstack([M, np.ones((1, C))])
    S = Ht.T @ Ht / n + lam * np.eye(p + 1)
    Wt = np.linalg.solve(S, Mt).T / C  # (1/C) M̃ᵀ S⁻¹ with S symmetric
    W, b, _ = ls(cp.class_stats(features, labels, C), lam)
    assert_allclose(W, Wt[:, :p], rtol=1e-10, atol=1e-12)
    assert_allclose(b, Wt[:, p], rtol=1e-10, atol=1e-12)


loss_grad = jax.jit(jax.grad(cp.mse_loss, argnums=(2, 3)))
_mse_loss = jax.jit(cp.mse_loss)


@pytest.mark.parametrize("lam", [0.0, 0.3])
@pytest.mark.parametrize("counts", list(COUNT_CASES.values()), ids=list(COUNT_CASES))
def test_loss_gradient_vanishes_at_least_squares(counts, lam):
    C, p = len(counts), 4
    features, labels = make_features(counts, p, seed=11)
    W, b, _ = ls(cp.class_stats(features, labels, C), lam)
    gW, gb = loss_grad(jnp.asarray(features), jnp.asarray(labels), W, b, lam)
    # Scale of one gradient term: ‖h‖·‖W h + b − y‖ ~ 10; 1e-12 of it is rounding.
    assert_allclose(gW, 0.0, rtol=0, atol=1e-12)
    assert_allclose(gb, 0.0, rtol=0, atol=1e-12)
    # ... and not at a perturbed classifier (the check can fail).
    gW2, _ = loss_grad(jnp.asarray(features), jnp.asarray(labels), W + 1e-3, b, lam)
    assert np.max(np.abs(gW2)) > 1e-4


def centred_min_norm(features, labels, C):
    """λ = 0, minimum-norm W of the centred problem: min ‖(H − 1μ_Gᵀ) Wᵀ − (Y − 1πᵀ)‖."""
    Y = np.eye(C)[labels]
    pi = Y.mean(axis=0)
    mu = features.mean(axis=0)
    W = (np.linalg.pinv(features - mu, rcond=1e-10) @ (Y - pi)).T
    return W, pi - W @ mu


@pytest.mark.parametrize(
    "case", ["p>n-1", "dead-column", "duplicated-column", "collapsed-features"]
)
def test_singular_case_returns_minimum_norm_solution(case):
    rng = np.random.default_rng(3)
    # All cases at (C, p) = (3, 4), so the jitted solve compiles once.
    if case == "p>n-1":
        C, features, labels = 3, rng.normal(size=(4, 4)) + 1.0, np.array([0, 1, 2, 1])
    elif case == "dead-column":
        features, labels = make_features((4, 4, 4), 3, seed=5)
        features = np.hstack([features[:, :2], np.full((12, 1), 0.7), features[:, 2:]])
        C = 3
    elif case == "duplicated-column":
        features, labels = make_features((4, 4, 4), 3, seed=6)
        features = np.hstack([features, features[:, :1]])
        C = 3
    else:
        C = 3
        M = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.5, 0.5, 0.5], [2.0, 0.0, 1.0]]) + 0.25
        features, labels = (np.asarray(a) for a in cp.collapsed_features(M, 3))
    W, b, singular = ls(cp.class_stats(features, labels, C), 0.0)
    W_ref, b_ref = centred_min_norm(features, labels, C)
    assert bool(singular)
    assert np.all(np.isfinite(W)) and np.all(np.isfinite(b))
    assert_allclose(W, W_ref, rtol=1e-10, atol=1e-12)
    assert_allclose(b, b_ref, rtol=1e-10, atol=1e-12)
    # It is a minimiser: same loss as the brute-force minimum-norm augmented solve.
    W2, b2 = brute_force(features, labels, C, 0.0, True)
    args = (jnp.asarray(features), jnp.asarray(labels))
    assert_allclose(_mse_loss(*args, W, b), _mse_loss(*args, W2, b2), rtol=1e-10, atol=1e-14)


def test_singular_with_ridge_is_regular_and_matches_brute_force():
    # λ > 0 makes the normal matrix invertible even with a dead unit.
    features, labels = make_features((4, 4, 4), 3, seed=5)
    features = np.hstack([features, np.full((12, 1), 0.7)])
    W, b, singular = ls(cp.class_stats(features, labels, 3), 0.05)
    W_ref, b_ref = brute_force(features, labels, 3, 0.05, True)
    assert not singular
    assert_allclose(W, W_ref, rtol=1e-10, atol=1e-12)
    assert_allclose(b, b_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lam", [-1e-3, -1.0, float("nan"), float("inf")])
def test_bad_lambda_raises(lam):
    features, labels = make_features((3, 3, 3), 4, seed=0)
    stats = cp.class_stats(features, labels, 3)
    with pytest.raises(InputError, match="lambda"):
        cp.least_squares_classifier(stats, lam)
