# %% [markdown]
# # Does the theory predict the network?
#
# A fit with a free time per checkpoint absorbs anything; a prediction does not. `compare`
# starts each model (the closed form, the central-path flow, the unconstrained-features
# model) from the network's own state at a checkpoint e0, runs it forward, and scores it against
# the ω_j the network reaches later and against the no-change baseline
# ([the guide](../guides/predict.md)).

# %%
import os
import subprocess
import tempfile
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import centralpath as cp
from centralpath.measurement.predictive import results_series
from centralpath.plotting.compare import figure_models

TINY = os.environ.get("CENTRALPATH_EXAMPLES_TINY") == "1"  # the test suite's sizes
work = Path(tempfile.mkdtemp())

# %%
subprocess.run(
    ["centralpath", "train", "--dataset", "digits", "--model", "mlp", "--loss", "mse",
     "--epochs", "6" if TINY else "200", "--num-checkpoints", "5" if TINY else "25",
     "--out", str(work / "digits"), "--quiet", "--no-figures"],
    check=True,
)  # fmt: skip
ff = cp.load_features(work / "digits" / "features.npz")

# %% [markdown]
# Each model from the automatic start (the first checkpoint near the central path), with the
# monotone clock. The verdict reads the scores against stated thresholds; `not-applicable`
# says why the theory does not apply (cross-entropy, far from the central path, no collapse
# to predict).

# %%
measurement, records, predictions = cp.compare_models(ff, ["closed-form", "central-path", "ufm"])
for p in predictions:
    n = p.numbers
    print(
        f"{p.model:13s} from epoch {p.from_epoch}: median error {n['median_relative_error']}, "
        f"skill {n['skill']}, verdict {p.verdict} ({p.reason})"
    )

# %%
results = {**results_series(measurement, predictions)}
fig = figure_models(results)
fig  # a notebook shows the last expression

# %% [markdown]
# The command line does the same and writes the JSON and the figures:
# `centralpath compare features.npz --json compare.json --out compare` (every model by
# default; the verdict that answers is the central path's).
