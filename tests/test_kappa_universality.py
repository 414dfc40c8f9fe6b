"""experiments/kappa_universality.py runs end to end at a tiny size (its real run, 5.5 min on
two loaded cores, is not part of the suite; its table is in docs/guides/predict.md)."""

import json

import pytest
from test_experiments import _load

pytest.importorskip("centralpath.networks")

TINY = {
    "name": "kappa",
    "training": {
        "loss": "mse",
        "epochs": 6,
        "lr": 0.1,
        "batch_size": 20,
        "schedule": "constant",
        "widths": [32],
        "channels": [4],
        "test_fraction": 0.0,
    },
    "runs": [
        {"dataset": "digits", "model": "mlp", "seed": 0, "per_class": 10},
        {"dataset": "digits", "model": "cnn", "seed": 0, "per_class": 10},
    ],
}


def test_kappa_universality_smoke(tmp_path, capsys):
    out = _load("kappa_universality").main(TINY, tmp_path)
    result = json.loads((out / "kappa.json").read_text())
    assert set(result["runs"]) == {"digits-mlp-s0", "digits-cnn-s0"}
    for entry in result["runs"].values():
        # Six epochs reach no stable start: each run says why it is not scored.
        assert entry["start"].startswith("auto:")
        assert entry["not_applicable"] or entry["fitted"]
    assert (out / "features" / "digits-mlp-s0.npz").is_file()
    # The docs' tables as this run measured them: one row per run in the fitted table, one per
    # scored run in the carried table (none is scored at six epochs).
    table = (out / "kappa.md").read_text()
    assert table.startswith("| run | start e0 | κ lr |")
    assert sum(line.startswith("| digits-") for line in table.splitlines()) == 2 + len(
        result["carried"]
    ) + len(result["phases"])
    # A constant learning rate is one phase, over the whole run; unscored without a start.
    for name, phases in result["phases"].items():
        assert [ph["epochs"] for ph in phases] == [[0.0, 6]], name
        assert phases[0]["kappa"] is None or result["runs"][name]["fitted"], name
    printed = capsys.readouterr().out
    assert "fitted on the run itself" in printed and "carried kappa" in printed


def test_phases_follow_the_schedule(tmp_path):
    """A step schedule (÷10 at 1/3 and 2/3 of training) gives three phases, split at the epochs
    after which the learning rate changes, each with its own rate."""
    tiny = {
        **TINY,
        "training": {**TINY["training"], "schedule": "step"},
        "runs": [{"dataset": "digits", "model": "mlp", "seed": 0, "per_class": 10}],
    }
    out = _load("kappa_universality").main(tiny, tmp_path)
    (phases,) = json.loads((out / "kappa.json").read_text())["phases"].values()
    assert [ph["epochs"] for ph in phases] == [[0.0, 2], [2.0, 4], [4.0, 6]]
    lrs = [ph["lr"] for ph in phases]
    assert lrs[0] / lrs[1] == pytest.approx(10) and lrs[1] / lrs[2] == pytest.approx(10)
