"""Networks: offline datasets, models, optax training, feature capture, resume, `centralpath train`.

Fast tests train tiny MLPs on a few digits for a few epochs; `slow` ones run the default digits
training (100% training accuracy, NC1 falls ≥ 10× through the terminal phase) and the slow
dataset builders.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import centralpath
from centralpath._errors import InputError, NumericalError
from centralpath.cli import main
from centralpath.measurement._io import load_features, save_features, validate_features_arrays
from centralpath.measurement.analysis import analyze

networks = pytest.importorskip("centralpath.networks")
from centralpath.networks import datasets as ds, train as tr  # noqa: E402
from centralpath.networks.models import CNN, MLP, make_model  # noqa: E402

# Every fast training test uses these settings (model shape, batch size, optimiser) so that
# the compiled epoch is shared between them: compiling dominates their run time.
TINY = dict(widths=[32, 16], epochs=4, batch_size=25, per_class=10, num_checkpoints=4)


def tiny_config(**overrides):
    config = dict(tr.DEFAULTS)
    config.update(TINY)
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def tiny_digits():
    return ds.load_dataset("digits", per_class=10)


@pytest.fixture(scope="module")
def tiny_run(tiny_digits):
    return tr.train_from_config(tiny_config(), data=tiny_digits)


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --------------------------------------------------------------------------- import hygiene


def test_import_centralpath_does_not_load_networks():
    code = (
        "import sys, centralpath, centralpath.cli as c; c.build_parser(); "
        "bad = [m for m in sys.modules if m.startswith(('centralpath.networks', 'optax', 'sklearn', "
        "'mlxtend', 'mnist1d'))]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize(
    "model_cls, shape, kw",
    [
        (MLP, (8, 8), dict(widths=(24, 12))),
        (CNN, (8, 8), dict(channels=(4, 8), width=12)),
        (CNN, (28, 28), dict(channels=(4, 8), width=12)),
        (CNN, (40,), dict(channels=(4,), width=12)),
        (CNN, (3, 8, 8), dict(channels=(4,), width=12)),
    ],
)
def test_model_shapes(model_cls, shape, kw):
    C = 5
    model = model_cls(shape, C, key=jax.random.PRNGKey(0), **kw)
    x = jnp.ones((7, *shape), jnp.float32)
    h, logits = eqx.filter_jit(lambda m, x: (jax.vmap(m.features)(x), jax.vmap(m)(x)))(model, x)
    assert h.shape == (7, 12)
    assert logits.shape == (7, C)
    assert model.classifier.weight.shape == (C, 12) and model.classifier.bias.shape == (C,)
    assert model.classifier.weight.dtype == jnp.float32
    # The classifier is exactly W h + b on the features.
    W, b = model.classifier.weight, model.classifier.bias
    np.testing.assert_allclose(logits, h @ W.T + b, rtol=1e-5, atol=1e-6)
    # Features are a ReLU output: non-negative.
    assert bool(jnp.all(h >= 0))


def test_model_key_is_explicit():
    a = MLP((4,), 3, widths=(5,), key=jax.random.PRNGKey(0))
    b = MLP((4,), 3, widths=(5,), key=jax.random.PRNGKey(0))
    c = MLP((4,), 3, widths=(5,), key=jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a.classifier.weight, b.classifier.weight)
    assert not np.array_equal(a.classifier.weight, c.classifier.weight)


def test_make_model_unknown():
    with pytest.raises(
        InputError, match="unknown model 'resnet'; choose one of mlp, cnn, resnet18"
    ):
        make_model("resnet", (8, 8), 10, key=jax.random.PRNGKey(0))


# --------------------------------------------------------------------------- datasets


def test_digits_default_is_balanced_and_standardised():
    d = ds.load_dataset("digits")
    assert d.name == "digits" and d.num_classes == 10
    assert d.inputs.shape == (1740, 8, 8) and d.inputs.dtype == np.float32
    assert d.labels.dtype == np.int64
    np.testing.assert_array_equal(d.class_counts(), np.full(10, 174))
    np.testing.assert_allclose(d.inputs.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(d.inputs.std(), 1.0, rtol=1e-5)


def test_digits_raw_and_subsets():
    raw = ds.load_dataset("digits", balanced=False, standardised=False)
    assert raw.num_samples == 1797
    assert raw.inputs.min() == 0.0 and raw.inputs.max() == 1.0
    sub = ds.load_dataset("digits", per_class=7, standardised=False)
    np.testing.assert_array_equal(sub.class_counts(), np.full(10, 7))
    # Without a seed the first samples of each class are kept, in file order.
    first = np.concatenate([np.flatnonzero(raw.labels == c)[:7] for c in range(10)])
    np.testing.assert_array_equal(np.sort(first), ds.balanced_subset(raw.labels, 7))
    a = ds.load_dataset("digits", per_class=7, seed=3)
    b = ds.load_dataset("digits", per_class=7, seed=3)
    np.testing.assert_array_equal(a.inputs, b.inputs)


def test_dataset_errors():
    with pytest.raises(
        InputError,
        match=r"unknown dataset 'cifar'; choose one of digits, mnist, mnist1d or npz:PATH",
    ):
        ds.load_dataset("cifar")
    with pytest.raises(
        InputError, match="fewer than per-class = 500; lower --per-class to at most 174"
    ):
        ds.load_dataset("digits", per_class=500)
    with pytest.raises(InputError, match="npz:PATH"):
        ds.load_dataset("npz:")


def test_cache_builds_once_and_survives_corruption(cache_home):
    calls = []

    def build():
        calls.append(1)
        return {
            "inputs": np.arange(12, dtype=np.float32).reshape(4, 3),
            "labels": np.array([0, 1, 0, 1]),
        }

    a = ds.cached_arrays("toy", build)
    b = ds.cached_arrays("toy", build)
    assert len(calls) == 1
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    files = list((cache_home / "centralpath" / "datasets").iterdir())
    assert [f.name for f in files] == ["toy-v1.npz"]  # atomic: no temporary left behind
    files[0].write_bytes(b"not a zip file")
    c = ds.cached_arrays("toy", build)
    assert len(calls) == 2
    np.testing.assert_array_equal(c["labels"], [0, 1, 0, 1])


def test_named_slow_datasets_go_through_the_cache(cache_home, monkeypatch):
    calls = []

    def fake_mnist():
        calls.append(1)
        X = np.tile(np.arange(4, dtype=np.uint8)[:, None, None] * 60, (1, 28, 28))
        return {"inputs": X, "labels": np.array([0, 1, 0, 1])}

    monkeypatch.setattr(ds, "_mnist", fake_mnist)
    d1 = ds.load_dataset("mnist", standardised=False)
    d2 = ds.load_dataset("mnist", standardised=False)
    assert len(calls) == 1
    assert d1.inputs.shape == (4, 28, 28) and d1.inputs.max() == pytest.approx(180 / 255)
    np.testing.assert_array_equal(d1.inputs, d2.inputs)
    assert (cache_home / "centralpath" / "datasets" / "mnist-v1.npz").is_file()


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_dataset_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 5)).astype(np.float64)
    y = np.repeat(np.arange(3), 10)
    d = ds.load_dataset(_write_npz(tmp_path / "d.npz", inputs=X, labels=y), standardised=False)
    assert d.num_classes == 3 and d.inputs.dtype == np.float32
    np.testing.assert_allclose(d.inputs, X, rtol=1e-6)
    np.testing.assert_array_equal(d.labels, y)


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(inputs=np.zeros((4, 2))), "lacks 'labels'"),
        (dict(labels=np.zeros(4)), "lacks 'inputs'"),
        (
            dict(inputs=np.zeros((4, 2)), labels=np.array([0, 1, 0])),
            r"'labels' must have shape \[n\] = \[4\]",
        ),
        (
            dict(inputs=np.zeros(4), labels=np.array([0, 1, 0, 1])),
            r"'inputs' must be \[n, \.\.\.\]",
        ),
        (dict(inputs=np.array([[0.0], [np.nan]]), labels=np.array([0, 1])), "non-finite"),
        (dict(inputs=np.zeros((2, 2)), labels=np.array([0.5, 1.0])), "must be integers"),
        (dict(inputs=np.zeros((2, 2)), labels=np.array([-1, 1])), "must be >= 0"),
        (
            dict(inputs=np.zeros((3, 2)), labels=np.array([0, 0, 0])),
            "only one class; neural collapse needs at least 2",
        ),
        (dict(inputs=np.zeros((3, 2)), labels=np.array([0, 2, 2])), "class 1 has no sample"),
        (dict(inputs=np.array(["a", "b"]), labels=np.array([0, 1])), "numeric"),
    ],
)
def test_npz_dataset_validation(tmp_path, arrays, message):
    name = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=message) as info:
        ds.load_dataset(name)
    assert "\n" not in str(info.value)


def test_npz_dataset_file_problems(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        ds.load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    obj = tmp_path / "obj.npz"
    np.savez(obj, inputs=np.array([object(), object()], dtype=object), labels=np.array([0, 1]))
    with pytest.raises(InputError, match="pickled object arrays"):
        ds.load_dataset(f"npz:{obj}")


# --------------------------------------------------------------------------- optimiser and loss scale


def test_weight_decay_is_lambda_in_the_paper_scale():
    """One step of the optimiser (no momentum) is gradient descent on L + (wd/2)‖θ‖²."""
    import optax

    wd, lr = 0.3, 0.1
    params = {"W": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.25, -1.0])}
    h = jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    labels = jnp.array([0, 1, 1])

    def data_loss(p):
        return tr.mse_loss(h @ p["W"].T + p["b"], labels, 2)

    def paper_objective(p):  # docs/theory.md §2 with λ = wd
        return centralpath.mse_loss(h, labels, p["W"], p["b"], lam=wd)

    opt = tr.make_optimizer(
        lr=lr, weight_decay=wd, momentum=0.0, schedule="constant", total_steps=10
    )
    updates, _ = opt.update(jax.grad(data_loss)(params), opt.init(params), params)
    stepped = optax.apply_updates(params, updates)
    expected = jax.tree.map(lambda p, g: p - lr * g, params, jax.grad(paper_objective)(params))
    for k in params:
        np.testing.assert_allclose(stepped[k], expected[k], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        data_loss(params), centralpath.mse_loss(h, labels, params["W"], params["b"]), rtol=1e-12
    )


def test_capture_epochs():
    e = tr.capture_epochs(300, 30)
    assert e[0] == 0 and e[-1] == 300 and np.all(np.diff(e) > 0) and len(e) <= 31
    np.testing.assert_array_equal(tr.capture_epochs(1, 5), [0, 1])


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
def test_schedules(schedule):
    s = tr.learning_rate_schedule(0.5, schedule=schedule, total_steps=90)
    assert float(s(0)) == pytest.approx(0.5)
    last = {"cosine": 0.0, "step": 0.005, "constant": 0.5}[schedule]
    assert float(s(90)) == pytest.approx(last, abs=1e-9)


# --------------------------------------------------------------------------- training and capture


def test_training_decreases_the_loss(tiny_run):
    assert tiny_run.history_loss[-1] < 0.7 * tiny_run.history_loss[0]
    assert tiny_run.accuracy[-1] > tiny_run.accuracy[0]
    assert np.all(np.isfinite(tiny_run.history_loss))


def test_capture_layout(tiny_run, tiny_digits):
    K = len(tiny_run.epochs)
    assert tiny_run.epochs[0] == 0 and tiny_run.epochs[-1] == 4
    assert tiny_run.features.shape == (K, 100, 16) and tiny_run.features.dtype == np.float32
    assert tiny_run.W.shape == (K, 10, 16) and tiny_run.b.shape == (K, 10)
    np.testing.assert_array_equal(tiny_run.labels, tiny_digits.labels)
    # The last capture is the final model's classifier.
    np.testing.assert_array_equal(tiny_run.W[-1], np.asarray(tiny_run.model.classifier.weight))
    # Captured loss/accuracy equal the per-epoch history at those epochs.
    np.testing.assert_array_equal(tiny_run.loss, tiny_run.history_loss[tiny_run.epochs])


def test_captured_loss_is_the_paper_mse(tiny_run):
    """The network's MSE is ½ Ave‖Wh+b−y‖² of the captured features, W, b (docs/theory.md §2)."""
    for k in range(len(tiny_run.epochs)):
        expected = centralpath.mse_loss(
            jnp.asarray(tiny_run.features[k], jnp.float64),
            jnp.asarray(tiny_run.labels),
            jnp.asarray(tiny_run.W[k], jnp.float64),
            jnp.asarray(tiny_run.b[k], jnp.float64),
        )
        np.testing.assert_allclose(tiny_run.loss[k], float(expected), rtol=2e-5)


def test_features_file_is_accepted_by_analyze(tiny_run, tmp_path):
    path = tmp_path / "features.npz"
    tiny_run.save_features(path)
    ff = load_features(path)
    assert ff.weight_decay == tr.DEFAULTS["weight_decay"]
    assert ff.num_classes == 10 and ff.num_checkpoints == len(tiny_run.epochs)
    np.testing.assert_array_equal(ff.epochs, tiny_run.epochs)
    records = analyze(ff)
    assert len(records) == len(tiny_run.epochs)
    for r in records:
        assert r["loss_perp"] is not None and r["loss_perp"] >= 0
        assert len(r["snr"]) == 9
        # The decomposition adds up (docs/theory.md §3) on real features too.
        np.testing.assert_allclose(
            r["loss_nc1"] + r["loss_nc23"] + r["loss_perp"], r["loss"], rtol=1e-8
        )
    results = tr.training_results(tiny_run, records)
    assert results["train/perp_rel"].shape == (len(records),)
    assert results["train/snr"].shape == (len(records), 9)
    assert results["history/train_loss"].shape == (5,)


def test_cross_entropy_trains(tiny_digits):
    run = tr.train_from_config(tiny_config(loss="ce", epochs=2), data=tiny_digits)
    assert run.loss_name == "ce"
    assert run.history_loss[-1] < run.history_loss[0]


def test_non_finite_loss_raises(tiny_digits):
    # Inputs of 1e30 overflow float32 in the first step (same shapes and optimiser as the other
    # tests, so nothing recompiles); a too-large learning rate ends the same way, more slowly.
    huge = dataclasses.replace(tiny_digits, inputs=tiny_digits.inputs * np.float32(1e30))
    with pytest.raises(NumericalError, match="at epoch 1; lower the learning rate"):
        tr.train_from_config(tiny_config(), data=huge)


def test_fit_validates_options(tiny_digits):
    # fit takes a TrainConfig, which validates on construction: a bad option never reaches it.
    for kw, msg in [
        (dict(loss="hinge"), "unknown loss"),
        (dict(epochs=0), "epochs must be >= 1"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(weight_decay=-1.0), "weight-decay must be >= 0"),
        (dict(schedule="linear"), "unknown schedule"),
    ]:
        with pytest.raises(InputError, match=msg):
            tr.TrainConfig(**kw)


# --------------------------------------------------------------------------- resume


class _Stop(KeyboardInterrupt):
    pass


def _interrupt_at(epoch):
    def on_epoch(e, loss, acc):
        if e == epoch:
            raise _Stop

    return on_epoch


def _fit_tiny(data, state_dir=None, on_epoch=None, **kw):
    model = make_model(
        "mlp", data.input_shape, data.num_classes, widths=(32, 16), key=jax.random.PRNGKey(0)
    )
    options = dict(epochs=TINY["epochs"], batch_size=TINY["batch_size"], num_checkpoints=4)
    options.update(kw)
    config = tr.TrainConfig(**options)
    return tr.fit(
        model, data, config, key=jax.random.PRNGKey(1), state_dir=state_dir, on_epoch=on_epoch
    )


def _assert_same_training(a, b):
    for name in (
        "epochs",
        "features",
        "W",
        "b",
        "loss",
        "accuracy",
        "history_loss",
        "history_accuracy",
    ):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for x, y in zip(jax.tree.leaves(a.model), jax.tree.leaves(b.model), strict=True):
        np.testing.assert_array_equal(x, y)


def test_resume_is_bit_identical(tiny_digits, tmp_path):
    straight = _fit_tiny(tiny_digits)
    state = tmp_path / "state"
    with pytest.raises(_Stop):
        _fit_tiny(tiny_digits, state, on_epoch=_interrupt_at(2))
    assert (state / "state.eqx").is_file()
    resumed = _fit_tiny(tiny_digits, state)
    assert resumed.resumed_from == 2
    _assert_same_training(straight, resumed)
    # A state saved every other epoch resumes from the last save, with the same result.
    state2 = tmp_path / "state2"
    with pytest.raises(_Stop):
        _fit_tiny(tiny_digits, state2, on_epoch=_interrupt_at(3), save_every=2)
    resumed2 = _fit_tiny(tiny_digits, state2, save_every=2)
    assert resumed2.resumed_from == 2
    _assert_same_training(straight, resumed2)


def test_resume_refuses_another_configuration(tiny_digits, tmp_path):
    state = tmp_path / "state"
    with pytest.raises(_Stop):
        _fit_tiny(tiny_digits, state, on_epoch=_interrupt_at(1))
    with pytest.raises(InputError, match="different lr"):
        _fit_tiny(tiny_digits, state, lr=0.01)


# --------------------------------------------------------------------------- command line


def _cli(capsys, *argv):
    try:
        code = main(["train", *argv])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


TINY_FLAGS = [
    "--per-class",
    "10",
    "--widths",
    "32,16",
    "--epochs",
    "4",
    "--batch-size",
    "25",
    "--num-checkpoints",
    "4",
    "--quiet",
    "--no-figures",  # matplotlib's layout costs seconds; plotting has its own tests
]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dataset", "cifar"], "unknown dataset 'cifar'"),
        (["--model", "resnet"], "unknown model 'resnet'"),
        (["--loss", "hinge"], "unknown loss 'hinge'"),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--epochs", "-3"], "epochs must be >= 1"),
        (["--lr", "0"], "lr must be > 0"),
        (["--lr", "-0.1"], "lr must be > 0"),
        (["--weight-decay=-1e-4"], "weight-decay must be >= 0"),
        (["--batch-size", "0"], "batch-size must be >= 1"),
        (["--per-class", "1"], "per-class must be >= 2"),
        (["--widths", "32,0"], "widths must be a non-empty list of positive integers"),
        (["--schedule", "linear"], "unknown schedule"),
    ],
)
def test_cli_bad_input(capsys, tmp_path, flags, message):
    out = tmp_path / "run"
    code, _, err = _cli(capsys, *flags, "--out", str(out))
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_one_class_dataset(capsys, tmp_path):
    data = tmp_path / "one.npz"
    np.savez(data, inputs=np.zeros((6, 3)), labels=np.zeros(6, dtype=int))
    code, _, err = _cli(capsys, "--dataset", f"npz:{data}", "--out", str(tmp_path / "run"))
    assert code == 2 and "only one class" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_cli_bad_config_key(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("epoch = 3\n")
    code, _, err = _cli(capsys, "--config", str(cfg), "--out", str(tmp_path / "run"))
    assert code == 2 and "unknown key 'epoch'" in err


def test_cli_train_writes_a_run_directory(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = _cli(capsys, *TINY_FLAGS, "--out", str(out))
    assert code == 0 and stdout.strip() == str(out)
    for name in (
        "config.toml",
        "metadata.json",
        "features.npz",
        "results.npz",
        "results.csv",
        "analysis.json",
        "model.eqx",
    ):
        assert (out / name).is_file(), name
    assert not (out / "state").exists()
    assert not (tmp_path / ".run.partial").exists()
    ff = load_features(out / "features.npz")
    assert ff.weight_decay == tr.DEFAULTS["weight_decay"] and ff.num_checkpoints == 4
    from centralpath._run.rundir import load_results

    res = load_results(out)
    assert res["train/perp_rel"].shape == (4,) and np.all(res["train/perp_rel"] >= 0)
    np.testing.assert_array_equal(res["train/times"], [0, 1, 2, 4])
    import json

    meta = json.loads((out / "metadata.json").read_text())
    assert meta["dataset"]["num_samples"] == 100 and meta["seed"] == 0
    import tomllib

    config = tomllib.loads((out / "config.toml").read_text())
    assert config["epochs"] == 4 and config["widths"] == [32, 16]
    # The existing directory is not overwritten without --overwrite.
    code, _, err = _cli(capsys, *TINY_FLAGS, "--out", str(out))
    assert code == 2 and "already exists" in err


def test_cli_interrupt_and_resume(capsys, tmp_path, monkeypatch):
    """Ctrl-C keeps only the `.partial` build; --resume finishes it bit-identically."""
    straight = tmp_path / "straight"
    assert _cli(capsys, *TINY_FLAGS, "--out", str(straight))[0] == 0

    real_fit = tr.fit

    def interrupted_fit(*args, **kw):
        return real_fit(*args, **kw, on_epoch=_interrupt_at(2))

    monkeypatch.setattr(tr, "fit", interrupted_fit)
    run = tmp_path / "run"
    code, _, err = _cli(capsys, *TINY_FLAGS, "--out", str(run))
    assert code == 130 and "--resume" in err
    partial = tmp_path / ".run.partial"
    assert not run.exists() and partial.is_dir()
    assert not (partial / "features.npz").exists() and not (partial / "metadata.json").exists()
    monkeypatch.setattr(tr, "fit", real_fit)

    code, _, err = _cli(capsys, "--resume", str(run), "--epochs", "5")
    assert code == 2 and "drop the --epochs flag" in err
    code, stdout, _ = _cli(capsys, "--resume", str(run), "--quiet")
    assert code == 0 and stdout.strip() == str(run) and not partial.exists()
    a, b = np.load(straight / "features.npz"), np.load(run / "features.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    code, _, err = _cli(capsys, "--resume", str(run))
    assert code == 2 and "already finished" in err


# --------------------------------------------------------------------------- the PyTorch recipe


def pytorch_recipe_save(
    path, model, last_layer, inputs, labels, *, epochs_features, wd, num_classes
):
    """The PyTorch guide's recipe (docs/guides/pytorch.md: forward hook on the last nn.Linear), as a function.

    `epochs_features` is a list of (epoch, state_dict) to capture.
    """
    import torch

    captured = {"features": [], "W": [], "b": [], "epochs": []}
    batches = []
    handle = last_layer.register_forward_hook(
        lambda m, inp, out: batches.append(
            inp[0].detach().reshape(inp[0].shape[0], -1).cpu().numpy()
        )
    )
    for epoch, state in epochs_features:
        model.load_state_dict(state)
        model.eval()
        batches.clear()
        with torch.no_grad():
            for i in range(0, len(inputs), 7):
                model(inputs[i : i + 7])
        captured["features"].append(np.concatenate(batches))
        captured["W"].append(last_layer.weight.detach().cpu().numpy().copy())
        captured["b"].append(last_layer.bias.detach().cpu().numpy().copy())
        captured["epochs"].append(epoch)
    handle.remove()
    np.savez(
        path,
        features=np.stack(captured["features"]).astype(np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        W=np.stack(captured["W"]),
        b=np.stack(captured["b"]),
        epochs=np.asarray(captured["epochs"]),
        weight_decay=np.float64(num_classes * wd / 2),  # nn.MSELoss: λ = C·wd/2 (docs/theory.md §2)
        num_classes=np.int64(num_classes),
    )


def test_pytorch_recipe_matches_save_features(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    C, n, d, p = 3, 30, 5, 6
    model = torch.nn.Sequential(torch.nn.Linear(d, p), torch.nn.ReLU(), torch.nn.Linear(p, C))
    inputs = torch.randn(n, d)
    labels = np.repeat(np.arange(C), n // C)
    states = []
    for epoch in range(3):
        states.append((epoch, {k: v.clone() for k, v in model.state_dict().items()}))
        with torch.no_grad():
            for q in model.parameters():
                q.add_(0.1 * torch.randn_like(q))
    wd = 5e-4
    recipe = tmp_path / "recipe.npz"
    pytorch_recipe_save(
        recipe, model, model[2], inputs, labels, epochs_features=states, wd=wd, num_classes=C
    )

    # The hook captured the input of the last layer (batching may move the last bit).
    rec = np.load(recipe)
    for k, (_, state) in enumerate(states):
        model.load_state_dict(state)
        with torch.no_grad():
            direct = model[1](model[0](inputs)).numpy()
        np.testing.assert_allclose(rec["features"][k], direct, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(rec["W"][k], state["2.weight"].numpy())
        np.testing.assert_array_equal(rec["b"][k], state["2.bias"].numpy())
    # The same arrays written by save_features give identical numbers.
    resaved = tmp_path / "resaved.npz"
    save_features(
        resaved,
        features=rec["features"],
        labels=labels,
        W=rec["W"],
        b=rec["b"],
        epochs=np.arange(3),
        weight_decay=C * wd / 2,
        num_classes=np.int64(C),
    )
    assert analyze(load_features(recipe)) == analyze(load_features(resaved))
    assert load_features(recipe).weight_decay == pytest.approx(C * wd / 2)


def _recipe_source() -> tuple[str, str]:
    from pathlib import Path

    guide = Path(__file__).resolve().parent.parent / "docs" / "guides" / "pytorch.md"
    section = "## Without centralpath in the training environment"
    text = guide.read_text().split(section, 1)[1].split("\n## ", 1)[0]
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    return text, code


def test_pytorch_recipe_document_is_dependency_free_python():
    import ast

    text, code = _recipe_source()
    assert "λ = C · wd / 2" in text and "register_forward_hook" in code
    tree = ast.parse(code)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert imported == {"numpy", "torch"}


def test_pytorch_recipe_document_class_matches(tmp_path):
    """The NumpyFeatureRecorder of the PyTorch guide's recipe writes the same file as the function above."""
    torch = pytest.importorskip("torch")
    namespace: dict = {}
    exec(_recipe_source()[1], namespace)  # the documentation's own code
    torch.manual_seed(1)
    C, n, d, p = 3, 30, 5, 6
    model = torch.nn.Sequential(torch.nn.Linear(d, p), torch.nn.ReLU(), torch.nn.Linear(p, C))
    inputs = torch.randn(n, d)
    labels = np.repeat(np.arange(C), n // C)
    loader = [(inputs[i : i + 7], torch.as_tensor(labels[i : i + 7])) for i in range(0, n, 7)]
    recorder = namespace["NumpyFeatureRecorder"](model[2], loss="mse")
    states = []
    for epoch in range(2):
        states.append((epoch, {k: v.clone() for k, v in model.state_dict().items()}))
        recorder.capture(model, loader, epoch, test_loader=loader[:2])
        with torch.no_grad():
            for q in model.parameters():
                q.add_(0.1 * torch.randn_like(q))
    recorder.save(
        tmp_path / "doc.npz",
        weight_decay=C * 5e-4 / 2,
        num_classes=C,
        learning_rate=[0.1],
        momentum=0.9,
        steps_per_epoch=len(loader),
    )
    pytorch_recipe_save(
        tmp_path / "fn.npz",
        model,
        model[2],
        inputs,
        labels,
        epochs_features=states,
        wd=5e-4,
        num_classes=C,
    )
    assert analyze(load_features(tmp_path / "doc.npz")) == analyze(
        load_features(tmp_path / "fn.npz")
    )
    # The training record: loss name, schedule, accuracies and the test loss in the paper's scale.
    ff = load_features(tmp_path / "doc.npz")
    assert ff.loss == "mse" and ff.steps_per_epoch == 5 and ff.momentum == 0.9
    model.load_state_dict(states[-1][1])
    with torch.no_grad():
        logits = model(inputs).numpy()
    np.testing.assert_allclose(ff.train_accuracy[-1], np.mean(logits.argmax(1) == labels))
    expected = float(tr.mse_loss(jnp.asarray(logits[:14]), jnp.asarray(labels[:14]), C))
    np.testing.assert_allclose(ff.test_loss[-1], expected, rtol=1e-5)


# --------------------------------------------------------------------------- slow: the real thing


@pytest.mark.slow
def test_default_digits_run_collapses(capsys, tmp_path):
    """Default `centralpath train`: 100% training accuracy; NC1 falls ≥ 10× from the first
    zero-error epoch to the end; L_⊥LS/L reported at every checkpoint and small at the end."""
    out = tmp_path / "digits"
    start = time.perf_counter()
    code, _, err = _cli(capsys, "--out", str(out), "--quiet")
    wall = time.perf_counter() - start
    assert code == 0, err
    import json

    from centralpath._run.rundir import load_results

    res = load_results(out)
    meta = json.loads((out / "metadata.json").read_text())
    acc = res["train/train_accuracy"]
    assert acc[-1] == 1.0
    e0 = meta["first_zero_error_epoch"]
    assert e0 is not None and e0 in res["train/times"]
    i0 = int(np.flatnonzero(res["train/times"] == e0)[0])
    nc1 = res["train/nc1"]
    drop = nc1[i0] / nc1[-1]
    perp = res["train/perp_rel"]
    assert perp.shape == res["train/times"].shape and np.all(np.isfinite(perp))
    print(
        f"\ndefault digits run: {wall:.1f} s, first zero-error epoch {e0}, NC1 {nc1[i0]:.4g} -> "
        f"{nc1[-1]:.4g} ({drop:.3g}x), L_perp/L {perp[0]:.3g} -> {perp[-1]:.3g}"
    )
    assert drop >= 10
    assert meta["nc1_drop_from_first_zero_error"] == pytest.approx(drop)
    assert perp[-1] < perp[0]
    # The features file reproduces the results through `analyze`.
    records = analyze(load_features(out / "features.npz"))
    np.testing.assert_allclose([r["nc1"] for r in records], nc1, rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [("mnist", (28, 28)), ("mnist1d", (40,))])
def test_real_slow_datasets(cache_home, name, shape):
    t0 = time.perf_counter()
    d = ds.load_dataset(name)
    first = time.perf_counter() - t0
    assert d.inputs.shape == (5000, *shape) and d.num_classes == 10
    np.testing.assert_array_equal(d.class_counts(), np.full(10, 500))
    version = ds._CACHE_VERSION[name]
    assert (cache_home / "centralpath" / "datasets" / f"{name}-v{version}.npz").is_file()
    t0 = time.perf_counter()
    again = ds.load_dataset(name)
    assert time.perf_counter() - t0 < first
    np.testing.assert_array_equal(d.inputs, again.inputs)


@pytest.mark.slow
def test_cnn_trains_on_digits():
    data = ds.load_dataset("digits", per_class=30)
    run = tr.train_from_config(
        tiny_config(model="cnn", channels=[8, 16], widths=[32], epochs=10, per_class=30, lr=0.1),
        data=data,
    )
    assert run.features.shape[1:] == (300, 32)
    assert run.history_loss[-1] < 0.5 * run.history_loss[0]
    records = analyze(validate_features_arrays(run.features_arrays()))
    assert all(r["loss_perp"] is not None for r in records)


def test_the_training_name_tables_match_what_networks_builds():
    """TrainConfig's names are plain data beside it (so the parser never imports the training
    stack); centralpath.networks builds exactly what they name."""
    import jax

    from centralpath._run.config import DATASETS, LOSSES, MODELS, SCHEDULES
    from centralpath.networks import datasets, models, train

    assert set(datasets.BUILDERS) == set(DATASETS)
    assert set(train._LOSS_FNS) == set(LOSSES)
    for name in SCHEDULES:
        assert float(train.learning_rate_schedule(0.1, schedule=name, total_steps=9)(0)) == 0.1
    for name in MODELS:
        built = models.make_model(
            name,
            (8, 8, 1),
            3,
            widths=(4,),
            channels=(2,),
            resnet_width=1,
            key=jax.random.PRNGKey(0),
        )
        assert built is not None
