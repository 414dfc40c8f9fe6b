"""Shared plumbing of the experiment scripts: read the TOML next to the script, write
<out>/<name>/ (results.npz, results.csv, config.toml, figures) atomically.

Every script takes `[CONFIG.toml] [--out DIR | --out=DIR]`. Without `--out` a run goes to
`runs/<name>` (ignored by git), so trying a script never touches the committed reference
figures; `python experiments/regenerate_figures.py` is the one command that rewrites `figures/`.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


#: Where a script writes when `--out` is not given: never the committed `figures/`.
DEFAULT_OUT = ROOT / "runs"
#: The committed reference figures (written by `regenerate_figures.py` only).
FIGURES = ROOT / "figures"


def load_cfg(script: str, argv: list[str]) -> dict:
    path = Path(argv[1]) if len(argv) > 1 else Path(script).with_suffix(".toml")
    return tomllib.loads(path.read_text())


def parse_args(script: str, argv: list[str], more: str = "") -> tuple[dict, Path]:
    """(config, output root) from `script [CONFIG.toml] [--out DIR | --out=DIR]`; `-h`/`--help`
    prints the script's docstring and the usage line (with `more`, the script's own options),
    and exits 0."""
    if any(a in ("-h", "--help") for a in argv[1:]):
        import ast

        doc = ast.get_docstring(ast.parse(Path(script).read_text())) or ""
        usage = f"usage: python {Path(script).name} [CONFIG.toml] [--out DIR]" + (
            f" {more}" if more else ""
        )
        print(f"{doc}\n\n{usage}")
        raise SystemExit(0)
    rest, out = [argv[0]], DEFAULT_OUT
    args = iter(argv[1:])
    for a in args:
        if a == "--out":
            value = next(args, "")
            if not value:
                raise SystemExit(f"{Path(script).name}: --out needs a folder, e.g. --out runs/mine")
            out = Path(value)
        elif a.startswith("--out="):
            if not a[len("--out=") :]:
                raise SystemExit(f"{Path(script).name}: --out needs a folder, e.g. --out=runs/mine")
            out = Path(a[len("--out=") :])
        else:
            rest.append(a)
    if len(rest) > 2:
        raise SystemExit(f"usage: python {Path(script).name} [CONFIG.toml] [--out DIR]")
    return load_cfg(script, rest), out


def write_figures(
    name: str, kind: str, results: dict, cfg: dict, out_root: Path | None = None
) -> Path:
    from centralpath._run.rundir import RunDir
    from centralpath.plotting import draw_run

    out = (DEFAULT_OUT if out_root is None else Path(out_root)) / name
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


__all__ = ["load_cfg", "parse_args", "write_figures", "enable_x64", "sys", "FIGURES"]
