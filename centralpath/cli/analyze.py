"""`centralpath analyze FEATURES.npz`: neural-collapse metrics and the loss decomposition."""

from __future__ import annotations

import sys

HELP = "Measure a features file: NC1-NC4, SNR singular values, loss decomposition per checkpoint."
EXAMPLE = "centralpath analyze run/features.npz --json run/analysis.json"


#: What the table's columns are (docs/theory.md §3, §5, §7), printed under it.
TABLE_LEGEND = (
    "legend: NC1 = Tr(Sigma_W Sigma_B^+)/C (within-class variability); NC2 norm / angle = "
    "equinorm / equiangularity of the class means; NC3 = distance of W to the class means; "
    "NC4 = fraction of samples the classifier and the nearest class mean disagree on; "
    "L = L_NC1 + L_NC2/3 + L_perp (the MSE loss at the weight decay); L_perp/L and |W-W_LS| = "
    "distance of the classifier from least squares (0 on the central path); omega = SNR "
    "singular values (they grow as features collapse); - = not measured (no classifier)"
)


def register(p) -> None:
    p.add_argument(
        "features",
        help="features or statistics file (.npz), or a folder of per-checkpoint .npz files or of "
        ".npy members (schemas in docs/reference/file-formats.md); read one checkpoint at a time",
    )
    p.add_argument("--json", metavar="OUT", help="also write the records as JSON")
    p.add_argument(
        "--save-stats",
        metavar="STATS",
        help="also write the class statistics of every checkpoint (counts, class means, "
        "Sigma_W, W, b, NC4 count) as a statistics file, which analyze and compare accept in "
        "place of the features",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        metavar="LAMBDA",
        help="ridge λ (paper scale) for the least-squares classifier; default: the file's weight_decay",
    )
    p.add_argument(
        "--rtol",
        type=float,
        default=1e-10,
        help="dead directions: eigenvalues of Sigma_T at most rtol times the largest (default 1e-10; docs/theory.md)",
    )


def run(args) -> int:
    import contextlib

    from .._errors import require
    from .._run.rundir import check_output_file
    from ..measurement._report import checkpoint_records, least_squares_warning
    from ..measurement._stream import StatsWriter, open_source, record_of
    from ..measurement.analysis import analyze
    from ._common import write_output_json
    from ._table import table

    require(args.rtol > 0 and args.rtol < 1, f"--rtol must lie in (0, 1), got {args.rtol}")
    require(
        args.weight_decay is None or 0 <= args.weight_decay < float("inf"),  # nan, inf refused
        f"--weight-decay must be a finite number >= 0, got {args.weight_decay}",
    )
    if args.json:  # before the work: `--json` naming the input (or a folder) fails at once
        check_output_file(args.json, inputs=[args.features])
    if args.save_stats:
        check_output_file(args.save_stats, inputs=[args.features, args.json], flag="--save-stats")
    # Streamed: one checkpoint at a time, samples in chunks (memory independent of n and K).
    ff = open_source(args.features)
    writer = None
    if args.save_stats:
        writer = StatsWriter(args.save_stats, ff.num_classes, ff.dim, ff.num_checkpoints)
    with writer if writer is not None else contextlib.nullcontext():
        records = analyze(
            ff,
            weight_decay=args.weight_decay,
            rtol=args.rtol,
            on_checkpoint=None if writer is None else writer.add,
        )
        if writer is not None:
            writer.close(weight_decay=ff.weight_decay, **record_of(ff))
    warning = least_squares_warning(ff, records)
    if warning:
        print(f"centralpath analyze: warning: {warning}", file=sys.stderr)
    records = checkpoint_records(ff, records)
    if any(r.get("ls_singular") for r in records):
        print(
            "centralpath analyze: warning: the least-squares normal matrix is singular at some "
            "checkpoints (p > n-1, dead units or collapsed features); used its pseudo-inverse — "
            "pass --weight-decay > 0 for a ridge instead",
            file=sys.stderr,
        )
    coinciding = [r["epoch"] for r in records if r.get("coinciding_means")]
    if coinciding:
        print(
            f"centralpath analyze: warning: two class means coincide at {len(coinciding)} "
            f"checkpoint(s) (first: epoch {coinciding[0]:g}): NC1, NC2 and omega_j there "
            "describe fewer than C distinct classes (an omega_j is 0); check the labels",
            file=sys.stderr,
        )
    beyond = [r["epoch"] for r in records if r.get("snr_beyond_resolution")]
    if beyond:
        print(
            f"centralpath analyze: note: at {len(beyond)} checkpoint(s) (first: epoch "
            f"{beyond[0]:g}) some omega_j are collapsed beyond float64 resolution and shown as "
            "inf (null in JSON; snr_beyond_resolution = true): the within-class variance along "
            "the class means is too small a fraction of the total to measure",
            file=sys.stderr,
        )
    if args.json:
        write_output_json(args.json, {"checkpoints": records})
    if not args.quiet:
        rows = []
        for r in records:
            row = dict(r)
            snr = r["snr"]
            row["snr_min"], row["snr_max"] = min(snr), max(snr)
            rows.append(row)
        # Accuracies first when the file records them: collapse is read against them.
        extra = [k for k in ("train_accuracy", "test_accuracy") if k in records[0]]
        from .._quantities import table_columns

        # The quantities' own column heads (centralpath._quantities), then the SNR's range.
        cols, heads = table_columns(records[0])
        cols = ["epoch", *extra, *cols, "snr_min", "snr_max"]
        heads = [
            "epoch",
            *(k.replace("_accuracy", " acc") for k in extra),
            *heads,
            "omega_min",
            "omega_max",
        ]
        print(table(rows, cols, heads))
        print(TABLE_LEGEND)
    return 0
