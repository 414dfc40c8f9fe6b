"""NC1 without a p×p eigendecomposition, and the SNR's collapse frame with one (docs/theory.md
§5, §7): against NumPy float64 computations written here — NC1 = Tr(Σ_W Σ_B^†)/C with Σ_B^†
from the eigendecomposition of the p×p Σ_B, ω_j² the eigenvalues of (Tᵀ M̄)ᵀ (Tᵀ Σ_W T)⁻¹ (Tᵀ M̄)
for the eigen-whitening T of Σ_T on its live directions — on the committed digits network, on
synthetic C = 5 and C = 100 features, with dead units and with a rank-deficient Σ_W."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath._linalg import live_frame_whitening, live_whitening
from centralpath._metrics import _snr_in_frame
from centralpath.measurement.analysis import measure

RTOL = 1e-10
DIGITS = Path(__file__).parent / "data" / "digits_mlp_final.npz"


def numpy_statistics(H, y, C):
    """(M̄ p×C, Σ_W, Σ_T) in float64 NumPy: sample-weighted μ_G, as docs/theory.md §1 pins."""
    H = np.asarray(H, np.float64)
    M = np.stack([H[y == c].mean(axis=0) for c in range(C)], axis=1)
    mu = H.mean(axis=0)
    E = H - M.T[y]
    D = H - mu
    return M - mu[:, None], E.T @ E / len(y), D.T @ D / len(y)


def numpy_nc1(H, y, C):
    Mbar, sigma_w, _ = numpy_statistics(H, y, C)
    s, V = np.linalg.eigh(Mbar @ Mbar.T / C)
    keep = s > RTOL * s.max()
    pinv = (V[:, keep] / s[keep]) @ V[:, keep].T
    return np.trace(sigma_w @ pinv) / C


def numpy_snr(H, y, C):
    Mbar, sigma_w, sigma_t = numpy_statistics(H, y, C)
    s, V = np.linalg.eigh(sigma_t)
    live = s > RTOL * s.max()
    T = V[:, live] / np.sqrt(s[live])
    B = T.T @ Mbar
    w2 = np.linalg.eigvalsh(B.T @ np.linalg.solve(T.T @ sigma_w @ T, B))
    return np.sqrt(np.sort(w2)[::-1][: C - 1])


def gaussian(C, p, n, seed, spread=2.0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(C), rng.integers(0, C, n - C)])
    A = rng.standard_normal((p, p)) / np.sqrt(p) + np.eye(p)  # correlated within-class noise
    H = spread * rng.standard_normal((C, p))[y] + rng.standard_normal((n, p)) @ A + 5.0
    return H, y


def digits():
    f = np.load(DIGITS)
    return f["features"][-1].astype(np.float64), f["labels"], int(f["num_classes"])


def dead_units(C, p, n, seed):
    """ReLU features with five units that never fire (exact zeros): Σ_T has zero rows."""
    H, y = gaussian(C, p, n, seed)
    H = np.maximum(H - 5.0, 0.0)
    H[:, :5] = 0.0
    return H, y


CASES = {
    "digits": digits,
    "C5": lambda: (*gaussian(5, 64, 600, 0), 5),
    "C100": lambda: (*gaussian(100, 128, 3000, 1, spread=1.0), 100),
    "dead": lambda: (*dead_units(10, 48, 1000, 2), 10),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_nc1_and_snr_match_numpy(case):
    H, y, C = CASES[case]()
    r = measure(H, y, num_classes=C)
    # Measured: NC1 to 2e-15, ω_j to 1e-13 (the NumPy route squares Σ_T's conditioning).
    assert_allclose(r["nc1"], numpy_nc1(H, y, C), rtol=1e-12, atol=0)
    assert_allclose(r["snr"], numpy_snr(H, y, C), rtol=1e-10, atol=0)


def test_nc1_with_rank_deficient_sigma_w():
    """p > n − C: Σ_W (rank ≤ n − C) and Σ_T are singular. NC1 needs only Σ_B's pseudo-inverse;
    the means leave range(Σ_W), so the SNR is infinite and flagged, never a finite number."""
    H, y = gaussian(5, 64, 40, 3)
    H[:, 7] = 0.0  # and a dead unit
    r = measure(H, y, num_classes=5)
    _, sigma_w, _ = numpy_statistics(H, y, 5)
    assert np.linalg.matrix_rank(sigma_w) <= 35
    assert_allclose(r["nc1"], numpy_nc1(H, y, 5), rtol=1e-12, atol=0)
    assert r["snr_beyond_resolution"] and np.all(np.isposinf(r["snr"]))


def test_nc1_with_coinciding_means():
    """rank(M̄) = C − 2: the cut-off drops the null direction, as the p×p pseudo-inverse does."""
    H, y = gaussian(5, 16, 400, 4)
    means = np.stack([H[y == c].mean(0) for c in range(5)])
    H = H - means[y] + means[np.where(y == 4, 3, y)]
    stats = cp.class_stats(H, y, 5)
    assert_allclose(cp.nc1(stats), numpy_nc1(H, y, 5), rtol=1e-12, atol=0)


def _sigma_t(H):
    D = H - H.mean(0)
    return jnp.asarray(D.T @ D / len(H))


def test_whitening_by_cholesky_when_certain():
    H, _ = dead_units(10, 48, 1000, 5)
    sigma_t = _sigma_t(H)
    T, live = (np.asarray(x) for x in live_frame_whitening(sigma_t))
    # The Cholesky branch: T = L⁻ᵀ is upper triangular.
    assert np.array_equal(T, np.triu(T))
    dead = np.arange(48) < 5
    assert np.array_equal(live, ~dead)
    assert np.all(T[dead] == 0) and np.all(T[:, dead] == 0)
    assert_allclose(T.T @ np.asarray(sigma_t) @ T, np.diag(live.astype(float)), atol=1e-12)
    # The eigenvalue rule finds as many live directions.
    assert int(np.sum(live_whitening(sigma_t)[1])) == int(np.sum(live))


@pytest.mark.parametrize("kind", ["constant unit", "p > n - 1"])
def test_whitening_falls_back_to_the_eigendecomposition(kind):
    """A unit constant up to rounding (its Σ_T row is not exactly zero) or a singular Σ_T: the
    eigenvalue rule decides, with `live_whitening`'s result."""
    if kind == "constant unit":
        H, _ = gaussian(10, 48, 1000, 6)
        H[:, 3] = 0.37
        assert np.any(_sigma_t(H)[3] != 0)
    else:
        H, _ = gaussian(10, 48, 30, 6)
    sigma_t = _sigma_t(H)
    (T, live), (T_eigh, live_eigh) = live_frame_whitening(sigma_t), live_whitening(sigma_t)
    assert np.array_equal(live, live_eigh) and not np.all(live)
    # The same eigenvectors (to the rounding of a compiled branch against eager operations).
    assert_allclose(T, T_eigh, rtol=0, atol=1e-12 * float(np.max(np.abs(T_eigh))))


@pytest.mark.parametrize("positive_definite", [True, False])
def test_in_frame_factorisation(positive_definite):
    """ω and ‖x_j‖² (the factorisation's error term) from the scaled in-frame Σ_W: by Cholesky
    when it is positive definite, by the clamped eigendecomposition when not — both against the
    eigendecomposition formula in NumPy."""
    rng = np.random.default_rng(7)
    p, C = 12, 4
    A = rng.standard_normal((p, p))
    S = A @ A.T / p + 0.1 * np.eye(p)
    if not positive_definite:
        w, V = np.linalg.eigh(S)
        S = (V * np.r_[-1e-3, w[1:]]) @ V.T
    M = rng.standard_normal((p, C))
    live = jnp.ones(p, bool)
    omega, X, Y = _snr_in_frame(jnp.asarray(M), jnp.asarray(S), live, jnp.float64, 1e-16)
    d = np.sqrt(np.diag(S))
    rho, P = np.linalg.eigh(S / np.outer(d, d))
    inv_sqrt = 1.0 / np.sqrt(np.maximum(rho, np.finfo(float).tiny))
    U, want, _ = np.linalg.svd(inv_sqrt[:, None] * (P.T @ (M / d[:, None])), full_matrices=False)
    X_want = P @ (inv_sqrt[:, None] * U)
    assert_allclose(omega, want, rtol=1e-12 if positive_definite else 1e-6)
    assert_allclose(np.sum(np.asarray(X) ** 2, 0), np.sum(X_want**2, 0), rtol=1e-10)
    assert_allclose(np.asarray(Y), np.asarray(X) / d[:, None], rtol=1e-15)


@pytest.mark.parametrize("case", sorted(CASES))
def test_collapse_frame_whitens_and_splits_off_the_means(case):
    """The frame F (a complete QR of the whitened means, then a C×C eigendecomposition): on its
    live columns Fᵀ Σ_T F = I; Fᵀ Σ_W F is diagonal on the first C columns, which span the
    whitened means, and the identity off them (Σ_T = Σ_W + Σ_B there); the means have no
    component off them; dead columns are zero. Checked with NumPy's statistics, to rounding."""
    from centralpath._metrics import snr_frame

    H, y, C = CASES[case]()
    Mbar, sigma_w, sigma_t = numpy_statistics(H, y, C)
    stats = cp.class_stats(jnp.asarray(H, jnp.float64), jnp.asarray(y), C)
    frame = snr_frame(stats)
    F, live = np.asarray(frame.F), np.asarray(frame.live)
    n_live = int(live.sum())
    assert np.array_equal(live, np.arange(len(live)) < n_live)
    assert np.all(F[:, ~live] == 0.0)
    L = F[:, live]
    scale = np.abs(L.T @ sigma_t @ L).max()
    assert_allclose(L.T @ sigma_t @ L, np.eye(n_live), atol=1e-10 * scale)
    S = L.T @ sigma_w @ L
    off = S - np.diag(np.diag(S))
    assert np.abs(off[:C, :C]).max() <= 1e-10 and np.abs(off[:C, C:]).max() <= 1e-10
    assert_allclose(S[C:, C:], np.eye(n_live - C), atol=1e-10)
    means = L.T @ Mbar
    assert np.abs(means[C:]).max() <= 1e-10 * np.abs(means).max()
