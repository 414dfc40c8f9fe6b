"""The measured quantities, each declared once: its name, description and unit.

`simulate`'s series (`METRIC_KEYS`), `analyze`'s records (`RECORD_KEYS`), the command line's
tables and the figures' series are views of `QUANTITIES`, never lists of their own, so that a
quantity added or renamed here reaches all of them. Plain data: importing this loads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quantity:
    """One quantity of a snapshot or a checkpoint (docs/theory.md names each).

    - `name`: the key in results, records and JSON.
    - `group`: `loss` (the objective and its decomposition), `collapse` (NC1–NC4 and the ETF
      distance) or `snr` (the singular values ω_j and their flags).
    - `description`, `unit`: what it is and what it is measured in.
    - `head`: its column head in `centralpath analyze`'s table (None: not a column).
    - `series`: a series of a simulation (`simulate`, sweeps) at every save time.
    - `record`: a key of `analyze`'s per-checkpoint records.
    - `figure`: a series of each run of the paper's figures (experiments/paper_figures.py).
    - `kind`: its JSON value: `number` (null when not finite or not measured), `boolean`, or
      `vector` (a list of numbers, largest first; null entries beyond float64 resolution).
    """

    name: str
    group: str
    description: str
    unit: str
    head: str | None = None
    series: bool = True
    record: bool = True
    figure: bool = True
    kind: str = "number"


LOSS = "loss (½ Ave‖W h + b − y‖² + ridge, the paper's scale)"
RATIO = "dimensionless ratio"

QUANTITIES: tuple[Quantity, ...] = (
    Quantity(
        "objective",
        "loss",
        "the flow's objective (the UFM's regularised loss; L for the others)",
        LOSS,
        record=False,
        figure=False,
    ),
    Quantity("loss", "loss", "L, the MSE loss of the least-squares decomposition", LOSS, "L"),
    Quantity("loss_nc1", "loss", "L_NC1, the part of L due to within-class variability", LOSS,
             "L_NC1"),
    Quantity("loss_nc23", "loss", "L_NC2/3, the part of L due to the class means", LOSS,
             "L_NC2/3"),
    Quantity("loss_perp", "loss", "L_⊥LS, the part of L off the least-squares classifier", LOSS,
             "L_perp"),
    Quantity("perp_rel", "loss", "L_⊥LS / L, the distance from the central path", RATIO,
             "L_perp/L", record=False),
    Quantity(
        "w_ls_distance",
        "loss",
        "‖W̃ − W̃_LS‖ / ‖W̃_LS‖, the classifier's distance from least squares",
        RATIO,
        "|W-W_LS|",
        figure=False,
    ),
    Quantity("nc1", "collapse", "NC1, within-class variability relative to between-class",
             RATIO, "NC1"),
    Quantity("nc2_equinorm_means", "collapse", "NC2, spread of the centred class-mean norms",
             RATIO, "NC2 norm"),
    Quantity("nc2_equinorm_classifier", "collapse", "NC2, spread of the classifier's row norms",
             RATIO),
    Quantity("nc2_equiangular_means", "collapse",
             "NC2, spread of the cosines between centred class means", RATIO, "NC2 angle"),
    Quantity("nc2_equiangular_classifier", "collapse",
             "NC2, spread of the cosines between classifier rows", RATIO),
    Quantity("etf_distance", "collapse", "distance of the class means' Gram from a simplex ETF",
             RATIO, record=False, figure=False),
    Quantity("nc3", "collapse", "NC3, distance between the normalised classifier and centred class means",
             RATIO, "NC3"),
    Quantity("nc4", "collapse", "NC4, fraction of samples where the classifier and the nearest class mean disagree",
             "fraction of samples", "NC4"),
    Quantity("snr", "snr", "ω_j, the singular values of Σ_W^{-1/2} M̄ (the SNR matrix)",
             "dimensionless, C − 1 values", figure=False, kind="vector"),
    Quantity("snr_beyond_resolution", "snr",
             "some ω_j collapsed beyond float64 resolution (shown as inf, written as null)",
             "boolean", figure=False, kind="boolean"),
    Quantity("coinciding_means", "snr", "two class means coincide (an ω_j is 0)", "boolean",
             series=False, figure=False, kind="boolean"),
)  # fmt: skip

#: What a record of `analyze --json` (and of `compare --json`'s checkpoints) carries beside
#: `QUANTITIES`' records: the checkpoint, flags of the solve, and the training record copied
#: from the features file where it has them (`required=False`).
_CHECKPOINT_ONLY = dict(series=False, figure=False, record=False)
RECORD_EXTRAS: tuple[Quantity, ...] = (
    Quantity("epoch", "checkpoint", "the checkpoint's epoch", "epochs", **_CHECKPOINT_ONLY),
    Quantity("ls_singular", "loss",
             "the least-squares classifier's system is singular (solved by pseudo-inverse)",
             "boolean", kind="boolean", **_CHECKPOINT_ONLY),
    Quantity("train_accuracy", "training", "training accuracy at the checkpoint (from the file)",
             "fraction of samples", **_CHECKPOINT_ONLY),
    Quantity("test_accuracy", "training", "held-out accuracy at the checkpoint (from the file)",
             "fraction of samples", **_CHECKPOINT_ONLY),
    Quantity("test_loss", "training", "held-out loss at the checkpoint (from the file)", LOSS,
             **_CHECKPOINT_ONLY),
)  # fmt: skip

BY_NAME: dict[str, Quantity] = {q.name: q for q in (*QUANTITIES, *RECORD_EXTRAS)}


def _in_order(groups: tuple[str, ...], use: str) -> tuple[str, ...]:
    return tuple(q.name for g in groups for q in QUANTITIES if q.group == g and getattr(q, use))


#: A simulation's quantities per save time: the loss first, then collapse, then the SNR.
METRIC_KEYS: tuple[str, ...] = _in_order(("loss", "collapse", "snr"), "series")
#: `analyze`'s record of a checkpoint: its epoch, collapse, the loss, then the SNR.
RECORD_KEYS: tuple[str, ...] = ("epoch", *_in_order(("collapse", "loss", "snr"), "record"))
#: The series of each run of the paper's figures (collapse, then the loss terms).
FIGURE_KEYS: tuple[str, ...] = _in_order(("collapse", "loss"), "figure")
#: The training record's per-checkpoint keys copied from a features file into each record.
RECORD_FROM_FILE: tuple[str, ...] = tuple(q.name for q in RECORD_EXTRAS if q.group == "training")
#: Every key of a record of `analyze --json`: the record, the derived keys, the file's keys.
JSON_RECORD_KEYS: tuple[str, ...] = (
    *RECORD_KEYS,
    "etf_distance",
    "ls_singular",
    "perp_rel",
    *RECORD_FROM_FILE,
)


def record_schema() -> dict:
    """The JSON Schema (draft 2020-12) of `analyze --json`'s output, `{"checkpoints": [record,
    …]}`, read from the declarations above. `compare --json` writes records of the same shape
    with the fit's keys added, so records allow further keys."""
    json_type = {
        "number": {"type": ["number", "null"]},
        "boolean": {"type": "boolean"},
        "vector": {"type": ["array", "null"], "items": {"type": ["number", "null"]}},
    }
    properties = {}
    for key in JSON_RECORD_KEYS:
        q = BY_NAME[key]
        properties[key] = {**json_type[q.kind], "description": f"{q.description} [{q.unit}]"}
    required = [k for k in JSON_RECORD_KEYS if k not in RECORD_FROM_FILE]
    record = {"type": "object", "properties": properties, "required": required}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "centralpath analyze --json",
        "type": "object",
        "properties": {"checkpoints": {"type": "array", "items": record}},
        "required": ["checkpoints"],
    }


def table_columns(keys) -> tuple[list[str], list[str]]:
    """(keys, heads) of the quantities among `keys` that are table columns, collapse first."""
    cols = [
        q.name
        for g in ("collapse", "loss")
        for q in QUANTITIES
        if q.group == g and q.head and q.name in keys
    ]
    return cols, [BY_NAME[k].head for k in cols]
