"""`centralpath plot RUN`: redraw the figures of a saved run from its results.npz alone."""

from __future__ import annotations

HELP = "Redraw the figures of a run directory from its saved results (no recomputation)."
EXAMPLE = "centralpath plot runs/demo"


def register(p) -> None:
    p.add_argument("run", help="a run directory written by centralpath")
    p.add_argument(
        "--to", metavar="DIR", help="write the figures under DIR/figures instead of RUN/figures"
    )


def run(args) -> int:
    import json
    from pathlib import Path

    from .._errors import InputError
    from .._rundir import load_results

    results = load_results(args.run)
    kind = "run"
    meta = Path(args.run) / "metadata.json"
    if meta.is_file():
        try:
            kind = json.loads(meta.read_text()).get("command", "run")
        except json.JSONDecodeError:
            pass
    try:
        from ..plotting import draw_run
    except ImportError as e:
        raise InputError(
            f"plotting needs matplotlib ({e}); pip install 'centralpath[plot]'"
        ) from None
    paths = draw_run(kind, results, Path(args.to) if args.to else Path(args.run))
    if not args.quiet:
        for p in paths:
            print(p)
    return 0
