"""centralpath: neural collapse under MSE loss — the loss decomposition, the central path and
its closed-form dynamics (Han, Papyan & Donoho, ICLR 2022), in JAX.

Importing this package loads JAX and Equinox only; Diffrax, the networks and the plotting code
load when first used.
"""

from ._eigen import (
    LogPotential as LogPotential,
)
from ._eigen import (
    asymptotic_loss as asymptotic_loss,
)
from ._eigen import (
    asymptotic_nc1 as asymptotic_nc1,
)
from ._eigen import (
    asymptotic_omega as asymptotic_omega,
)
from ._eigen import (
    asymptotic_ratio_gap as asymptotic_ratio_gap,
)
from ._eigen import (
    central_path_loss_terms as central_path_loss_terms,
)
from ._eigen import (
    eigen_dynamics as eigen_dynamics,
)
from ._eigen import (
    nc1_from_snr as nc1_from_snr,
)
from ._eigen import (
    omega_rate as omega_rate,
)
from ._eigen import (
    potential as potential,
)
from ._errors import InputError as InputError
from ._errors import NumericalError as NumericalError
from ._etf import (
    collapsed_features as collapsed_features,
)
from ._etf import (
    simplex_etf as simplex_etf,
)
from ._etf import (
    ufm_collapsed_logits as ufm_collapsed_logits,
)
from ._etf import (
    ufm_global_minimum as ufm_global_minimum,
)
from ._etf import (
    ufm_threshold as ufm_threshold,
)
from ._least_squares import (
    LeastSquaresClassifier as LeastSquaresClassifier,
)
from ._least_squares import (
    least_squares_classifier as least_squares_classifier,
)
from ._loss import (
    LossDecomposition as LossDecomposition,
)
from ._loss import (
    least_squares_loss_terms as least_squares_loss_terms,
)
from ._loss import (
    loss_decomposition as loss_decomposition,
)
from ._loss import (
    mse_loss as mse_loss,
)
from ._loss import (
    mse_loss_from_stats as mse_loss_from_stats,
)
from ._metrics import (
    NC1_VARIANTS as NC1_VARIANTS,
)
from ._metrics import (
    CollapseMetrics as CollapseMetrics,
)
from ._metrics import (
    collapse_metrics as collapse_metrics,
)
from ._metrics import (
    etf_distance as etf_distance,
)
from ._metrics import (
    nc1 as nc1,
)
from ._metrics import (
    nc1_cdnv as nc1_cdnv,
)
from ._metrics import (
    nc2_equiangular_classifier as nc2_equiangular_classifier,
)
from ._metrics import (
    nc2_equiangular_means as nc2_equiangular_means,
)
from ._metrics import (
    nc2_equinorm_classifier as nc2_equinorm_classifier,
)
from ._metrics import (
    nc2_equinorm_means as nc2_equinorm_means,
)
from ._metrics import (
    nc3 as nc3,
)
from ._metrics import (
    nc4 as nc4,
)
from ._metrics import (
    renormalised_features as renormalised_features,
)
from ._metrics import (
    simplex_etf_gram as simplex_etf_gram,
)
from ._metrics import (
    snr_matrix as snr_matrix,
)
from ._metrics import (
    snr_singular_values as snr_singular_values,
)
from ._stats import (
    ClassStats as ClassStats,
)
from ._stats import (
    class_stats as class_stats,
)
from ._stats import (
    within_class_deviations as within_class_deviations,
)

__version__ = "0.1.0"
