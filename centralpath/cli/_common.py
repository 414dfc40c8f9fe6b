"""Options and helpers shared by the subcommands that write run directories."""

from __future__ import annotations

import sys


def add_run_options(p) -> None:
    p.add_argument(
        "--config", metavar="FILE.toml", help="read options from a TOML file; flags override it"
    )
    p.add_argument(
        "--out", metavar="DIR", help="run directory to write (default runs/<command>-<time>)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-figures", action="store_true", help="skip drawing figures")


def positive_int(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    return v


def float_list(text: str) -> list[float]:
    import argparse

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like 1,10,100, got {text!r}"
        ) from None


def log(args):
    def emit(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    return emit


def enable_compilation_cache() -> None:
    """Reuse compiled XLA programs across runs (user cache dir); speeds up repeated commands."""
    import os
    from pathlib import Path

    import jax

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "centralpath" / "jax"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except OSError:
        pass


def draw_figures(kind: str, run_path, results, args) -> None:
    """Draw the figures of a run if matplotlib is installed (the `plot` extra)."""
    if getattr(args, "no_figures", False):
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log(args)("matplotlib is not installed: no figures (pip install 'centralpath[plot]')")
        return
    from ..plotting import draw_run

    draw_run(kind, results, run_path)
