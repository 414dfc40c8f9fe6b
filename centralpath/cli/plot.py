"""`centralpath plot RUN`: redraw the figures of a saved run from its results.npz alone."""

from __future__ import annotations

HELP = "Redraw the figures of a run directory from its saved results (no recomputation)."
EXAMPLE = "centralpath plot runs/demo"

#: The commands whose run directories hold figures (a sweep's holds a table).
DRAWN = ("simulate", "train", "compare", "demo")


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
    if kind not in (*DRAWN, "run") and not kind.startswith("experiment "):  # run: no metadata
        raise InputError(
            f"{args.run} was written by {kind!r}, whose results plot does not draw; plot draws "
            f"the runs of {', '.join(DRAWN)} and of the experiment scripts"
        )
    try:
        from ..plotting import draw_run, read_run_config
    except ImportError as e:
        raise InputError(
            f"plotting needs matplotlib ({e}); pip install 'centralpath[plot]'"
        ) from None
    config = read_run_config(args.run)  # the titles name the run's configuration
    try:
        paths = draw_run(kind, results, Path(args.to) if args.to else Path(args.run), config)
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
