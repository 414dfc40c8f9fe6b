# %% [markdown]
# # Measuring a network
#
# Train a small MLP with MSE on the offline digits data (`centralpath train`, which captures
# the last hidden layer's features at log-spaced epochs into a
# [features file](../reference/file-formats.md)), then measure its neural collapse from Python:
# NC1–NC4, the SNR singular values ω_j and the exact decomposition of the loss.

# %%
import os
import subprocess
import tempfile
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import matplotlib.pyplot as plt
import numpy as np

import centralpath as cp

TINY = os.environ.get("CENTRALPATH_EXAMPLES_TINY") == "1"  # the test suite's sizes
work = Path(tempfile.mkdtemp())

# %% [markdown]
# The command line trains (SGD with momentum, weight decay, a held-out test set); any network
# that writes a features file will do, PyTorch included ([the PyTorch guide](../guides/pytorch.md)).

# %%
epochs = 4 if TINY else 120
subprocess.run(
    ["centralpath", "train", "--dataset", "digits", "--model", "mlp", "--loss", "mse",
     "--epochs", str(epochs), "--num-checkpoints", "4" if TINY else "20",
     "--out", str(work / "digits"), "--quiet", "--no-figures"],
    check=True,
)  # fmt: skip
ff = cp.load_features(work / "digits" / "features.npz")
print(
    f"{ff.features.shape[0]} checkpoints of {ff.features.shape[1]} samples × p = {ff.features.shape[2]}"
)

# %% [markdown]
# `analyze` gives one record per checkpoint (the same records as `centralpath analyze --json`).

# %%
records = cp.analyze(ff)
for r in records:  # the share of the loss off the least-squares classifier
    r["perp_rel"] = r["loss_perp"] / r["loss"]
epochs_ = np.array([r["epoch"] for r in records])
for key in ("nc1", "nc3", "nc4", "perp_rel"):
    print(f"{key:9s} first {records[0][key]:.3g}  last {records[-1][key]:.3g}")

# %%
fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
for key, label in [("nc1", "NC1"), ("nc3", "NC3"), ("perp_rel", "L_⊥LS / L")]:
    ax[0].loglog(np.maximum(epochs_, 0.5), [r[key] for r in records], "o-", label=label)
ax[0].set_xlabel("epoch (0 drawn at 0.5)")
ax[0].legend()
ax[1].loglog(np.maximum(epochs_, 0.5), np.array([r["snr"] for r in records], dtype=float), "o-")
ax[1].set_xlabel("epoch (0 drawn at 0.5)")
ax[1].set_title("SNR singular values ω_j")
plt.show()

# %% [markdown]
# The same numbers from the building blocks, at the last checkpoint: the class statistics
# (float64 whatever the file's dtype), the loss decomposition L = L_NC1 + L_NC2/3 + L_⊥LS and
# the ω_j.

# %%
stats = cp.class_stats(ff.features[-1], ff.labels, ff.num_classes)
d = cp.loss_decomposition(stats, ff.W[-1], ff.b[-1], lam=ff.weight_decay)
omega = cp.snr_singular_values(stats, features=ff.features[-1], labels=ff.labels)
print(
    f"L = {float(d.loss):.4g} = {float(d.nc1):.4g} (NC1) + {float(d.nc23):.4g} (NC2/3) + {float(d.perp):.4g} (⊥LS)"
)
print("ω_j:", np.asarray(omega))
