"""Real networks: offline datasets, Equinox models, Optax training and feature capture.

Optional: needs the `networks` extra (`pip install 'centralpath[networks]'`: optax,
scikit-learn, mlxtend, mnist1d). `import centralpath` never imports this package.
"""

try:
    import optax as _optax  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "centralpath.networks needs optax; install the extra: pip install 'centralpath[networks]'"
    ) from e

from .datasets import DATASETS as DATASETS, Dataset as Dataset, load_dataset as load_dataset
from .models import CNN as CNN, MLP as MLP, MODELS as MODELS, make_model as make_model
from .train import (
    DEFAULTS as DEFAULTS,
    LOSSES as LOSSES,
    Training as Training,
    capture_epochs as capture_epochs,
    fit as fit,
    train_from_config as train_from_config,
    training_results as training_results,
)
