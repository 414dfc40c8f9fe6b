"""Streamed analysis: every input form (stored and deflated `.npz`, a folder of `.npy` members,
a folder of per-checkpoint files, a statistics file) gives today's in-memory analysis to
1e-12, and a statistics file gives the features file's analysis to 1e-12 (all keys: NC4 from
its stored count)."""

import json
import shutil
import zipfile

import numpy as np
import pytest

from centralpath._errors import InputError
from centralpath.cli import main
from centralpath.measurement._io import load_features, save_features
from centralpath.measurement._stream import StatsFile, StreamedFeatures, open_source, save_stats
from centralpath.measurement.analysis import RECORD_KEYS, analyze

C, N, P, K = 4, 30, 6, 3
EPOCHS = np.array([0.0, 2.0, 8.0])


def _arrays(seed=0, K=K):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), N)
    y[:5] = 1  # imbalanced
    rng.shuffle(y)
    H = rng.normal(size=(K, y.size, P))
    for k in range(K):
        H[k] += 3.0 * (k + 1) * np.eye(C, P)[y]
    return dict(
        features=H.astype(np.float32),
        labels=y,
        W=rng.normal(size=(K, C, P)),
        b=rng.normal(size=(K, C)),
        epochs=EPOCHS[:K],
        weight_decay=np.float64(1e-3),
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    a = _arrays()
    out = {"stored": d / "stored.npz", "deflated": d / "deflated.npz"}
    save_features(out["stored"], **a)
    np.savez_compressed(out["deflated"], **a)
    # An unzipped features file: one .npy per member.
    out["npy"] = d / "npy"
    out["npy"].mkdir()
    for key, value in a.items():
        np.save(out["npy"] / f"{key}.npy", value)
    # Per-checkpoint files, named so that a plain sort would misorder them.
    out["per_checkpoint"] = d / "ckpts"
    out["per_checkpoint"].mkdir()
    for k, name in enumerate(["ckpt-2.npz", "ckpt-9.npz", "ckpt-10.npz"]):
        np.savez(
            out["per_checkpoint"] / name,
            features=a["features"][k],
            labels=a["labels"],
            W=a["W"][k],
            b=a["b"][k],
            epochs=a["epochs"][k : k + 1],
            weight_decay=a["weight_decay"],
        )
    out["fortran"] = d / "fortran.npz"
    np.savez(out["fortran"], **{**a, "features": np.asfortranarray(a["features"])})
    return out


def worst_difference(a: list[dict], b: list[dict]) -> float:
    """Largest relative difference over every key of two lists of records (booleans and None
    must agree exactly)."""
    worst = 0.0
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert set(ra) == set(rb)
        for key in ra:
            x, y = ra[key], rb[key]
            if x is None or isinstance(x, bool):
                assert x == y, (key, x, y)
                continue
            x, y = np.asarray(x, float), np.asarray(y, float)
            scale = np.maximum(np.abs(x), 1e-300)
            worst = max(worst, float(np.max(np.abs(x - y) / scale)))
    return worst


@pytest.mark.parametrize("form", ["stored", "deflated", "npy", "per_checkpoint", "fortran"])
def test_every_form_equals_the_in_memory_analysis(files, form):
    reference = analyze(load_features(files["stored"]))
    src = open_source(files[form])
    assert isinstance(src, StreamedFeatures) and src.num_checkpoints == K
    np.testing.assert_array_equal(src.epochs, EPOCHS)
    records = analyze(src, rows=7)  # chunks of 7 samples: many chunks, some missing classes
    assert set(RECORD_KEYS) <= set(records[0])
    assert worst_difference(reference, records) <= 1e-12


def test_statistics_file_equals_features_file(files, tmp_path, capsys):
    stats_path = tmp_path / "stats.npz"
    a_json, s_json = tmp_path / "a.json", tmp_path / "s.json"
    assert (
        main(
            [
                "analyze",
                str(files["stored"]),
                "--json",
                str(a_json),
                "--save-stats",
                str(stats_path),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["analyze", str(stats_path), "--json", str(s_json), "--quiet"]) == 0
    from_features = json.loads(a_json.read_text())["checkpoints"]
    from_stats = json.loads(s_json.read_text())["checkpoints"]
    assert from_features[0]["nc4"] is not None
    assert worst_difference(from_features, from_stats) <= 1e-12
    src = open_source(stats_path)
    assert isinstance(src, StatsFile) and src.num_checkpoints == K and src.weight_decay == 1e-3
    # No features inside: K·(p² + C·p + C) numbers.
    with np.load(stats_path) as f:
        assert "features" not in f.files and f["sigma_w"].shape == (K, P, P)
    # compare takes it in place of the features file.
    c1, c2 = tmp_path / "c1.json", tmp_path / "c2.json"
    assert main(["compare", str(files["stored"]), "--fit", "--json", str(c1), "--quiet"]) == 0
    assert main(["compare", str(stats_path), "--fit", "--json", str(c2), "--quiet"]) == 0
    capsys.readouterr()
    s1, s2 = json.loads(c1.read_text()), json.loads(c2.read_text())
    np.testing.assert_allclose(s1["a"], s2["a"], rtol=1e-12)
    assert worst_difference(s1["checkpoints"], s2["checkpoints"]) <= 1e-12


def test_statistics_folder_and_library_writer(files, tmp_path):
    src = open_source(files["stored"])
    checkpoints = list(src.checkpoints())
    folder = tmp_path / "stats"
    for ck in checkpoints:  # one statistics file per checkpoint, as a recorder writes
        save_stats(folder / f"epoch-{int(ck.epoch)}.npz", [ck], weight_decay=1e-3)
    whole = analyze(open_source(files["stored"]))
    assert worst_difference(whole, analyze(open_source(folder))) <= 1e-12


def test_without_classifier(tmp_path):
    a = _arrays()
    path = tmp_path / "f.npz"
    np.savez(path, features=a["features"], labels=a["labels"])
    stats = tmp_path / "s.npz"
    assert main(["analyze", str(path), "--save-stats", str(stats), "--quiet"]) == 0
    reference = analyze(load_features(path))
    assert reference[0]["nc4"] is None
    assert worst_difference(reference, analyze(open_source(stats))) <= 1e-12


def test_refusals_are_one_line(files, tmp_path, capsys):
    a = _arrays()
    nan = a["features"].copy()
    nan[0, 3, 2] = np.nan
    np.savez(tmp_path / "nan.npz", **dict(a, features=nan))
    f2 = a["features"].copy()  # non-finite in the second checkpoint only
    f2[1, 3, 2] = np.inf
    np.savez(tmp_path / "inf.npz", **dict(a, features=f2))
    cases = [(tmp_path / "inf.npz", "at checkpoint 1")]
    # A folder mixing a features and a statistics file; labels that differ between files.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(files["stored"], mixed / "a.npz")
    save_stats(mixed / "b.npz", list(open_source(files["stored"]).checkpoints())[:1])
    cases.append((mixed, "mixes features and statistics files"))
    relabelled = tmp_path / "relabelled"
    shutil.copytree(files["per_checkpoint"], relabelled)
    with np.load(relabelled / "ckpt-9.npz") as f:
        arrays = dict(f)
    arrays["labels"] = np.roll(arrays["labels"], 1)
    np.savez(relabelled / "ckpt-9.npz", **arrays)
    cases.append((relabelled, "other labels"))
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((empty, "without .npz files"))
    # Statistics files: not symmetric, missing members.
    stats = tmp_path / "stats.npz"
    save_stats(stats, list(open_source(files["stored"]).checkpoints()))
    with np.load(stats) as f:
        s = dict(f)
    asym = s["sigma_w"].copy()
    asym[0, 0, 1] += 1.0
    np.savez(tmp_path / "asym.npz", **dict(s, sigma_w=asym))
    cases.append((tmp_path / "asym.npz", "is not symmetric"))
    np.savez(tmp_path / "nomeans.npz", **{k: v for k, v in s.items() if k != "class_means"})
    cases.append((tmp_path / "nomeans.npz", "lacks 'class_means'"))
    cases.append(
        (
            tmp_path / "nan.npz",
            "'features' holds 1 non-finite value(s) (NaN or Inf) at checkpoint 0",
        )
    )
    for path, phrase in cases:
        code = main(["analyze", str(path), "--quiet"])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and phrase in lines[0], (path, err)


def test_deflated_bomb_refused_by_its_ratio(tmp_path):
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, features=np.zeros((2000, 500)), labels=np.arange(2000) % 3)
    with pytest.raises(InputError, match="a zip bomb, not features"):
        open_source(path)


def test_save_stats_refuses_the_input_and_leaves_nothing_on_failure(files, tmp_path, capsys):
    code = main(["analyze", str(files["stored"]), "--save-stats", str(files["stored"]), "--quiet"])
    assert code == 2 and "would destroy the input" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    a = _arrays()
    f = a["features"].copy()
    f[2, 0, 0] = np.nan  # fails at the last checkpoint, after two were written
    np.savez(bad, **dict(a, features=f))
    out = tmp_path / "out" / "s.npz"
    assert main(["analyze", str(bad), "--save-stats", str(out), "--quiet"]) == 2
    capsys.readouterr()
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_stored_member_is_memory_mapped_not_loaded(files):
    src = open_source(files["stored"])
    chunk = src.features.rows(1, 5, 9)
    assert isinstance(chunk, np.memmap) and chunk.shape == (4, P)
    np.testing.assert_array_equal(chunk, _arrays()["features"][1, 5:9])
    with zipfile.ZipFile(files["stored"]) as zf:
        assert zf.getinfo("features.npy").compress_type == zipfile.ZIP_STORED


def _numpy_reference(H, y, W, b, C):
    """The metrics of one checkpoint by straightforward float64 NumPy on the whole batch,
    written from their definitions (docs/theory.md §1, §5, §7), independent of the package."""
    H = np.asarray(H, np.float64)
    n, p = H.shape
    counts = np.array([np.sum(y == c) for c in range(C)], float)
    M = np.stack([H[y == c].mean(0) for c in range(C)])  # [C, p]
    D = H - M[y]
    sigma_w = D.T @ D / n
    mu = counts @ M / n
    Mbar = (M - mu).T  # [p, C]
    sigma_b = Mbar @ Mbar.T / C
    s, V = np.linalg.eigh(sigma_b)
    keep = s > 1e-10 * s.max()
    nc1 = float(np.sum(np.einsum("pk,pq,qk->k", V[:, keep], sigma_w, V[:, keep]) / s[keep])) / C
    norms = np.linalg.norm(Mbar, axis=0)
    unit = Mbar / norms
    off = ~np.eye(C, dtype=bool)
    w_norms = np.linalg.norm(W, axis=1)
    w_unit = W / w_norms[:, None]
    nc4 = np.mean(np.argmax(H @ W.T + b, 1) != np.argmin(((H[:, None] - M[None]) ** 2).sum(-1), 1))
    L = np.linalg.cholesky(sigma_w)
    omega = np.linalg.svd(np.linalg.solve(L, Mbar), compute_uv=False)[: C - 1]
    return {
        "sigma_w": sigma_w,
        "means": M,
        "nc1": nc1,
        "nc2_equinorm_means": np.std(norms, ddof=1) / np.mean(norms),
        "nc2_equiangular_means": np.mean(np.abs(unit.T @ unit + 1 / (C - 1))[off]),
        "nc2_equinorm_classifier": np.std(w_norms, ddof=1) / np.mean(w_norms),
        "nc2_equiangular_classifier": np.mean(np.abs(w_unit @ w_unit.T + 1 / (C - 1))[off]),
        "nc3": np.sum((W.T / np.linalg.norm(W) - Mbar / np.linalg.norm(Mbar)) ** 2),
        "nc4": nc4,
        "snr": omega,
    }


@pytest.mark.parametrize("threads", [1, 3])  # chunks spread over 3 threads, merged
@pytest.mark.parametrize(
    "C, p, rows",
    [(5, 12, 7), (5, 12, 4096), (70, 80, 300)],  # many chunks; one chunk; the gathered path
    ids=["chunks", "one-chunk", "many-classes"],
)
def test_one_pass_equals_numpy_float64(tmp_path, monkeypatch, C, p, rows, threads):
    """The streamed one-pass statistics (samples grouped by class per chunk, each class
    centred on its shift, one SYRK) and every metric of the record equal a plain full-batch
    float64 NumPy computation to 1e-12, labels in file order shuffled and imbalanced, NC4
    counting real disagreements."""
    from centralpath.measurement._accumulate import BLOCK_CLASSES

    monkeypatch.setenv("CENTRALPATH_BLAS_THREADS", str(threads))
    rng = np.random.default_rng(C)
    n, K = 40 * C + 13, 2
    y = rng.integers(0, C, n)
    y[:C] = np.arange(C)
    y[C : C + 30] = 0  # imbalanced
    rng.shuffle(y)
    centres = rng.normal(size=(C, p))
    H = np.stack([rng.normal(size=(n, p)) + (1.5 + k) * centres[y] + 4.0 for k in range(K)])
    W = np.stack([centres + 0.8 * rng.normal(size=(C, p)) for _ in range(K)])
    b = rng.normal(size=(K, C))
    path = tmp_path / "f.npz"
    save_features(path, features=H.astype(np.float32), labels=y, W=W, b=b, weight_decay=0.0)
    H = H.astype(np.float32)  # what the file holds
    src = open_source(path)
    blocks = src.class_blocks(rows)
    assert (max(len(bl.present) for bl in blocks) > BLOCK_CLASSES) == (C > BLOCK_CLASSES)
    records = analyze(src, rows=rows)
    for k in range(K):
        ref = _numpy_reference(H[k], y, W[k], b[k], C)
        assert 0 < ref["nc4"] < 0.9  # the NC4 count decides something
        acc = open_source(path).checkpoint(k, rows=rows).acc
        scale = np.max(np.abs(ref["sigma_w"]))
        assert np.max(np.abs(acc.sigma_w() - ref["sigma_w"])) <= 1e-12 * scale
        assert np.max(np.abs(acc.means - ref["means"])) <= 1e-12 * np.max(np.abs(ref["means"]))
        for key, expected in ref.items():
            if key in ("sigma_w", "means"):
                continue
            got = np.asarray(records[k][key], float)
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0, err_msg=key)


@pytest.mark.parametrize(
    "scale, threads", [(1.0, 1), (1.0, 3), (1e60, 2), (1e-60, 1)]
)  # float64's range, not float32's; one set of provisional means or one per thread
def test_nc4_folded_into_the_first_pass_rechecks_what_the_final_means_change(
    tmp_path, monkeypatch, scale, threads
):
    """NC4 is counted in the statistics' pass against provisional means (each class's mean in
    its first chunk); the samples whose nearest mean the final means could change are read
    again. Here the first chunk holds biased samples of class 0, so its provisional mean is
    off and some samples' nearest mean does change: the count still equals the full-batch
    NumPy count, and samples far from any boundary are not read again."""
    monkeypatch.setenv("CENTRALPATH_BLAS_THREADS", str(threads))
    rng = np.random.default_rng(5)
    C, p, rows = 3, 4, 60
    n = 3000
    y = np.concatenate([np.arange(C).repeat(20), rng.integers(0, C, n - 3 * 20)])
    centres = 6.0 * np.eye(C, p)
    H = rng.normal(size=(n, p)) + centres[y]
    H[:rows][y[:rows] == 0] += 0.2 * (centres[1] - centres[0])  # biased first chunk
    W = centres + 0.5 * rng.normal(size=(C, p))
    b = 0.1 * rng.normal(size=C)
    path = tmp_path / "f.npz"
    X, W = H * scale, W / scale  # NC4 is invariant under this
    save_features(path, features=X, labels=y, W=W, b=b)
    final = np.stack([X[y == c].mean(0) for c in range(C)])
    first = np.stack([X[:rows][y[:rows] == c].mean(0) for c in range(C)])
    nearest = lambda M: np.argmin(((X[:, None] - M[None]) ** 2).sum(-1), 1)  # noqa: E731
    changed = np.count_nonzero(nearest(first) != nearest(final))
    assert changed > 0  # the provisional decisions are wrong for some samples
    expected = np.count_nonzero(np.argmax(X @ W.T + b, 1) != nearest(final)) / n
    src = open_source(path)
    ck = src.checkpoint(0, rows=rows)
    assert float(ck.acc.nc4()) == expected
    # One thread scores with the first chunk's means (those `changed` was computed with).
    assert (changed if threads == 1 else 1) <= src.nc4_rechecked < n // 2


def test_streamed_checkpoint_solves_the_snr_and_least_squares_once():
    """The metrics and the SNR's resolution test (`snr_needs_samples`) of a streamed checkpoint
    are one compiled program whose LAPACK calls are those of the metrics alone: the SNR's
    factorisations and the least-squares factorisation run once, not once per use."""
    import re
    from collections import Counter

    import jax
    import jax.numpy as jnp

    from centralpath._metrics import snr_needs_samples
    from centralpath._stats import ClassStats
    from centralpath.measurement.analysis import _checkpoint_and_resolution, _checkpoint_from_stats

    rng = np.random.default_rng(0)
    p, C = 24, 4
    A = rng.normal(size=(p, p))
    stats = ClassStats(
        jnp.full(C, 10.0), jnp.asarray(rng.normal(size=(p, C))), jnp.asarray(A @ A.T / p)
    )
    W, b = jnp.asarray(rng.normal(size=(C, p))), jnp.zeros(C)

    def lapack_calls(f, *args):
        text = jax.jit(f).lower(*args).compile().as_text()
        return Counter(re.findall(r'custom_call_target="([^"]*lapack[^"]*)"', text))

    both = lapack_calls(
        lambda s, W, b: _checkpoint_and_resolution(s, W, b, 1e-3, 1e-10), stats, W, b
    )
    metrics = lapack_calls(
        lambda s, W, b: _checkpoint_from_stats(s, W, b, 1e-3, 1e-10), stats, W, b
    )
    # The test alone factorises too (lowered, not compiled: cheaper, and enough to see it).
    test = jax.jit(lambda s: snr_needs_samples(s, rtol=1e-10)).lower(stats).as_text()
    assert "lapack" in test and metrics and both == metrics
