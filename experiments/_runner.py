"""Shared plumbing of the experiment scripts: read the TOML next to the script, write
figures/<name>/ (results.npz, results.csv, config.toml, figures) atomically."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_cfg(script: str, argv: list[str]) -> dict:
    path = Path(argv[1]) if len(argv) > 1 else Path(script).with_suffix(".toml")
    return tomllib.loads(path.read_text())


def write_figures(
    name: str, kind: str, results: dict, cfg: dict, out_root: Path | None = None
) -> Path:
    from centralpath._rundir import RunDir
    from centralpath.plotting import draw_run

    out = (out_root or ROOT / "figures") / name
    run = RunDir(out, f"experiment {name}", cfg, overwrite=True)
    try:
        run.save_results(results)
        draw_run(kind, results, run.partial)
        return run.finish()
    except BaseException:
        run.abandon()
        raise


def enable_x64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


__all__ = ["load_cfg", "write_figures", "enable_x64", "sys"]
