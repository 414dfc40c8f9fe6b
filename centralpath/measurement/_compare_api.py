"""`cp.compare`: does the theory predict my network? — `centralpath compare --model …` from Python.

The work is `predictive.compare_models`; this is its face: a path is read as the command line
reads it, the call runs in float64 whatever `jax_enable_x64`, and the result reads itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._float64 import float64_process
from .._linalg import DEFAULT_RTOL
from . import predictive


@dataclass(frozen=True)
class Comparison:
    """What `compare` found: `predictions` (one `predictive.Prediction` per model, with its
    `verdict`, `reason`, per-checkpoint series and `summary()`), `records` (`analyze`'s, one per
    checkpoint) and `measurement` (the measured ω_j, NC1, L_⊥LS/L and training record)."""

    measurement: predictive.Measurement
    records: list
    predictions: list

    @property
    def verdicts(self) -> dict[str, str]:
        """{model: verdict}: `consistent`, `inconsistent` or `not-applicable`."""
        return {p.model: p.verdict for p in self.predictions}

    def __repr__(self) -> str:
        lines = [f"Comparison({len(self.records)} checkpoints, {len(self.predictions)} model(s))"]
        for p in self.predictions:
            lines.append(f"  {p.model}: {p.verdict}: {p.reason}")
        return "\n".join(lines)


def _source(features):
    if isinstance(features, str | os.PathLike):
        from ._stream import open_source

        return open_source(features)
    return features


@float64_process
def compare_models(features, models=predictive.MODELS, **options):
    """`predictive.compare_models` at the package's face: a path or a loaded file, in float64.

    **Arguments:**

    - `features`: a features file's path (read streamed, as the command line does), or a
      `FeaturesFile` of `load_features`.
    - `models`: names of `predictive.MODELS` ("closed-form", "central-path", "ufm").
    - `options`: `from_epoch` ("auto" or an epoch), `clock` ("monotone" or "lr"), `kappa`,
      `kappa_from`, `weight_decay`, `rtol` — the command line's flags of the same names.

    **Returns:** (the `Measurement`, `analyze`'s records, one `Prediction` per model).

    ```python
    import centralpath as cp

    measurement, records, predictions = cp.compare_models("runs/digits/features.npz", ["ufm"])
    print(predictions[0].verdict, predictions[0].reason)
    ```
    """
    from .compare import check_epochs

    ff = _source(features)
    check_epochs(ff.epochs)  # a prediction runs forward in time: epochs must increase
    return predictive.compare_models(ff, list(models), **options)


def compare(
    features,
    *,
    models=predictive.MODELS,
    from_epoch="auto",
    clock: str = "monotone",
    weight_decay: float | None = None,
    rtol: float = DEFAULT_RTOL,
) -> Comparison:
    """Does the theory predict this network? Each model starts from the network's own state at a
    checkpoint e0 and runs forward; its ω_j are scored against the measured ones at every later
    checkpoint and against the no-change baseline (docs/theory.md §8).

    **Arguments:**

    - `features`: a features file's path (`centralpath train` writes one), or a `FeaturesFile`.
    - `models`: which models (`predictive.MODELS`, all by default): the closed form of F3, the
      central-path flow F2 and the UFM F1.
    - `from_epoch`: e0 — "auto" (the first checkpoint with L_⊥LS/L ≤ 0.1) or an epoch.
    - `clock`: how epochs map to model time — "monotone" (fitted, non-decreasing) or "lr" (the
      learning-rate schedule times one fitted scale κ).
    - `weight_decay`: λ (paper scale) instead of the file's; `rtol`: as in `analyze`.

    **Returns:** a `Comparison`: `verdicts` ({model: "consistent" | "inconsistent" |
    "not-applicable"}), `predictions` (each with its `reason`, median relative error, baseline
    and skill in `numbers`), `records` and `measurement`. Computed in float64 whatever
    `jax_enable_x64`.

    ```python
    import centralpath as cp

    result = cp.compare("runs/digits/features.npz")
    print(result)  # one line per model: its verdict and why
    ```
    """
    measurement, records, predictions = compare_models(
        features,
        models,
        from_epoch=from_epoch,
        clock=clock,
        weight_decay=weight_decay,
        rtol=rtol,
    )
    return Comparison(measurement, records, predictions)
