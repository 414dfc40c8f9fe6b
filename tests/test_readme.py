"""The Python example of the guide "Simulate and compare flows" (docs/guides/simulate.md, once the
README's) runs, as written, on a trained network with dead units, and says what it claims: the
closed form of F3 equals the Diffrax solve."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "digits_mlp_final.npz"


def readme_example() -> str:
    guide = (ROOT / "docs" / "guides" / "simulate.md").read_text()
    return guide.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def run_example(features_path):
    code = readme_example()
    assert 'path = "runs/digits/features.npz"' in code
    ns = {}
    exec(code.replace("runs/digits/features.npz", str(features_path)), ns)
    return ns


def check(ns):
    d = ns["d"]
    assert_allclose(d.loss, d.nc1 + d.nc23 + d.perp, rtol=1e-12)
    assert np.all(np.isfinite(ns["omega"]))
    # The closed form of F3 and the Diffrax solve of the renormalised flow agree.
    assert_allclose(ns["traj"].metrics()["snr"], ns["omega_t"], rtol=1e-8)
    return d


def test_readme_example_on_a_trained_network_with_dead_units():
    with np.load(DATA) as f:
        dead = int(np.sum(np.ptp(f["features"][-1], axis=0) == 0))
    assert dead > 0  # the point of this file: Σ_W is singular
    ns = run_example(DATA)
    check(ns)
    # Dead units are dropped, not inverted.
    assert ns["X"].shape[1] == ns["features"].shape[1] - dead


@pytest.mark.slow
def test_readme_example_on_a_network_trained_by_train(tmp_path):
    """The same on a network this package trains now (as the guide says to)."""
    run = tmp_path / "digits"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "centralpath",
            "train",
            "--dataset",
            "digits",
            "--epochs",
            "60",
            "--out",
            str(run),
            "--quiet",
            "--no-figures",
        ],
        check=True,
    )
    check(run_example(run / "features.npz"))
