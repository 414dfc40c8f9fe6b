"""The example notebooks (jupytext scripts under docs/examples/, executed when the site is
built) run at the tiny sizes CENTRALPATH_EXAMPLES_TINY=1 selects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))


def test_there_are_the_four_examples():
    assert {p.stem for p in EXAMPLES} >= {
        "renormalised_flow",
        "measure_network",
        "predict_network",
        "paper_figures",
    }


@pytest.mark.slow  # the notebooks in fresh processes; the site build executes them too
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_at_tiny_sizes(example, tmp_path):
    text = example.read_text()
    assert text.startswith("# %% [markdown]")  # jupytext percent format, opening with its title
    assert 'os.environ.get("CENTRALPATH_EXAMPLES_TINY") == "1"' in text
    env = dict(os.environ, CENTRALPATH_EXAMPLES_TINY="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, str(example)],
        cwd=example.parent,  # as mkdocs-jupyter runs it
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
