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


#: The κ clocks (`predictive.KAPPA_CLOCKS`) as both `compare --clock` and `simulate --from
#: --clock` state them: one text, so the two commands cannot describe a clock differently.
KAPPA_CLOCKS_HELP = (
    "t = kappa * sum over epochs of: lr (eta_eff = lr * steps_per_epoch / (1 - momentum)), "
    "lr-loss (eta_eff * the epoch's mean training loss), lr-grad (eta_eff * its mean "
    "squared feature gradient), lr-loss-epoch (lr / (1 - momentum) * loss, per epoch not "
    "per step)"
)


def add_kappa_options(p, *, kappa_default: str) -> None:
    """`--kappa K` and `--kappa-from COMPARE.json`, the scale of a κ clock: compare's and
    `simulate --from`'s, one definition (`kappa_default`: what the command does without them)."""
    p.add_argument("--kappa", type=float, help=f"a kappa clock's scale ({kappa_default})")
    p.add_argument(
        "--kappa-from",
        dest="kappa_from",
        metavar="COMPARE.json",
        help="read kappa from another run's compare --clock CLOCK --json with the same clock "
        "(the out-of-sample test)",
    )


def check_kappa_scale(kappa, kappa_from, clock: str | None) -> None:
    """One-line refusals of `add_kappa_options`' values, compare's and `simulate --from`'s
    alike: one scale at most, only with a κ clock, κ > 0."""
    from .._errors import require, require_real
    from ..measurement.predictive import KAPPA_CLOCKS

    require(
        kappa is None or kappa_from is None,
        "give the clock's scale once: --kappa K or --kappa-from COMPARE.json, not both",
    )
    require(
        (kappa is None and kappa_from is None) or clock in KAPPA_CLOCKS,
        f"--kappa and --kappa-from set the scale of a clock with one; add --clock with one of "
        f"{', '.join(KAPPA_CLOCKS)}",
    )
    if kappa is not None:
        require_real("--kappa", kappa, 0, lo_open=True)


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


def write_output_json(path, obj, flag: str = "--json") -> None:
    """Write a JSON output atomically; a file-system fault is one line naming the path."""
    from .._errors import InputError
    from .._run.rundir import os_error_message
    from ..measurement._io import write_json

    try:
        write_json(path, obj)
    except OSError as e:
        raise InputError(os_error_message(e, path, flag)) from None


def check_resume_flags(args, saved: dict, keys, run_dir) -> None:
    """`--resume` continues the saved configuration: a flag that says otherwise is refused (it
    would be silently ignored, or mix two configurations in one run), and so are --out naming
    another directory and --overwrite."""
    from pathlib import Path

    from .._errors import InputError, require

    out = getattr(args, "out", None)
    require(
        out is None or Path(out) == run_dir.path,
        f"--resume writes to {run_dir.path}; drop --out (or give the same directory)",
    )
    require(
        not getattr(args, "overwrite", False),
        "--resume and --overwrite exclude each other: --resume continues the partial run, "
        "--overwrite starts afresh",
    )
    for key in keys:
        given = getattr(args, key, None)
        if given is None or key not in saved:
            continue
        value = saved[key]
        seqs = isinstance(given, list | tuple) and isinstance(value, list | tuple)
        same = list(given) == list(value) if seqs else given == value
        if not same:
            flag = f"--{key.replace('_', '-')}"
            raise InputError(
                f"--resume with changed flags is refused: {flag} {given!r} differs from the "
                f"saved {key} = {value!r}; drop the {flag} flag to continue the saved run, or "
                "start a new one with another --out"
            )
