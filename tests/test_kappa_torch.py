"""experiments/kappa_torch.py runs end to end at a tiny size (its real run trains two PyTorch
MLPs and needs kappa_universality.py's full output; its table is in docs/guides/predict.md)."""

import json

import numpy as np
import pytest
from test_experiments import _load
from test_kappa_universality import TINY

pytest.importorskip("centralpath.networks")
pytest.importorskip("torch")

TRAINING = TINY["training"]  # the κ experiment's smoke configuration


# Slow: it trains two JAX networks (compiling their epochs) and a PyTorch one, and traces the
# central-path model for each scored run (7-16 s on a loaded core).
@pytest.mark.slow
def test_kappa_torch_smoke(tmp_path, capsys):
    jax_cfg = {
        "name": "kappa",
        "training": TRAINING,
        "runs": [
            {"dataset": "digits", "model": "mlp", "seed": 0, "per_class": 10},
            {"dataset": "digits", "model": "cnn", "seed": 0, "per_class": 10},
        ],
    }
    jax_out = _load("kappa_universality").main(jax_cfg, tmp_path / "jax")
    cfg = {
        "name": "kt",
        "kappa_json": str(jax_out / "kappa.json"),
        "training": TRAINING,
        "runs": [{"dataset": "digits", "seed": 0, "per_class": 10}],
    }
    kt = _load("kappa_torch")
    out = kt.main(cfg, tmp_path)
    result = json.loads((out / "kappa_torch.json").read_text())
    assert set(result) >= {"kappa_json", "runs", "thresholds"}
    assert set(result["runs"]) == {"torch-digits-mlp-s0"}
    entry = result["runs"]["torch-digits-mlp-s0"]
    assert entry["jax_partner"] == "digits-mlp-s0"
    # The JAX partner's features file is there: its checkpoint epochs are the torch run's.
    with np.load(jax_out / "features" / "digits-mlp-s0.npz") as f:
        assert entry["capture_epochs"] == f["epochs"].tolist()
    assert entry["capture_epochs_from"] == "the JAX run's features file"
    assert 0 <= entry["train_accuracy"] <= 1 and entry["start"].startswith("auto:")
    assert set(entry["kappa_lr"]) >= {"torch", "jax", "torch_over_jax"}
    # Every run is scored or says why not; every carried κ is scored or says why not.
    assert (entry["not_scored"] is None) == bool(entry["fitted"])
    if entry["not_scored"]:
        assert isinstance(entry["not_scored"], str) and entry["not_scored"]
        assert not entry["carried"] and not entry["not_carried"]
    else:
        keys = {
            f"{c} from {s}"
            for c in ("lr", "lr-loss", "lr-grad", "lr-loss-epoch")
            for s in kt.SOURCES
        }
        assert set(entry["carried"]) | set(entry["not_carried"]) == keys
        assert not set(entry["carried"]) & set(entry["not_carried"])
        # One data set only: the other data set's MLP is missing and the entry says so.
        assert "another data set" in entry["not_carried"]["lr from JAX MLP other data set"]
        for s in entry["carried"].values():
            assert {"source", "kappa", "median_relative_error", "skill", "nc1_factor"} <= set(s)
    assert (tmp_path / "kt" / "features" / "torch-digits-mlp-s0.npz").is_file()
    printed = capsys.readouterr().out
    assert "kappa_lr torch" in printed and "NC1 factor" in printed

    # A rerun reuses the cached torch features file.
    kt.main(cfg, tmp_path)
    assert "trained torch-" not in capsys.readouterr().err


def test_a_missing_kappa_json_is_one_line_naming_the_fix(tmp_path):
    kt = _load("kappa_torch")
    cfg = {"kappa_json": str(tmp_path / "none.json"), "runs": []}
    with pytest.raises(SystemExit, match="kappa_universality.py first"):
        kt.main(cfg, tmp_path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="not kappa_universality.py's kappa.json"):
        kt.main(cfg, tmp_path, tmp_path / "bad.json")
