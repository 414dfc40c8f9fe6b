"""`centralpath.torch`: record a PyTorch network's class statistics while it trains (the code is
in `centralpath.measurement.torch_recorder`; this import path is the public one)."""

from .measurement.torch_recorder import *  # noqa: F403
from .measurement.torch_recorder import __all__ as __all__
