"""The per-epoch training record (`epoch_loss`, `feature_grad_sq`, `class_mean_step`,
`feature_step`): written by `fit`, checked by the features-file schema, each against an
independent NumPy computation of its definition (centralpath/_io.py's schema table)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from centralpath._errors import InputError
from centralpath.measurement._io import EPOCH_RECORD_KEYS, load_features, validate_features_arrays

networks = pytest.importorskip("centralpath.networks")
from centralpath.networks import datasets as ds, models, train as tr  # noqa: E402


def _centred_means(H, labels, C):
    M = np.stack([H[labels == c].mean(0) for c in range(C)])
    return M - H.mean(0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Digits, 10 per class, every epoch captured: the record can be recomputed from the file."""
    data = ds.load_dataset("digits", per_class=10)
    model = models.make_model("mlp", data.input_shape, 10, widths=(16,), key=jax.random.key(0))
    config = tr.TrainConfig(
        epochs=5, lr=0.1, batch_size=20, num_checkpoints=100, schedule="constant"
    )
    run = tr.fit(model, data, config, key=jax.random.key(1), capture="features")
    path = tmp_path_factory.mktemp("record") / "features.npz"
    run.save_features(path)
    return run, path


def test_fit_writes_the_per_epoch_record(tiny_run):
    run, path = tiny_run
    ff = load_features(path)
    np.testing.assert_array_equal(ff.epochs, np.arange(6))
    H = np.asarray(ff.features, np.float64)
    labels, C = ff.labels, ff.num_classes
    for key in EPOCH_RECORD_KEYS:
        v = getattr(ff, key)
        assert v is not None and v.shape == (5,) and np.all(np.isfinite(v)), key
    # Displacements between consecutive epochs, from the stored features of every epoch.
    M = np.stack([_centred_means(H[k], labels, C) for k in range(6)])
    mean_step = np.mean(np.sum(np.diff(M, axis=0) ** 2, axis=-1), axis=-1)
    feature_step = np.mean(np.sum(np.diff(H, axis=0) ** 2, axis=-1), axis=-1)
    np.testing.assert_allclose(ff.class_mean_step, mean_step, rtol=1e-4)
    np.testing.assert_allclose(ff.feature_step, feature_step, rtol=1e-4)
    assert np.all(ff.class_mean_step > 0) and np.all(ff.feature_step >= ff.class_mean_step)
    # The epoch's minibatch loss lies near the whole-set losses before and after the epoch.
    assert np.all(ff.epoch_loss > 0.5 * np.minimum(run.history_loss[:-1], run.history_loss[1:]))
    assert np.all(ff.epoch_loss < 2.0 * np.maximum(run.history_loss[:-1], run.history_loss[1:]))


def test_the_step_records_match_their_definitions_at_zero_learning_rate():
    # With a zero step nothing moves, so every step sees the same W, b and features: the
    # epoch's mean over its steps (a permutation of all samples, none dropped) is the mean over
    # the samples, computed here from the features in NumPy.
    data = ds.load_dataset("digits", per_class=6)
    model = models.make_model("mlp", data.input_shape, 10, widths=(8,), key=jax.random.key(3))
    for loss in ("mse", "ce"):
        out = tr._train_epoch(
            model,
            None,
            optax.sgd(0.0).init(None),
            jax.random.key(0),
            jnp.asarray(data.inputs),
            jnp.asarray(data.labels),
            optimizer=optax.sgd(0.0),
            loss_fn=tr._LOSS_FNS[loss],
            batch_size=12,
            num_classes=10,
        )
        losses, grad_sq = np.asarray(out[3], np.float64), np.asarray(out[4], np.float64)
        assert losses.shape == grad_sq.shape == (5,)
        H = np.asarray(jax.vmap(model.features)(jnp.asarray(data.inputs)), np.float64)
        W = np.asarray(model.classifier.weight, np.float64)
        b = np.asarray(model.classifier.bias, np.float64)
        Z, Y = H @ W.T + b, np.eye(10)[data.labels]
        if loss == "mse":
            R, expected_loss = Z - Y, 0.5 * np.mean(np.sum((Z - Y) ** 2, axis=1))
        else:
            P = np.exp(Z - Z.max(1, keepdims=True))
            P /= P.sum(1, keepdims=True)
            R, expected_loss = P - Y, -np.mean(np.log(P[np.arange(len(Y)), data.labels]))
        np.testing.assert_allclose(losses.mean(), expected_loss, rtol=1e-5)
        np.testing.assert_allclose(grad_sq.mean(), np.mean(np.sum((R @ W) ** 2, axis=1)), rtol=1e-5)


def _arrays(K=2, **extra):
    rng = np.random.default_rng(0)
    return {
        "features": rng.standard_normal((K, 12, 4)),
        "labels": np.repeat(np.arange(3), 4),
        "epochs": np.arange(K),
        **extra,
    }


@pytest.mark.parametrize("key", EPOCH_RECORD_KEYS)
@pytest.mark.parametrize(
    "value, message",
    [
        (np.array([0.1, -0.1]), "must be \\[E\\] values >= 0"),
        (np.array([0.1, np.nan]), "non-finite"),
        (np.array(["a"]), "numeric array"),
        (np.ones((2, 2)), "must be \\[E\\] values"),
    ],
)
def test_the_per_epoch_record_is_validated(key, value, message):
    with pytest.raises(InputError, match=message) as info:
        validate_features_arrays(_arrays(**{key: value}))
    assert f"'{key}'" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("key", EPOCH_RECORD_KEYS)
def test_the_per_epoch_record_must_reach_the_last_checkpoint(key):
    with pytest.raises(InputError, match="reach epoch 5"):
        validate_features_arrays(_arrays(epochs=np.array([0, 5]), **{key: np.ones(3)}))
    ff = validate_features_arrays(_arrays(epochs=np.array([0, 5]), **{key: np.ones(5)}))
    np.testing.assert_array_equal(getattr(ff, key), np.ones(5))
