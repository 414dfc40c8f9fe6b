"""The predictive compare on networks trained here: the start rule moves by at most one stored
checkpoint when the checkpoints are thinned and between two seeds of one network, and negative
controls built from a trained run — checkpoints reversed, shuffled, class means rotated — are
never called consistent."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from centralpath.measurement._io import save_features, validate_features_arrays
from centralpath.measurement.analysis import analyze
from centralpath.measurement.predictive import Measurement, choose_from_epoch, compare_models

networks = pytest.importorskip("centralpath.networks")
from centralpath.networks import datasets as ds, models, train as tr  # noqa: E402

# Digits, 20 per class, an MLP with p = 32, a constant learning rate (a few seconds per seed).
DATASET, PER_CLASS, WIDTHS, BATCH = "digits", 20, (64, 32), 40
EPOCHS, SCHEDULE, LR, WEIGHT_DECAY = 60, "constant", 0.1, 2.5e-3


def _train(seed: int) -> dict:
    data = ds.load_dataset(DATASET, per_class=PER_CLASS, seed=0)
    model = models.make_model("mlp", data.input_shape, 10, widths=WIDTHS, key=jax.random.key(seed))
    config = tr.TrainConfig(
        epochs=EPOCHS,
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        batch_size=BATCH,
        schedule=SCHEDULE,
        num_checkpoints=40,
    )
    run = tr.fit(model, data, config, key=jax.random.key(100 + seed), capture="features")
    return {k: np.asarray(v) for k, v in run.features_arrays().items()}


@pytest.fixture(scope="module")
def runs():
    return [_train(0), _train(1)]


def _measurement(arrays):
    ff = validate_features_arrays(arrays)
    return ff, Measurement.from_records(ff, analyze(ff))


def _subset(arrays, keep):
    per_checkpoint = ("features", "W", "b", "epochs", "train_loss", "train_accuracy")
    out = dict(arrays)
    for key in (*per_checkpoint, "test_accuracy", "test_loss"):
        if key in out:
            out[key] = np.asarray(out[key])[keep]
    return out


def test_the_start_is_stable_under_thinning(runs):
    ff, m = _measurement(runs[0])
    k0, rule = choose_from_epoch(m)
    assert k0 is not None, rule
    e0, epochs = m.epochs[k0], m.epochs
    assert 0 < k0 < len(epochs) - 4, (k0, rule)
    # Every second checkpoint (either phase, the last kept): the start is the first kept
    # checkpoint at or after e0, or at most one stored checkpoint from it.
    K = len(epochs)
    for phase in (0, 1):
        keep = np.unique(np.concatenate([np.arange(phase, K, 2), [K - 1]]))
        _, thin = _measurement(_subset(runs[0], keep))
        k, rule = choose_from_epoch(thin)
        assert k is not None, rule
        expected = int(np.searchsorted(thin.epochs, e0))
        assert abs(k - expected) <= 1, (phase, thin.epochs[k], e0)


def test_the_start_is_stable_across_seeds(runs):
    """Measured on seeds 0–5 of this network: starts at epochs 18, 19, 12, 15, 18, 18 (the raw
    rule "L_perp/L stays <= 0.2" gave 28, 19, 13, 15, 25, 18), and the lr clock's fitted kappa
    spreads x1.29 across them (x1.53 from the raw rule's starts). Seeds 2 and 3 reach 100%
    training accuracy and L_perp/L 0.2 three to six epochs before the others: the start follows
    each seed's own progress, so not every pair of seeds lies within one checkpoint (12 of the
    30 ordered pairs do, 6 with the raw rule)."""
    _, m = _measurement(runs[0])
    k0, _ = choose_from_epoch(m)
    epochs = m.epochs
    # A second seed of the same network: its start lies within one of this run's checkpoints.
    _, other = _measurement(runs[1])
    k1, rule = choose_from_epoch(other)
    assert k1 is not None, rule
    assert abs(int(np.searchsorted(epochs, other.epochs[k1])) - k0) <= 1, (
        epochs[k0],
        other.epochs[k1],
    )


def _controls(arrays, k0: int) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    K = len(arrays["epochs"])
    reversed_ = _subset(arrays, np.arange(K)[::-1])
    reversed_["epochs"] = arrays["epochs"]
    order = np.concatenate([np.arange(k0 + 1), k0 + 1 + rng.permutation(K - k0 - 1)])
    shuffled = _subset(arrays, order)
    shuffled["epochs"] = arrays["epochs"]
    # Each later checkpoint's centred class means turned by a random rotation; the within-class
    # deviations and the classifier as measured.
    H = np.array(arrays["features"], np.float64)
    W, b = np.array(arrays["W"], np.float64), np.array(arrays["b"], np.float64)
    labels = arrays["labels"]
    for k in range(k0 + 1, K):
        mu = np.stack([H[k][labels == c].mean(0) for c in range(10)])
        mu_G = mu.mean(0)
        Q, _ = np.linalg.qr(rng.standard_normal((H.shape[2], H.shape[2])))
        H[k] = H[k] - mu[labels] + mu_G + (mu[labels] - mu_G) @ Q.T
        # The classifier turned with the means (W Q^T Q mu = W mu): still least-squares-like
        # on the means, so the control is scored rather than refused at the start.
        W[k] = W[k] @ Q.T
        b[k] = b[k] + W[k] @ (Q @ mu_G) - W[k] @ mu_G
    rotated = dict(arrays, features=H, W=W, b=b)
    return {"reversed": reversed_, "shuffled": shuffled, "rotated": rotated}


@pytest.mark.slow  # scores three controls with every model (~6 s)
def test_controls_are_never_consistent(runs, tmp_path):
    ff, m = _measurement(runs[0])
    k0, _ = choose_from_epoch(m)
    _, _, real = compare_models(ff, ["central-path"])
    # Scored (3.5% error, skill 0.84 when measured): the controls below are refused or scored
    # on a run that the test itself can score.
    assert real[0].verdict != "not-applicable", real[0].reason
    assert real[0].numbers["median_relative_error"] < 0.1 and real[0].numbers["skill"] > 0.5
    for name, arrays in _controls(runs[0], k0).items():
        path = tmp_path / f"{name}.npz"
        save_features(path, **arrays)
        control = validate_features_arrays(arrays)
        _, _, predictions = compare_models(control, ["closed-form", "central-path", "ufm"])
        for p in predictions:
            assert p.verdict != "consistent", (name, p.model, p.reason)
