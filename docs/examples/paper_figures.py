# %% [markdown]
# # The paper's figure set at small scale
#
# The paper's empirical figures: train and test accuracy, NC1, NC2 (means and classifier), NC3,
# NC4 and L_⊥LS/L over training, one panel per quantity with every run. Here two runs (an MLP on
# the offline digits data, trained with MSE and with cross-entropy) instead of
# `experiments/paper_figures.py`'s twelve ({digits, mnist, mnist1d} × {MLP, CNN} × {MSE, CE},
# 8 minutes on two cores; [Reproduce the paper's figures](../guides/paper-figures.md)).

# %%
import os
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

ROOT = Path.cwd()
while not (ROOT / "experiments").is_dir() and ROOT != ROOT.parent:  # the repository's root
    ROOT = ROOT.parent
sys.path.insert(0, str(ROOT / "experiments"))
from paper_figures import run_config, train_and_measure  # noqa: E402

from centralpath.plotting.paper import figure_paper_set  # noqa: E402

TINY = os.environ.get("CENTRALPATH_EXAMPLES_TINY") == "1"  # the test suite's sizes

# %%
settings = {
    "common": {"seed": 0, "num_checkpoints": 4 if TINY else 15, "schedule": "cosine",
               "epochs": 4 if TINY else 80, "widths": [256, 256, 128], "weight_decay": 2e-4},
    "loss": {"mse": {"lr": 0.2}, "ce": {"lr": 0.1}},
}  # fmt: skip
results = {}
for loss in ("mse", "ce"):
    series, summary = train_and_measure(run_config(settings, "digits", "mlp", loss))
    results.update({f"digits-mlp-{loss}/{k}": v for k, v in series.items()})
    print(
        f"digits-mlp-{loss}: train accuracy {summary['final_train_accuracy']:.3f}, "
        f"test accuracy {summary['final_test_accuracy']:.3f}, NC1 {summary['nc1_final']:.3g}"
    )

# %%
fig = figure_paper_set(results)
fig  # a notebook shows the last expression
