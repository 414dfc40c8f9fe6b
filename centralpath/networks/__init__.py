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

from .datasets import DATASETS as DATASETS
from .datasets import Dataset as Dataset
from .datasets import load_dataset as load_dataset
from .models import CNN as CNN
from .models import MLP as MLP
from .models import MODELS as MODELS
from .models import make_model as make_model
from .train import DEFAULTS as DEFAULTS
from .train import LOSSES as LOSSES
from .train import Training as Training
from .train import capture_epochs as capture_epochs
from .train import fit as fit
from .train import train_from_config as train_from_config
from .train import training_results as training_results
