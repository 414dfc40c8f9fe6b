"""Each experiment script's main(cfg) runs on a tiny configuration and writes its figures."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _load(name):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(EXPERIMENTS))


SIM = {"classes": 3, "per_class": 4, "dim": 3, "t_end": 100.0, "num_saves": 6, "eta": 1.0}


@pytest.mark.parametrize(
    ("name", "cfg", "stems"),
    [
        ("closed_form", {"simulation": SIM}, ["omega", "nc_metrics_ode"]),
        (
            "gd_convergence",
            {
                "simulation": {k: SIM[k] for k in ("classes", "per_class", "dim")},
                "t": 40.0,
                "etas": [4.0, 2.0, 1.0],
            },
            ["gd_convergence"],
        ),
        (
            "ufm_collapse",
            {"simulation": {**SIM, "flow": "ufm", "lam_w": 5e-3, "lam_h": 5e-3, "eta": 0.2}},
            ["loss_decomposition_gd"],
        ),
        (
            "digits_mlp",
            {
                "training": {
                    "epochs": 4,
                    "widths": [32, 16],
                    "per_class": 10,
                    "batch_size": 25,
                    "num_checkpoints": 4,
                }
            },
            ["measured_vs_predicted", "invariant"],
        ),
    ],
)
def test_experiment_smoke(tmp_path, name, cfg, stems):
    out = _load(name).main({**cfg, "name": name}, out_root=tmp_path)
    assert out == tmp_path / name
    assert (out / "results.npz").is_file() and (out / "config.toml").is_file()
    for stem in stems:
        assert (out / "figures" / f"{stem}.png").is_file()
    results = np.load(out / "results.npz")
    assert all(np.all(np.isfinite(results[k]) | np.isnan(results[k])) for k in results.files)
