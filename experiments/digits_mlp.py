"""Figures: an MLP trained with MSE on the real digits data — NC1–NC4 and L_⊥LS/L over epochs,
the loss decomposition, and its ω_j(epoch) against the fitted closed form (docs/theory.md §8).

    python experiments/digits_mlp.py [experiments/digits_mlp.toml]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _runner import enable_x64, parse_args, write_figures


def main(cfg: dict, out_root=None):
    import numpy as np

    from centralpath.measurement._io import load_features
    from centralpath.measurement.compare import compare_features
    from centralpath.networks.train import DEFAULTS, train_from_config

    training = train_from_config({**DEFAULTS, **cfg["training"]})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.npz"
        training.save_features(path)
        fit, results, _ = compare_features(load_features(path))
    results["train/train_accuracy"] = np.asarray(training.accuracy, float)
    return write_figures(cfg.get("name", "digits_mlp"), "compare", results, cfg, out_root)


if __name__ == "__main__":
    enable_x64()
    print(main(*parse_args(__file__, sys.argv)))
