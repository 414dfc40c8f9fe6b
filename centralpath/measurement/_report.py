"""What `analyze` and `compare` report per checkpoint, in one shape, and the warning for a
classifier that the MSE decomposition does not describe."""

from __future__ import annotations

from .._quantities import RECORD_FROM_FILE as RECORD_FROM_FILE

#: L_⊥LS/L at or above this at every checkpoint: the classifier is at least as far from the
#: least-squares one as the whole loss is large — what a network trained with cross-entropy
#: shows (its logits grow without bound, L_⊥LS/L → 1), never one trained with MSE near the
#: central path (docs/theory.md §7½: ~0.4 at initialisation, ~0.003 after training).
FAR_FROM_LEAST_SQUARES = 0.5


def perp_rel(record: dict) -> float | None:
    """L_⊥LS/L of one record (None without a classifier; 0 for L = 0)."""
    loss = record.get("loss")
    if loss is None:
        return None
    return record["loss_perp"] / loss if loss else 0.0


def checkpoint_records(ff, records: list[dict]) -> list[dict]:
    """`analyze`'s records with L_⊥LS/L and, where the file has them, the accuracies and the
    test loss at that checkpoint: the one per-checkpoint shape of `analyze --json` and
    `compare --json` (`{"checkpoints": [{"epoch": …, …}, …]}`)."""
    out = []
    for k, r in enumerate(records):
        row = dict(r)
        row["perp_rel"] = perp_rel(r)
        for key in RECORD_FROM_FILE:
            series = getattr(ff, key, None)
            if series is not None:
                row[key] = float(series[k])
        out.append(row)
    return out


def least_squares_warning(ff, records: list[dict]) -> str | None:
    """One line when the MSE decomposition does not describe how the network was trained: the
    file says `loss = "ce"`, or (without that key) L_⊥LS/L ≥ 0.5 at every checkpoint after the
    first."""
    why = None
    if getattr(ff, "loss", None) == "ce":
        why = "the network was trained with cross-entropy (the file's loss = 'ce')"
    elif getattr(ff, "loss", None) is None:
        # After the first checkpoint: at initialisation neither loss has shaped the classifier
        # (L_perp/L ≈ 0.3–0.7 for MSE and CE alike), so it would hide a CE run.
        later = records[1:] if len(records) > 1 else records
        ratios = [perp_rel(r) for r in later]
        if ratios and all(x is not None and x >= FAR_FROM_LEAST_SQUARES for x in ratios):
            why = (
                f"L_perp/L >= {FAR_FROM_LEAST_SQUARES:g} at every checkpoint after the first (min "
                f"{min(ratios):.2g}), as for a network trained with cross-entropy"
            )
    if why is None:
        return None
    return (
        f"{why}: L and its decomposition are of the MSE loss, and the classifier is not "
        "least-squares, so L_perp/L and |W-W_LS| measure the distance to a classifier this "
        "training never sought; NC1-NC4 and omega_j are unaffected"
    )


__all__ = ["checkpoint_records", "least_squares_warning", "perp_rel"]
