"""Regenerate the committed reference figures in `figures/`: the one command that writes there.

    python experiments/regenerate_figures.py [NAME ...]

runs each experiment script with its TOML config and `--out figures` (all of them by default:
closed_form, gd_convergence, ufm_collapse, digits_mlp, paper — the last trains 12 networks, ~20
minutes on two cores). Every other way of running a script writes to `runs/` (or its `--out`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _runner import FIGURES

EXPERIMENTS = Path(__file__).resolve().parent
SCRIPTS = ("closed_form", "gd_convergence", "ufm_collapse", "digits_mlp", "paper_figures")


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        print(
            f"unknown figure set {unknown[0]!r}; choose from {', '.join(SCRIPTS)}", file=sys.stderr
        )
        return 2
    for name in names or SCRIPTS:
        script = EXPERIMENTS / f"{name}.py"
        cmd = [sys.executable, str(script), str(script.with_suffix(".toml")), "--out", str(FIGURES)]
        print(" ".join(cmd), flush=True)
        code = subprocess.call(cmd)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
