"""centralpath: neural collapse under MSE loss — the loss decomposition, the central path and
its closed-form dynamics (Han, Papyan & Donoho, ICLR 2022), in JAX.

The entry points, each what a command of the same name does on the command line:

- `simulate(SimulationConfig(...))`: a flow of the UFM from a random initial state.
- `analyze(path)` / `measure(features, labels, W=..., b=...)`: NC1–NC4, the loss decomposition
  and the SNR singular values ω_j of a network's features (a file, or arrays).
- `compare(path)`: does the theory predict the network's collapse? (`compare_models` for the
  parts); `load_features(path)` reads a features file.
- `integrate(flow, stats, t1)` / `gradient_descent(...)` / `eigen_dynamics(ω0, C, N)`: the
  flows and their closed form.
- `ArrayStatsRecorder` (NumPy/JAX batches) records class statistics while a network trains;
  PyTorch: `centralpath.torch.TorchStatsRecorder`.

Every measurement and flow computes in float64 whatever `jax_enable_x64` (under a user's
`jax.jit` traced at float32 it refuses in one line, saying how to enable x64). Importing this
package loads JAX and Equinox only; Diffrax, the networks and the plotting code load when first
used.
"""

from . import _stats, simulate
from ._discrete import (
    gradient_descent as gradient_descent,
    stable_step_size as stable_step_size,
)
from ._eigen import (
    LogPotential as LogPotential,
    asymptotic_loss as asymptotic_loss,
    asymptotic_nc1 as asymptotic_nc1,
    asymptotic_omega as asymptotic_omega,
    asymptotic_ratio_gap as asymptotic_ratio_gap,
    central_path_loss_terms as central_path_loss_terms,
    eigen_dynamics as eigen_dynamics,
    nc1_from_snr as nc1_from_snr,
    omega_rate as omega_rate,
    potential as potential,
)
from ._errors import (
    CentralpathWarning as CentralpathWarning,
    InputError as InputError,
    NumericalError as NumericalError,
)
from ._etf import (
    collapsed_features as collapsed_features,
    simplex_etf as simplex_etf,
    ufm_collapsed_logits as ufm_collapsed_logits,
    ufm_global_minimum as ufm_global_minimum,
    ufm_threshold as ufm_threshold,
)
from ._least_squares import (
    LeastSquaresClassifier as LeastSquaresClassifier,
    least_squares_classifier as least_squares_classifier,
)
from ._loss import (
    LossDecomposition as LossDecomposition,
    least_squares_loss_terms as least_squares_loss_terms,
    loss_decomposition as loss_decomposition,
    mse_loss as mse_loss,
    mse_loss_from_stats as mse_loss_from_stats,
)
from ._metrics import (
    NC1_VARIANTS as NC1_VARIANTS,
    CollapseMetrics as CollapseMetrics,
    collapse_metrics as collapse_metrics,
    etf_distance as etf_distance,
    nc1 as nc1,
    nc1_cdnv as nc1_cdnv,
    nc2_equiangular_classifier as nc2_equiangular_classifier,
    nc2_equiangular_means as nc2_equiangular_means,
    nc2_equinorm_classifier as nc2_equinorm_classifier,
    nc2_equinorm_means as nc2_equinorm_means,
    nc3 as nc3,
    nc4 as nc4,
    renormalised_features as renormalised_features,
    simplex_etf_gram as simplex_etf_gram,
    snr_matrix as snr_matrix,
    snr_singular_values as snr_singular_values,
)
from ._run.runtime import configure_cpu_runtime as configure_cpu_runtime
from ._stats import (
    ClassStats as ClassStats,
    class_stats as class_stats,
    within_class_deviations as within_class_deviations,
)
from ._trajectory import Trajectory as Trajectory
from ._ufm import (
    UFMState as UFMState,
    init_features as init_features,
    init_ufm as init_ufm,
    ufm_loss as ufm_loss,
)
from .measurement._accumulate import (
    StatsAccumulator as StatsAccumulator,
    accumulate as accumulate,
    merge_across_processes as merge_across_processes,
    sharded_stats as sharded_stats,
)
from .measurement._compare_api import (
    Comparison as Comparison,
    compare as compare,
    compare_models as compare_models,
)
from .measurement._initial_state import (
    MeasuredState as MeasuredState,
    initial_state as initial_state,
    measured_state as measured_state,
)
from .measurement._io import FeaturesFile as FeaturesFile, load_features as load_features
from .measurement._recorder import (
    ArrayStatsRecorder as ArrayStatsRecorder,
    checkpoint_of as checkpoint_of,
)
from .measurement._stream import open_source as open_source, save_stats as save_stats
from .measurement.analysis import analyze as analyze, measure as measure
from .simulate import SimulationConfig as SimulationConfig


class _SimulateModule(type(_stats)):
    """`centralpath.simulate` is both the module (`import centralpath.simulate as S`,
    `centralpath.simulate.DEFAULTS`) and, called, its `simulate` function: `cp.simulate(config)`.
    A function of that name on the package would hide the module from every `import … as`."""

    def __call__(self, config, **options):
        return self.simulate(config, **options)

    __call__.__doc__ = simulate.simulate.__doc__


simulate.__class__ = _SimulateModule


def _distribution_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("centralpath")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _distribution_version()


# Loaded on first use: Diffrax costs ~0.5 s to import and only the ODE path needs it.
_LAZY = {"integrate": "._integrate"}

__all__ = sorted(
    [name for name in dir() if not name.startswith("_") and name not in ("annotations",)]
    + list(_LAZY)
)
__all__ = [n for n in __all__ if n not in {"measurement", "flows"}]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name == "StatsRecorder":  # its name until the PyTorch recorder got one of its own
        import warnings

        warnings.warn(
            "centralpath.StatsRecorder is now ArrayStatsRecorder (NumPy/JAX batches; PyTorch: "
            "centralpath.torch.TorchStatsRecorder)",
            DeprecationWarning,
            stacklevel=2,
        )
        return ArrayStatsRecorder
    raise AttributeError(f"module 'centralpath' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
