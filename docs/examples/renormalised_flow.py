# %% [markdown]
# # The renormalised flow in five minutes
#
# The paper's renormalised gradient flow (F3) moves only the class means of whitened features,
# and its signal-to-noise singular values ω_j have a closed form: F(ω_j(t)) = F(ω_j(0)) + t with
# F(ω) = N C² log ω + N C ω² + (N/4) ω⁴ ([theory](../theory.md), §6). Here the closed form, a
# Diffrax solve of the ODE and plain gradient descent run from the same random state, from
# Python.

# %%
import os

import jax

jax.config.update("jax_enable_x64", True)  # before any array is created
import numpy as np

import centralpath as cp
from centralpath.plotting import figure_omega

TINY = os.environ.get("CENTRALPATH_EXAMPLES_TINY") == "1"  # the test suite's sizes

# %% [markdown]
# One configuration: C = 5 classes of N = 20 samples in p = 16 dimensions, the ODE and gradient
# descent to t = 10⁷ (every flow's time is gradient descent's: k steps of size η reach t = kη).

# %%
config = cp.SimulationConfig(
    flow="renormalised",
    classes=5,
    per_class=20,
    dim=16,
    t_end=1e4 if TINY else 1e7,
    num_saves=10 if TINY else 40,
    methods=["ode", "gd"],
)
results = cp.simulate(config)
omega_ode, omega_closed, omega_gd = (results[f"{s}/snr"] for s in ("ode", "closed_form", "gd"))
print("ω_j at t = 0:   ", omega_closed[0])
print("ω_j at the end: ", omega_closed[-1])
print("ODE vs closed form, max relative difference:", np.max(np.abs(omega_ode / omega_closed - 1)))
print(
    "GD vs closed form at the end, relative:     ",
    np.max(np.abs(omega_gd[-1] / omega_closed[-1] - 1)),
)

# %% [markdown]
# The ω_j grow and equalise: that is neural collapse on the central path. The same picture the
# command line draws (`centralpath simulate`, `centralpath plot`):

# %%
fig = figure_omega(results)
fig  # a notebook shows the last expression

# %% [markdown]
# The closed form on its own is `cp.eigen_dynamics`: a function of time, cheap enough to
# evaluate at a million configurations. Its invariant F(ω_j) − F(ω_k) is conserved exactly.

# %%
predict = cp.eigen_dynamics(jax.numpy.asarray(omega_closed[0]), 5, 20)
times = jax.numpy.asarray(results["closed_form/times"])
omega_t = np.asarray(predict(times))
print("closed form from eigen_dynamics vs simulate's:", np.max(np.abs(omega_t / omega_closed - 1)))

# %% [markdown]
# Gradient descent approaches the flow at first order in its step η: halving η halves its
# error (`centralpath demo` measures the slope; [Simulate and compare flows](../guides/simulate.md)
# shows the other flows: whitened, central path, the unconstrained-features model).
