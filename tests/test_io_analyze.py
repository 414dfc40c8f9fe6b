"""The features file and `centralpath analyze`: schema, JSON output, and one-line errors."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath.cli import main
from centralpath.measurement._io import load_features, save_features
from centralpath.measurement.analysis import RECORD_KEYS, analyze


def _run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def features_file(tmp_path):
    rng = np.random.default_rng(0)
    C, N, p, K = 4, 12, 6, 3
    y = np.repeat(np.arange(C), N)
    H = rng.normal(size=(K, C * N, p))
    for k in range(K):
        H[k] += 3.0 * (k + 1) * np.eye(C, p)[y]
    W = rng.normal(size=(K, C, p))
    b = rng.normal(size=(K, C))
    path = tmp_path / "features.npz"
    save_features(
        path,
        features=H.astype(np.float32),
        labels=y,
        W=W,
        b=b,
        epochs=np.array([0, 2, 8]),
        weight_decay=1e-3,
    )
    return path, H.astype(np.float32).astype(np.float64), y, W, b


def test_analyze_json_matches_library(features_file, tmp_path, capsys):
    path, H, y, W, b = features_file
    out = tmp_path / "a.json"
    code, stdout, _ = _run(["analyze", str(path), "--json", str(out)], capsys)
    assert code == 0
    assert "NC1" in stdout
    records = json.loads(out.read_text())["checkpoints"]
    assert [r["epoch"] for r in records] == [0, 2, 8]
    for k, r in enumerate(records):
        assert set(RECORD_KEYS) <= set(r)
        stats = cp.class_stats(jnp.asarray(H[k]), jnp.asarray(y), 4)
        assert_allclose(r["nc1"], cp.nc1(stats), rtol=1e-12)
        assert_allclose(r["snr"], cp.snr_singular_values(stats), rtol=1e-12)
        assert len(r["snr"]) == 3 and r["snr"] == sorted(r["snr"], reverse=True)
        d = cp.loss_decomposition(stats, jnp.asarray(W[k]), jnp.asarray(b[k]), 1e-3)
        assert_allclose(
            [r["loss"], r["loss_nc1"], r["loss_nc23"], r["loss_perp"]],
            [d.loss, d.nc1, d.nc23, d.perp],
            rtol=1e-12,
        )
        # The file's loss equals the direct sample average (the decomposition is exact).
        direct = cp.mse_loss(H[k], y, W[k], b[k], 1e-3)
        assert_allclose(r["loss_nc1"] + r["loss_nc23"] + r["loss_perp"], direct, rtol=1e-12)


def test_analyze_without_classifier_writes_nulls(tmp_path, capsys):
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 5)
    H = rng.normal(size=(15, 4)) + np.eye(3, 4)[y] * 4
    path = tmp_path / "f.npz"
    np.savez(path, features=H, labels=y)
    out = tmp_path / "a.json"
    assert _run(["analyze", str(path), "--json", str(out), "--quiet"], capsys)[0] == 0
    (r,) = json.loads(out.read_text())["checkpoints"]
    for key in (
        "nc2_equinorm_classifier",
        "nc2_equiangular_classifier",
        "nc3",
        "nc4",
        "loss",
        "loss_perp",
        "w_ls_distance",
    ):
        assert r[key] is None
    assert r["loss_nc1"] > 0 and r["loss_nc23"] > 0 and len(r["snr"]) == 2


def test_loader_accepts_float16_32_64(tmp_path):
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 4)
    H = rng.normal(size=(12, 5))
    for dt in (np.float16, np.float32, np.float64):
        path = tmp_path / f"{np.dtype(dt).name}.npz"
        np.savez(path, features=H.astype(dt), labels=y.astype(np.int32))
        ff = load_features(path)
        assert ff.features.dtype == np.float64 and ff.features.shape == (1, 12, 5)
        assert_allclose(ff.features[0], H.astype(dt).astype(np.float64), rtol=0, atol=0)


def _bad_files(tmp_path):
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 4)
    H = rng.normal(size=(12, 5))
    cases = {
        "no labels": dict(features=H),
        "wrong label count": dict(features=H, labels=y[:-1]),
        "nan": dict(features=np.where(np.arange(60).reshape(12, 5) == 7, np.nan, H), labels=y),
        "inf": dict(features=np.where(np.arange(60).reshape(12, 5) == 7, np.inf, H), labels=y),
        "negative label": dict(features=H, labels=y - 1),
        "empty class": dict(features=H, labels=np.where(y == 1, 2, y), num_classes=np.int64(3)),
        "one class": dict(features=H, labels=np.zeros(12, int)),
        "one sample class": dict(features=H, labels=np.r_[0, np.ones(6, int), 2 * np.ones(5, int)]),
        "p below C-1": dict(features=rng.normal(size=(20, 2)), labels=np.repeat(np.arange(5), 4)),
        "W rows mismatch": dict(features=H, labels=y, W=rng.normal(size=(4, 5))),
        "W dim mismatch": dict(features=H, labels=y, W=rng.normal(size=(3, 4))),
        "negative weight decay": dict(features=H, labels=y, weight_decay=-1.0),
        "string features": dict(features=np.array(["a"] * 12), labels=y),
        "features 4-D": dict(features=H[None, None], labels=y),
        "fractional labels": dict(features=H, labels=y + 0.5),
    }
    for name, arrays in cases.items():
        path = tmp_path / (name.replace(" ", "_") + ".npz")
        np.savez(path, **arrays)
        yield name, path
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, features=np.array([{"a": 1}], dtype=object), labels=y)
    yield "pickled", pickled
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, features=H, labels=y)
    truncated.write_bytes(truncated.read_bytes()[:200])
    yield "truncated", truncated
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    yield "text", text
    yield "missing", tmp_path / "does_not_exist.npz"
    yield "directory", tmp_path


def test_bad_files_give_one_line_errors(tmp_path, capsys):
    for name, path in _bad_files(tmp_path):
        code, out, err = _run(["analyze", str(path)], capsys)
        assert code == 2, (name, code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("centralpath analyze: error:"), (name, err)
        assert "Traceback" not in err and "internal error" not in err, (name, err)


def test_bad_flags(features_file, capsys):
    path = features_file[0]
    assert _run(["analyze", str(path), "--weight-decay", "-1"], capsys)[0] == 2
    assert _run(["analyze", str(path), "--rtol", "0"], capsys)[0] == 2
    with pytest.raises(SystemExit) as e:
        main(["analyze"])
    assert e.value.code == 2


def test_installed_entry_point_exit_status(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_text("junk")
    r = subprocess.run(
        [sys.executable, "-m", "centralpath.cli", "analyze", str(bad)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_json_has_no_half_written_file_on_error(tmp_path, capsys):
    out = tmp_path / "a.json"
    code, _, _ = _run(["analyze", str(tmp_path / "missing.npz"), "--json", str(out)], capsys)
    assert code == 2 and not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_analyze_is_the_same_for_a_2d_file(features_file, tmp_path):
    path, H, y, W, b = features_file
    single = tmp_path / "single.npz"
    np.savez(single, features=H[1], labels=y, W=W[1], b=b[1], weight_decay=1e-3)
    (r1,) = analyze(load_features(single))
    r_all = analyze(load_features(path))[1]
    for key in ("nc1", "nc3", "nc4", "loss", "loss_perp", "snr"):
        assert_allclose(r1[key], r_all[key], rtol=1e-12)


def _gaussian_file(tmp_path, H, y, name="f.npz"):
    path = tmp_path / name
    np.savez(path, features=H, labels=y)
    return path


@pytest.mark.parametrize("scale", [1e-155, 1e-80, 1e80, 1e100])
def test_features_at_the_edge_of_float64_are_refused(tmp_path, capsys, scale):
    """Used to print NC1 = 0 at ×1e-155 and ETF distance 1.0 at ×1e100 with exit 0."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 5)
    H = (rng.normal(size=(15, 4)) + 3 * np.eye(3, 4)[y]) * scale
    code, out, err = _run(["analyze", str(_gaussian_file(tmp_path, H, y))], capsys)
    assert code == 2 and "rescale them" in err and len(err.strip().splitlines()) == 1, err
    # The metrics are scale-invariant: rescaled as told, the same file analyses like the original.
    assert out == ""


def test_coinciding_class_means_are_flagged(tmp_path, capsys):
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(4), 6)
    centres = 3 * np.eye(4, 5)
    centres[3] = centres[2]  # classes 2 and 3 share their mean
    H = rng.normal(size=(24, 5))
    H -= np.stack([H[y == c].mean(0) for c in range(4)])[y]  # exact class means = centres
    H += centres[y]
    path = _gaussian_file(tmp_path, H, y)
    code, _, err = _run(["analyze", str(path), "--json", str(tmp_path / "a.json")], capsys)
    assert code == 0 and "two class means coincide" in err, err
    (rec,) = json.loads((tmp_path / "a.json").read_text())["checkpoints"]
    assert rec["coinciding_means"] is True and rec["snr"][-1] == 0.0
    # Distinct means are not flagged.
    H[y == 3] += 1.0
    code, _, err = _run(["analyze", str(_gaussian_file(tmp_path, H, y, "g.npz"))], capsys)
    assert code == 0 and "coincide" not in err


def test_measure_takes_arrays_or_class_stats(features_file):
    """The library measures arrays (or a ClassStats) with no file: the same record as analyze."""
    path, H, y, W, b = features_file
    records = analyze(load_features(path))
    k = 2
    rec = cp.measure(H[k], y, W=W[k], b=b[k], weight_decay=1e-3, epoch=8)
    for key in RECORD_KEYS:
        if records[k][key] is None:
            assert rec[key] is None, key
        else:
            assert_allclose(rec[key], records[k][key], rtol=1e-12, atol=1e-14, err_msg=key)
    from_stats = cp.measure(stats=cp.class_stats(H[k], y, 4), W=W[k], b=b[k], weight_decay=1e-3)
    assert from_stats["nc4"] is None  # per sample: not in the statistics
    assert_allclose(from_stats["snr"], rec["snr"], rtol=1e-12)
    assert_allclose(from_stats["loss_perp"], rec["loss_perp"], rtol=1e-12)
    with pytest.raises(cp.InputError, match="either features and labels"):
        cp.measure(H[k], y, stats=cp.class_stats(H[k], y, 4))
