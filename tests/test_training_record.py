"""Held-out samples and the training record in the features file (`loss`, `learning_rate`,
`momentum`, `steps_per_epoch`, `train_accuracy`, `test_accuracy`, `test_loss`); the warning of
`analyze`/`compare` for a network that was not trained with MSE."""

from __future__ import annotations

import json

import numpy as np
import pytest

from centralpath._errors import InputError
from centralpath.cli import main
from centralpath.measurement._io import load_features, save_features, validate_features_arrays

networks = pytest.importorskip("centralpath.networks")
from centralpath.networks import datasets as ds, train as tr  # noqa: E402

# The settings of tests/test_networks.py's tiny runs (shared compiled epoch).
TINY = dict(widths=[32, 16], epochs=4, batch_size=25, per_class=10, num_checkpoints=4)
TINY_FLAGS = ["--per-class", "10", "--widths", "32,16", "--epochs", "4", "--batch-size", "25"]
TINY_FLAGS += ["--num-checkpoints", "4", "--no-figures"]


def _cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- the split


def test_digits_stratified_split_is_fixed_and_disjoint():
    full = ds.load_dataset("digits", balanced=False, standardised=False)
    d = ds.load_dataset("digits", balanced=False, standardised=False, test_fraction=0.2)
    again = ds.load_dataset("digits", balanced=False, standardised=False, test_fraction=0.2)
    counts = full.class_counts()
    # round(0.2·n_c) of every class held out, the rest kept for training.
    np.testing.assert_array_equal(np.bincount(d.test_labels), np.round(0.2 * counts))
    np.testing.assert_array_equal(d.class_counts() + np.bincount(d.test_labels), counts)
    assert d.split == "stratified 0.2" and d.num_test_samples == 359
    # The same samples every time (SPLIT_SEED), whatever the training seed.
    np.testing.assert_array_equal(d.test_inputs, again.test_inputs)
    other_seed = ds.load_dataset("digits", standardised=False, test_fraction=0.2, seed=5)
    np.testing.assert_array_equal(other_seed.test_inputs, d.test_inputs)
    # Disjoint: no test image is a training image of the same row.
    train_rows = {r.tobytes() for r in d.inputs.reshape(len(d.labels), -1)}
    test_rows = [r.tobytes() for r in d.test_inputs.reshape(d.num_test_samples, -1)]
    full_rows = {r.tobytes() for r in full.inputs.reshape(len(full.labels), -1)}
    assert sum(r in train_rows for r in test_rows) <= 5  # digits has a few duplicate images
    assert set(test_rows) <= full_rows


def test_split_balances_and_standardises_with_the_training_set():
    d = ds.load_dataset("digits", test_fraction=0.2)
    assert np.all(d.class_counts() == d.class_counts()[0])  # balanced after the split
    assert abs(float(d.inputs.mean())) < 1e-5 and abs(float(d.inputs.std()) - 1) < 1e-4
    raw = ds.load_dataset("digits", standardised=False, test_fraction=0.2)
    mean, std = raw.inputs.astype(np.float64).mean(), raw.inputs.astype(np.float64).std()
    np.testing.assert_allclose(d.test_inputs, (raw.test_inputs - mean) / std, rtol=1e-5, atol=1e-5)
    none = ds.load_dataset("digits", test_fraction=0)
    assert none.test_inputs is None and none.split == "none" and none.num_samples == 1740


def test_per_class_counts_the_training_set():
    with pytest.raises(InputError, match="after the test split; lower --test-fraction"):
        ds.load_dataset("digits", per_class=170, test_fraction=0.2)
    with pytest.raises(InputError, match=r"test-fraction must be a number in \[0, 1\)"):
        ds.load_dataset("digits", test_fraction=1.0)


def test_user_npz_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    X, Xt = rng.standard_normal((30, 4)), rng.standard_normal((9, 4))
    y, yt = np.repeat(np.arange(3), 10), np.repeat(np.arange(3), 3)
    path = tmp_path / "d.npz"
    np.savez(path, inputs=X, labels=y, test_inputs=Xt, test_labels=yt)
    d = ds.load_dataset(f"npz:{path}", standardised=False, test_fraction=0.2)
    assert d.split == "own" and d.num_samples == 30 and d.num_test_samples == 9
    np.testing.assert_allclose(d.test_inputs, Xt, rtol=1e-6)
    # Without a split asked for, the own test samples join the training set.
    assert ds.load_dataset(f"npz:{path}", test_fraction=0).num_samples == 39
    np.savez(path, inputs=X, labels=y, test_inputs=Xt)
    with pytest.raises(InputError, match="test_inputs without test_labels; save both"):
        ds.load_dataset(f"npz:{path}")
    np.savez(path, inputs=X, labels=y, test_inputs=Xt[:, :3], test_labels=yt)
    with pytest.raises(InputError, match="both splits need the same sample shape"):
        ds.load_dataset(f"npz:{path}")


def test_mnist1d_uses_its_own_split(monkeypatch, tmp_path):
    # The real builder takes ~7 s; its arrays' layout (train first, a `test` mask) is what
    # load_dataset reads, so a stand-in of that layout tests the split (the slow test builds it).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    labels = np.concatenate([np.repeat(np.arange(10), 8), np.repeat(np.arange(10), 2)])
    inputs = np.random.default_rng(0).standard_normal((100, 40)).astype(np.float32)
    test = np.arange(100) >= 80
    monkeypatch.setattr(ds, "_mnist1d", lambda: {"inputs": inputs, "labels": labels, "test": test})
    d = ds.load_dataset("mnist1d", standardised=False, test_fraction=0.2)
    assert d.split == "own" and d.num_samples == 80 and d.num_test_samples == 20
    np.testing.assert_array_equal(d.test_inputs, inputs[80:])
    assert ds.load_dataset("mnist1d", standardised=False).num_samples == 100


# --------------------------------------------------------------------------- the features file


def test_train_reports_test_accuracy_and_writes_the_record(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = _cli(capsys, "train", "--dataset", "digits", *TINY_FLAGS, "--out", str(out))
    assert code == 0, err
    assert "test acc" in err and "test accuracy" in err and "stratified 0.2" in err
    # The ridge term is named: the table's legend says what separates the loss from analyze's L.
    assert "ridge" in err and "analyze's L = data loss + ridge" in err
    f = np.load(out / "features.npz", allow_pickle=False)
    for key in ("loss", "learning_rate", "momentum", "steps_per_epoch", "train_accuracy"):
        assert key in f.files, key
    assert f["loss"].dtype.kind == "U" and str(f["loss"]) == "mse"
    assert f["learning_rate"].shape == (4,) and f["steps_per_epoch"] == 100 // 25
    assert float(f["momentum"]) == 0.9
    assert f["test_accuracy"].shape == (4,) and f["test_loss"].shape == (4,)
    ff = load_features(out / "features.npz")
    assert ff.loss == "mse" and ff.steps_per_epoch == 4 and ff.momentum == 0.9
    # Cosine schedule: the epoch means fall, and every step's rate is at most lr.
    assert np.all(np.diff(ff.learning_rate) < 0) and ff.learning_rate[0] <= 0.2
    np.testing.assert_array_equal(ff.test_accuracy, f["test_accuracy"])
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["dataset"]["num_test_samples"] == 359
    assert meta["final_test_accuracy"] == pytest.approx(f["test_accuracy"][-1])
    res = np.load(out / "results.npz")
    np.testing.assert_allclose(
        res["train/loss"], res["train/train_loss"] + res["train/ridge"], rtol=2e-5
    )


def test_test_fraction_zero_means_no_test_set(capsys, tmp_path):
    out = tmp_path / "run"
    code, _, err = _cli(
        capsys, "train", *TINY_FLAGS, "--test-fraction", "0", "--quiet", "--out", str(out)
    )
    assert code == 0, err
    f = np.load(out / "features.npz")
    assert "test_accuracy" not in f.files and "train_accuracy" in f.files
    code, _, err = _cli(capsys, "train", "--test-fraction", "1.5", "--out", str(tmp_path / "x"))
    assert code == 2 and "test-fraction must be a number in [0, 1)" in err


def _arrays(K=2, **extra):
    rng = np.random.default_rng(0)
    return {
        "features": rng.standard_normal((K, 12, 4)),
        "labels": np.repeat(np.arange(3), 4),
        "W": rng.standard_normal((K, 3, 4)),
        "epochs": np.arange(K),
        **extra,
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        (dict(loss=np.asarray("hinge")), "'loss' names the training loss and must be"),
        (dict(loss=np.array([0.5, 0.4])), "must be a scalar"),
        (dict(loss=np.float64(0.5)), "'loss' names the training loss"),
        (dict(learning_rate=np.array([0.1, -0.1])), "'learning_rate' must be"),
        (dict(epochs=np.array([0, 5]), learning_rate=np.ones(3)), "reach epoch 5"),
        (dict(momentum=np.float64(1.0)), r"'momentum' must lie in \[0, 1\)"),
        (dict(steps_per_epoch=np.float64(3.0)), "'steps_per_epoch' must be an integer >= 1"),
        (dict(steps_per_epoch=np.int64(0)), "'steps_per_epoch' must be an integer >= 1"),
        (dict(train_accuracy=np.array([0.5, 1.5])), r"fractions in \[0, 1\]"),
        (dict(test_accuracy=np.array([0.5])), r"'test_accuracy' must be \[K\] = \[2\]"),
        (dict(test_loss=np.array([0.5, np.nan])), "non-finite"),
        (dict(test_loss=np.array([0.5, -1.0])), "'test_loss' must be >= 0"),
    ],
)
def test_training_record_is_validated(extra, message):
    with pytest.raises(InputError, match=message) as info:
        validate_features_arrays(_arrays(**extra))
    assert "\n" not in str(info.value)


def test_training_record_roundtrip_without_pickle(tmp_path):
    path = tmp_path / "f.npz"
    a = _arrays(
        learning_rate=np.array([0.1]),
        momentum=0.9,
        steps_per_epoch=np.int64(7),
        train_accuracy=np.array([0.3, 1.0]),
        test_accuracy=np.array([0.3, 0.9]),
        test_loss=np.array([0.4, 0.2]),
    )
    save_features(path, loss="ce", **a)
    raw = np.load(path, allow_pickle=False)
    assert raw["loss"].dtype == np.dtype("<U2")
    ff = load_features(path)
    assert ff.loss == "ce" and ff.steps_per_epoch == 7 and ff.momentum == 0.9
    np.testing.assert_array_equal(ff.test_loss, [0.4, 0.2])
    # A file without the record loads as before.
    plain = load_features(_save(tmp_path / "plain.npz", _arrays()))
    assert plain.loss is None and plain.test_accuracy is None


def _save(path, arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.slow
def test_mnist1d_real_split(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    d = ds.load_dataset("mnist1d", test_fraction=0.2)
    assert d.split == "own" and d.num_test_samples == 1000 and d.num_samples == 3940


def test_pytorch_recipe_writes_the_record_for_cross_entropy(tmp_path):
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp
    from test_networks import _recipe_source

    namespace: dict = {}
    exec(_recipe_source()[1], namespace)  # the PyTorch guide's own code
    torch.manual_seed(0)
    C, n = 3, 24
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU(), torch.nn.Linear(6, C))
    x, y = torch.randn(n, 5), np.repeat(np.arange(C), n // C)
    loader = [(x[i : i + 8], torch.as_tensor(y[i : i + 8])) for i in range(0, n, 8)]
    recorder = namespace["NumpyFeatureRecorder"](model[2], loss="ce")
    recorder.capture(model, loader, 0, test_loader=loader)
    recorder.save(
        tmp_path / "ce.npz",
        weight_decay=0.0,
        num_classes=C,
        learning_rate=[],
        momentum=0.0,
        steps_per_epoch=3,
    )
    ff = load_features(tmp_path / "ce.npz")
    with torch.no_grad():
        logits = model(x).numpy()
    expected = float(tr.cross_entropy_loss(jnp.asarray(logits), jnp.asarray(y), C))
    assert ff.loss == "ce"
    np.testing.assert_allclose(ff.test_loss, [expected], rtol=1e-5)
    np.testing.assert_allclose(ff.test_accuracy, ff.train_accuracy)


# --------------------------------------------------------------------------- the MSE warning


@pytest.fixture(scope="module")
def ce_run():
    data = ds.load_dataset("digits", per_class=10, test_fraction=0.2)
    return tr.train_from_config({**tr.DEFAULTS, **TINY, "loss": "ce"}, data=data)


def _one_warning(err: str, command: str) -> list[str]:
    lines = [x for x in err.splitlines() if "not least-squares" in x]
    assert len(lines) <= 1
    if lines:
        assert lines[0].startswith(f"centralpath {command}: warning: ")
    return lines


def test_analyze_and_compare_warn_on_a_cross_entropy_network(ce_run, tmp_path, capsys):
    path = tmp_path / "ce.npz"
    ce_run.save_features(path)
    js = tmp_path / "a.json"
    code, out, err = _cli(capsys, "analyze", str(path), "--json", str(js))
    assert code == 0
    (line,) = _one_warning(err, "analyze")
    assert "trained with cross-entropy (the file's loss = 'ce')" in line
    # The accuracies are columns of the table and keys of every record.
    assert "train acc" in out.splitlines()[0] and "test acc" in out.splitlines()[0]
    rows = json.loads(js.read_text())["checkpoints"]
    assert all(
        {"train_accuracy", "test_accuracy", "test_loss", "perp_rel"} <= r.keys() for r in rows
    )
    assert [r["test_accuracy"] for r in rows] == pytest.approx(list(ce_run.test_accuracy))
    code, _, err = _cli(capsys, "compare", str(path), "--quiet")
    assert code == 0 and len(_one_warning(err, "compare")) == 1


def test_no_warning_for_mse_and_the_fallback_without_the_key(tmp_path, capsys):
    rng = np.random.default_rng(0)
    C, N, p, K = 3, 20, 6, 3
    labels = np.repeat(np.arange(C), N)
    means = 3 * rng.standard_normal((C, p))
    H = np.stack([means[labels] + rng.standard_normal((C * N, p)) for _ in range(K)])
    # The least-squares classifier of each checkpoint (L_perp = 0) ...
    Ht = np.concatenate([H, np.ones((K, C * N, 1))], axis=2)
    Y = np.eye(C)[labels]
    Wt = np.stack([np.linalg.lstsq(h, Y, rcond=None)[0].T for h in Ht])
    near = dict(features=H, labels=labels, W=Wt[:, :, :p], b=Wt[:, :, p], epochs=np.arange(K))
    # ... and one 30 times too large, as cross-entropy's growing logits are (L_perp/L -> 1).
    far = {**near, "W": 30 * near["W"], "b": 30 * near["b"]}
    for name, arrays, warns in (
        ("near.npz", near, False),
        ("far.npz", far, True),
        ("far_mse.npz", {**far, "loss": np.asarray("mse")}, False),  # the file's word counts
        # At initialisation L_perp/L is 0.3-0.7 whatever the loss: a CE run without the key
        # whose first checkpoint is near least squares is still flagged.
        (
            "far_after_init.npz",
            {
                **far,
                "W": np.concatenate([near["W"][:1], far["W"][1:]]),
                "b": np.concatenate([near["b"][:1], far["b"][1:]]),
            },
            True,
        ),
    ):
        np.savez(tmp_path / name, **arrays)
        code, _, err = _cli(capsys, "analyze", str(tmp_path / name), "--quiet")
        assert code == 0
        lines = _one_warning(err, "analyze")
        assert bool(lines) == warns, (name, err)
        if warns:
            assert "L_perp/L >= 0.5 at every checkpoint" in lines[0]
