"""`centralpath.torch`: record a PyTorch network's class statistics while it trains (the code is
in `centralpath.measurement.torch_recorder`; this import path is the public one)."""

from .measurement.torch_recorder import *  # noqa: F403
from .measurement.torch_recorder import __all__ as __all__


def __getattr__(name: str):
    from .measurement import torch_recorder

    return getattr(torch_recorder, name)  # the deprecated StatsRecorder, or AttributeError
