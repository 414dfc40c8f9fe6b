"""The clocks of the predictive compare beyond `lr`: what each sums (against a NumPy sum of its
definition), κ recovered from a trajectory made with it, and the κ-free speed clocks recovering
the model's own times from its own class means."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from test_compare_predictive import TIMES, TOL, _flow_trajectory, _measurement, _random_state

from centralpath._errors import InputError
from centralpath.measurement._initial_state import initial_state
from centralpath.measurement.predictive import (
    Measurement,
    clock_units,
    measured_distance,
    predict,
)

LR = np.array([0.4, 0.4, 0.4, 0.04, 0.04, 0.004, 0.004])  # epochs 1..7
LOSS = np.array([0.5, 0.3, 0.2, 0.15, 0.12, 0.11, 0.105])
GRAD = np.array([2.0, 1.5, 1.0, 0.8, 0.7, 0.65, 0.6])
EPOCHS = np.array([0, 1, 2, 3, 5, 7])


def _record(m: Measurement, **extra) -> Measurement:
    return Measurement(**{**m.__dict__, "epochs": EPOCHS.astype(float), **extra})


@pytest.mark.parametrize(
    "clock, step",
    [
        ("lr", LR * 4 / 0.5),
        ("lr-loss", LR * 4 / 0.5 * LOSS),
        ("lr-grad", LR * 4 / 0.5 * GRAD),
        ("lr-loss-epoch", LR / 0.5 * LOSS),
    ],
)
def test_each_clock_sums_its_step(clock, step):
    m = _record(
        _measurement(np.ones((6, 2)), lr=LR), epoch_loss=LOSS, feature_grad_sq=GRAD
    )  # momentum 0.5, 4 steps per epoch
    S = clock_units(m, 1, clock)
    cumulative = np.concatenate([[0.0], np.cumsum(step)])
    expected = cumulative[EPOCHS] - cumulative[1]
    assert_allclose(S, np.where(np.arange(6) > 1, expected, 0.0), rtol=1e-14)


def test_a_clock_without_its_record_is_refused_in_one_line():
    m = _record(_measurement(np.ones((6, 2)), lr=LR))
    for clock, key in (("lr-loss", "epoch_loss"), ("lr-grad", "feature_grad_sq")):
        with pytest.raises(InputError, match=key) as e:
            clock_units(m, 0, clock)
        assert "\n" not in str(e.value) and f"--clock {clock}" in str(e.value)
    with pytest.raises(InputError, match="class_mean_step"):
        measured_distance(m, 0)


@pytest.mark.parametrize("model", ["closed-form", "central-path"])
def test_lr_loss_clock_recovers_kappa(model):
    state = _random_state(seed=3)[0]
    step = LR * 4 / 0.5 * LOSS
    S = np.concatenate([[0.0], np.cumsum(step)])
    kappa = TIMES[model][-1] / S[7]
    times = kappa * S[EPOCHS]
    omega = _flow_trajectory(state, model, times)
    m = _record(_measurement(omega, lr=LR), epoch_loss=LOSS)
    p = predict(m, lambda k: state, model, from_epoch=0, clock="lr-loss")
    assert_allclose(p.kappa, kappa, rtol=TOL)
    assert_allclose(p.omega[1:], omega[1:], rtol=TOL)
    # κ of another clock means something else: a given κ is used as is, wrong for lr-loss.
    q = predict(m, lambda k: state, model, from_epoch=0, clock="lr", kappa=kappa)
    assert q.numbers["median_relative_error"] > 100 * TOL


def test_speed_clocks_recover_the_models_own_times():
    """A trajectory of the central path itself, its class means' per-epoch displacement as the
    record: `speed` and `displacement` give back the times it was made at (to the resolution of
    the model's traced grid, where the path length is a sum of chords)."""
    from centralpath._integrate import integrate
    from centralpath.measurement.predictive import _SAVES, _pad

    state = _random_state(seed=3)[0]
    times = TIMES["central-path"]
    flow, y0 = initial_state(state, "central-path")
    # Every epoch a save time, so that the per-epoch record is the model's own.
    epochs = np.arange(len(times))
    ts = _pad(np.asarray(times, float), _SAVES)
    tr = integrate(flow, y0, float(ts[-1]), ts=ts)
    keep = np.searchsorted(ts, times)
    stats = tr.snapshots.stats
    # Path length along the fine save grid between checkpoints: the record of a dense run.
    Mall = np.asarray(stats.class_means)
    call = np.asarray(stats.counts)
    Mall = Mall - (np.einsum("kpc,kc->kp", Mall, call) / call.sum(1, keepdims=True))[:, :, None]
    chords = np.sqrt(np.mean(np.sum(np.diff(Mall, axis=0) ** 2, axis=1), axis=1))
    length = np.concatenate([[0.0], np.cumsum(chords)])[keep]
    steps = np.diff(length) ** 2
    omega = tr.snr()[keep]
    m = Measurement(
        **{
            **_measurement(omega).__dict__,
            "epochs": epochs.astype(float),
            "class_mean_step": steps,
        }
    )
    p = predict(m, lambda k: state, "central-path", from_epoch=0, clock="speed")
    assert_allclose(p.flow_time[1:], times[1:], rtol=0.05)
    assert_allclose(p.omega[1:], omega[1:], rtol=0.01)
    assert p.numbers["median_relative_error"] < 0.01
    c = predict(m, lambda k: state, "closed-form", from_epoch=0, clock="speed")
    assert c.verdict == "not-applicable" and "class means" in c.reason
