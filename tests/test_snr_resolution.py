"""ω_j under anisotropic collapse, dead units and the float64 resolution floor (docs/theory.md,
"Real features"), against a 60-digit reference computed from the same float64 features."""

import jax
import mpmath as mp
import numpy as np
import pytest
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath.flows import CentralPathFlow, ReducedCentralPathFlow, ReducedUFMFlow, UFMFlow
from centralpath.flows.ufm import ReducedUFMState
from centralpath.measurement._io import FeaturesFile
from centralpath.measurement.analysis import analyze

C, N, LIVE, DEAD = 4, 30, 9, 3


def anisotropic_features(ratio, seed, dead=DEAD):
    """Features whose within-class variance along the class means is `ratio` of the total there
    (unit within-class variance elsewhere), in a random rotation, with a far global mean and
    `dead` constant units (one at 0, the others at arbitrary constants), columns shuffled."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((LIVE, LIVE)))
    means = np.zeros((C, LIVE))
    means[:, : C - 1] = rng.standard_normal((C, C - 1))
    labels = np.repeat(np.arange(C), N)
    noise = rng.standard_normal((C * N, LIVE))
    noise[:, : C - 1] *= np.sqrt(ratio)
    live = (means[labels] + noise) @ rotation.T + 3.0 * rng.standard_normal(LIVE)
    constants = rng.standard_normal(dead) * (np.arange(dead) > 0)
    features = np.concatenate([live, np.broadcast_to(constants, (C * N, dead))], axis=1)
    return features[:, rng.permutation(LIVE + dead)], labels


def reference_snr(features, labels):
    """ω_j in 60-digit arithmetic from the float64 features: exact class means and Σ_W over the
    units that vary, then the generalised eigenvalues of (M̄ M̄ᵀ, Σ_W) by a Cholesky solve."""
    with mp.workdps(60):
        n, p = features.shape
        live = [a for a in range(p) if np.ptp(features[:, a]) > 0]
        H = [[mp.mpf(float(features[i, a])) for a in live] for i in range(n)]
        q = len(live)
        means = []
        for c in range(C):
            rows = [H[i] for i in range(n) if labels[i] == c]
            means.append([mp.fsum(r[a] for r in rows) / len(rows) for a in range(q)])
        mu_g = [mp.fsum(H[i][a] for i in range(n)) / n for a in range(q)]
        sigma_w = mp.matrix(q, q)
        for i in range(n):
            e = [H[i][a] - means[labels[i]][a] for a in range(q)]
            for x in range(q):
                for y in range(q):
                    sigma_w[x, y] += e[x] * e[y]
        sigma_w /= n
        mbar = mp.matrix([[means[c][a] - mu_g[a] for c in range(C)] for a in range(q)])
        Z = mp.inverse(mp.cholesky(sigma_w)) * mbar
        ev = sorted(mp.eigsy(Z.T * Z)[0], reverse=True)[: C - 1]
        return np.array([float(mp.sqrt(v)) for v in ev])


_REFERENCES = {}


def case(ratio, seed):
    if (ratio, seed) not in _REFERENCES:
        features, labels = anisotropic_features(ratio, seed)
        _REFERENCES[ratio, seed] = features, labels, reference_snr(features, labels)
    return _REFERENCES[ratio, seed]


def analyze_snr(features, labels):
    """ω_j as `centralpath analyze` computes them (one checkpoint, no classifier)."""
    ff = FeaturesFile(
        features=features[None].astype(np.float64),
        labels=labels,
        W=None,
        b=None,
        epochs=np.zeros(1),
        weight_decay=0.0,
        num_classes=C,
    )
    (record,) = analyze(ff)
    return np.array(record["snr"], dtype=float), record["snr_beyond_resolution"]


#: Below the spec's 1e-10 the error is set by rounding itself (6.3e-7 at 1e-22 as users' programs
#: compile, 1.0e-6 under the suite's quick compile): those ratios are measured in a child
#: compiled with XLA's defaults (tests/_compile.py).
EDGE_RATIOS = (1e-18, 1e-22)

CHILD = """
import json, sys
from centralpath._run.runtime import configure_cpu_runtime
configure_cpu_runtime()
import jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[1])
import test_snr_resolution as t
out = {}
for ratio in t.EDGE_RATIOS:
    for seed in (0, 1):
        omega, beyond = t.analyze_snr(*t.anisotropic_features(ratio, seed))
        out[f"{ratio}/{seed}"] = [omega.tolist(), bool(beyond)]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def edge_snr():
    """{(ratio, seed): (ω, beyond)} for `EDGE_RATIOS`, from `analyze` in a default-compiled child."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from _compile import default_compile_env

    here = Path(__file__).resolve().parent
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(here)],
        env=default_compile_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        (float(k.split("/")[0]), int(k.split("/")[1])): (np.array(v[0]), v[1])
        for k, v in got.items()
    }


@pytest.mark.parametrize("ratio", [1e-4, 1e-10, *EDGE_RATIOS])
@pytest.mark.parametrize("seed", [0, 1])
def test_analyze_matches_60_digit_reference(ratio, seed, request):
    features, labels, ref = case(ratio, seed)
    if ratio in EDGE_RATIOS:
        omega, beyond = request.getfixturevalue("edge_snr")[ratio, seed]
    else:
        omega, beyond = analyze_snr(features, labels)
    # With the samples at hand Σ_W is re-accumulated in the collapse frame: measured errors
    # 3e-13 (1e-10), 3e-8 (1e-18), 6e-7 (1e-22); the issue asks 1e-6 down to 1e-10.
    assert not beyond
    assert_allclose(omega, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_statistics_alone_meet_the_spec_down_to_1e_10(seed):
    """Σ_W as a p×p matrix holds the collapse only to ~eps/ratio (measured 7.5e-7 at 1e-10)."""
    for ratio in (1e-4, 1e-10):
        features, labels, ref = case(ratio, seed)
        stats = cp.class_stats(features, labels, C)
        assert_allclose(cp.snr_singular_values(stats), ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("ratio", [1e-12, 1e-14, 1e-18, 1e-22, 1e-30])
def test_finite_values_are_within_one_percent_or_flagged(ratio):
    features, labels, ref = case(ratio, 0)
    stats = cp.class_stats(features, labels, C)
    for omega in (
        np.asarray(cp.snr_singular_values(stats)),
        np.asarray(cp.snr_singular_values(stats, features=features, labels=labels)),
        analyze_snr(features, labels)[0],
    ):
        finite = np.isfinite(omega)
        assert np.all(np.isposinf(omega[~finite]))
        assert_allclose(omega[finite], ref[finite], rtol=1e-2, atol=0)
    # The statistics alone cannot resolve 1e-14 (eps/ratio ~ 1): they must say so.
    if ratio <= 1e-14:
        assert np.all(np.isinf(cp.snr_singular_values(stats)))


def test_unresolvable_collapse_is_flagged_in_analyze():
    features, labels, _ = case(1e-30, 0)
    omega, beyond = analyze_snr(features, labels)
    assert beyond and np.all(np.isposinf(omega))


@pytest.mark.parametrize(
    "ratio, rtol",
    # At 1e-18 ω_j themselves are resolved to ~3e-8 (measured against the reference): the
    # rounding of a differently sized eigendecomposition moves them by that much (8.7e-9 seen),
    # and invariance below the resolution has no meaning; 1e-6 is the accuracy promised there.
    [(1e-4, 1e-9), (1e-10, 1e-9), (1e-18, 1e-6)],
)
def test_dead_units_do_not_move_omega(ratio, rtol):
    features, labels, _ = case(ratio, 1)
    live = features[:, np.ptp(features, axis=0) > 0]
    with_dead, _ = analyze_snr(features, labels)
    without, _ = analyze_snr(live, labels)
    assert_allclose(with_dead, without, rtol=rtol, atol=0)
    # … nor with large constant units and many zero ones.
    padded = np.concatenate([live, np.full((len(labels), 2), 1e6), np.zeros((len(labels), 5))], 1)
    assert_allclose(analyze_snr(padded, labels)[0], without, rtol=rtol, atol=0)


def test_exactly_collapsed_features_have_infinite_omega():
    features, labels = anisotropic_features(1e-4, 2)
    stats = cp.class_stats(features, labels, C)
    collapsed = np.asarray(stats.class_means).T[labels]
    omega, beyond = analyze_snr(collapsed, labels)
    assert beyond and np.all(np.isposinf(omega))


def test_coinciding_class_means_give_zero_not_inf():
    features, labels = anisotropic_features(1e-2, 3, dead=0)
    means = np.stack([features[labels == c].mean(0) for c in range(C)])
    features = features - means[labels] + means[np.where(labels == 3, 2, labels)]
    omega = np.asarray(cp.snr_singular_values(cp.class_stats(features, labels, C)))
    assert np.all(np.isfinite(omega[:2])) and omega[2] == 0.0


# --------------------------------------------------------------------------------------------
# Along collapsing flows (λ > 0): ω_j never fall while NC1 falls, and NC1 ≥ 0.


def _collapse(kind, reduced, method, lam, seed):
    state, labels = cp.init_ufm(jax.random.PRNGKey(seed), 3, 4, 4)
    if kind == "ufm":
        flow = (
            ReducedUFMFlow(lam_W=lam, lam_H=lam)
            if reduced
            else UFMFlow(labels, 3, lam_W=lam, lam_H=lam)
        )
        y0 = ReducedUFMState.from_state(state, labels, 3) if reduced else state
    else:
        flow = ReducedCentralPathFlow(lam=lam) if reduced else CentralPathFlow(labels, 3, lam=lam)
        y0 = cp.class_stats(state.H, labels, 3) if reduced else state.H
    # Long enough for the collapse to pass the float64 resolution of ω_j (measured: every case
    # below flags some saves), short enough for a fast test.
    t_end = 2e3
    if method == "ode":
        ts = np.concatenate([[0.0], np.geomspace(1.0, t_end, 24)])
        return cp.integrate(flow, y0, t_end, ts=ts).metrics()
    eta = 0.5 * cp.stable_step_size(flow, y0)
    k = int(t_end / eta)
    save = np.unique(np.geomspace(1, k, 24).astype(int))
    return cp.gradient_descent(flow, y0, eta, k, save_steps=np.r_[0, save]).metrics()


@pytest.mark.parametrize(
    "kind, reduced, method, lam, seed",
    [
        ("ufm", True, "ode", 2e-3, 0),
        ("ufm", False, "gd", 5e-3, 1),
        ("central-path", True, "gd", 1e-3, 2),
        ("central-path", False, "ode", 5e-3, 3),
    ],
)
def test_omega_never_falls_while_nc1_falls(kind, reduced, method, lam, seed):
    m = _collapse(kind, reduced, method, lam, seed)
    nc1, omega = m["nc1"], m["snr"]
    assert np.all(nc1 >= 0)
    falling = nc1[1:] < nc1[:-1]
    # +inf compares as larger than any finite value, so a flagged ω never "falls" to +inf, and
    # a finite value after a flagged one would count as a fall.
    fell = omega[1:] < 0.5 * omega[:-1]
    assert not np.any(fell & falling[:, None]), np.c_[nc1, omega]
    # The collapse reaches the resolution floor, and the flag agrees with the values.
    beyond = m["snr_beyond_resolution"] > 0
    assert beyond[-1] and not beyond[0]
    assert np.array_equal(beyond, np.any(np.isinf(omega), axis=1))


@pytest.mark.parametrize("ratio", [1e-10, 1e-22, 1e-30])
def test_streamed_analyze_resolves_as_far_as_in_memory(tmp_path, ratio):
    """`centralpath analyze` reads a file one chunk at a time; where the statistics alone cannot
    resolve ω_j it makes one more pass in the collapse frame, so it matches the reference as
    the in-memory analysis does (measured 7.6e-13 at 1e-10, 1.6e-7 at 1e-22), or flags."""
    import json

    from centralpath.cli import main

    features, labels, ref = case(ratio, 0)
    path = tmp_path / "f.npz"
    np.savez(path, features=features, labels=labels)
    out = tmp_path / "a.json"
    assert main(["analyze", str(path), "--json", str(out), "--quiet"]) == 0
    (rec,) = json.loads(out.read_text())["checkpoints"]
    omega = np.array([np.inf if v is None else v for v in rec["snr"]])
    if ratio >= 1e-22:
        assert not rec["snr_beyond_resolution"]
        assert_allclose(omega, ref, rtol=1e-6, atol=0)
    else:
        assert rec["snr_beyond_resolution"] and np.all(np.isposinf(omega))
