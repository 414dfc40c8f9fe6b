"""experiments/paper_figures.py on a tiny matrix (digits, an MLP, MSE and cross-entropy), and
the paper's figure set drawn from saved results only."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

pytest.importorskip("centralpath.networks")
from centralpath.plotting import paper  # noqa: E402

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"

TINY = {
    "name": "paper",
    "matrix": {"datasets": ["digits"], "models": ["mlp"], "losses": ["mse", "ce"]},
    "common": {"seed": 0, "num_checkpoints": 3, "batch_size": 25, "test_fraction": 0.2},
    "dataset": {"digits": {"per_class": 10, "epochs": 3}},
    "model": {"mlp": {"widths": [32, 16]}},
}


def _load():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        spec = importlib.util.spec_from_file_location(
            "paper_figures", EXPERIMENTS / "paper_figures.py"
        )
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(EXPERIMENTS))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    return _load().main(TINY, out_root=out, log=lambda s: None)


@pytest.mark.slow  # the tiny run trains two networks (~6 s)
def test_paper_figures_smoke(tiny_run):
    out = tiny_run
    results = dict(np.load(out / "results.npz"))
    assert paper.paper_runs(results) == ["digits-mlp-mse", "digits-mlp-ce"]
    for run in ("digits-mlp-mse", "digits-mlp-ce"):
        for key in ("times", "train_accuracy", "test_accuracy", "nc1", "nc3", "nc4", "perp_rel"):
            assert results[f"{run}/{key}"].shape == results[f"{run}/times"].shape, (run, key)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["runs"]) == {"digits-mlp-mse", "digits-mlp-ce"}
    table = summary["table"]
    assert table.count("\n| digits-mlp-") == 2 and "(CE: not least-squares)" in table
    # The run's config.toml reads back as the configuration (nested tables included).
    import tomllib

    assert tomllib.loads((out / "config.toml").read_text()) == TINY
    stems = {p.stem for p in (out / "figures").glob("*.png")}
    assert stems == {"paper_set"} | {spec[0] for spec in paper.PAPER_PANELS}


@pytest.mark.slow  # shares the tiny run
def test_every_panel_draws_every_run(tiny_run):
    results = dict(np.load(tiny_run / "results.npz"))
    fig = paper.figure_paper_set(results)
    try:
        titles = [ax.get_title() for ax in fig.axes]
        assert len(titles) == len(paper.PAPER_PANELS)
        for ax, spec in zip(fig.axes, paper.PAPER_PANELS, strict=True):
            labels = [line.get_label() for line in ax.get_lines()]
            expected = ["digits MLP MSE"] if spec[4] else ["digits MLP MSE", "digits MLP CE"]
            assert [x for x in labels if "float64" not in x] == expected, spec[0]
    finally:
        plt.close(fig)


def test_rounding_noise_is_not_drawn():
    t = np.array([0.0, 1.0, 2.0, 4.0])
    results = {
        "a-mlp-mse/times": t,
        "a-mlp-mse/nc1": np.array([1.0, 1e-3, 1e-20, 0.0]),  # the last two: rounding of 0
        "a-mlp-mse/perp_rel": np.array([0.5, 0.1, 1e-15, 1e-12]),
    }
    fig = paper.figure_paper_quantity(results, "nc1")
    try:
        (ax,) = fig.axes
        data, floor = ax.get_lines()
        y = data.get_ydata()
        assert np.isfinite(y[:2]).all() and np.isnan(y[2:]).all()
        assert "float64 resolution" in floor.get_label()
        np.testing.assert_allclose(floor.get_ydata(), paper.RESOLUTION * 1.0)
    finally:
        plt.close(fig)
    fig = paper.figure_paper_quantity(results, "perp_rel")
    try:
        y = fig.axes[0].get_lines()[0].get_ydata()
        assert np.isnan(y[2]) and np.isfinite(y[3])  # 1e-15 < 10³ε ≈ 2.2e-13 < 1e-12
    finally:
        plt.close(fig)
