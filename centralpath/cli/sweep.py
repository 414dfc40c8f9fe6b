"""`centralpath sweep CONFIG.toml`: many simulate configurations, batched per shape group."""

from __future__ import annotations

from ._common import enable_compilation_cache, log

HELP = (
    "Run the Cartesian product of a [sweep] table of simulate settings, one compiled call per "
    "shape group, sharded over devices; write one tidy results.csv."
)
EXAMPLE = "centralpath sweep sweep.toml --out runs/sweep --devices 4"


def register(p) -> None:
    p.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG.toml",
        help="simulate settings at top level and a [sweep] table of lists "
        "(optional with --resume: the saved config.toml is used)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="run directory to write (default runs/sweep-<time>)"
    )
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the interrupted sweep whose --out was DIR; finished groups are skipped",
    )
    p.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="shard the batch over the first N devices (default all)",
    )
    p.add_argument(
        "--precision",
        choices=["float64", "float32"],
        default=None,
        help="float64 (default; theory to 1e-12) or float32 (relative error of omega at t_end "
        "~2e-7 for the closed form, up to ~1e-4 after hundreds of GD steps; overrides the file)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")


def run(args) -> int:
    from pathlib import Path

    import jax

    from .._errors import require
    from .._float64 import set_precision
    from .._run.rundir import default_run_path, load_config
    from ..sweep import parse_sweep, write_sweep

    # The command line set x64 from --precision, which is None unless given: float64 until the
    # sweep file is read (it may ask for float32), also when reading it fails.
    set_precision("float32" if args.precision == "float32" else "float64")
    require(args.config or args.resume, "give a sweep file CONFIG.toml (or --resume DIR)")
    require(
        not (args.resume and args.out and Path(args.out) != Path(args.resume)),
        "--resume DIR continues DIR; drop --out (or give the same directory)",
    )
    require(not (args.resume and args.overwrite), "--resume and --overwrite exclude each other")
    if args.config:
        raw = load_config(args.config)
        source = f"sweep file {args.config}"
    else:
        saved = Path(args.resume).parent / f".{Path(args.resume).name}.partial" / "config.toml"
        require(
            saved.is_file(),
            f"no interrupted sweep to resume at {args.resume}; run without --resume",
        )
        raw = load_config(saved)
        source = f"sweep file {saved}"
    if args.precision is not None:
        raw = {**raw, "precision": args.precision}
    spec = parse_sweep(raw, source=source)
    # The command line set x64 from --precision before reading the file; the file decides.
    set_precision(spec.options["precision"])
    enable_compilation_cache()
    if args.devices is not None:  # before the run directory exists: a refusal leaves nothing
        available = jax.device_count()
        require(
            1 <= args.devices <= available,
            f"--devices must lie in 1..{available} (devices available: {available}), got "
            f"{args.devices}",
        )
    out = args.resume or args.out or default_run_path("sweep")
    emit = log(args)
    emit(spec.cost_line())
    path = write_sweep(
        spec,
        out,
        devices=args.devices,
        resume=bool(args.resume),
        overwrite=args.overwrite,
        log=emit,
        inputs=[args.config],
    )
    print(path)
    return 0
