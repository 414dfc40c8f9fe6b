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
    from pathlib import Path

    from .._errors import InputError
    from .._run.rundir import verify_run

    # Checked against what the run recorded when it finished, before anything is drawn.
    kind, results = verify_run(args.run)
    try:
        from ..plotting import draw_run
    except ImportError as e:
        raise InputError(
            f"plotting needs matplotlib ({e}); pip install 'centralpath[plot]'"
        ) from None
    try:
        paths = draw_run(kind, results, Path(args.to) if args.to else Path(args.run))
    except (KeyError, IndexError, ValueError, TypeError) as e:
        # Only a run written before its results were recorded gets here with results of
        # another shape than its command draws (a recorded run is verified above).
        raise InputError(
            f"{Path(args.run) / 'results.npz'} does not hold what a {kind} run draws "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
            "re-run the command that made it"
        ) from None
    if not args.quiet:
        for p in paths:
            print(p)
    return 0
