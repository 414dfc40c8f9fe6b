"""The flows of THEORY.md §6, each a Diffrax vector field `flow(t, y, args)` with a GD step."""

from ._base import AbstractFlow as AbstractFlow
from ._base import Snapshot as Snapshot
from .central_path import (
    CentralPathFlow as CentralPathFlow,
)
from .central_path import (
    ReducedCentralPathFlow as ReducedCentralPathFlow,
)
from .renormalised import (
    ReducedRenormalisedFlow as ReducedRenormalisedFlow,
)
from .renormalised import (
    RenormalisedFlow as RenormalisedFlow,
)
from .renormalised import (
    solve_lyapunov_sym as solve_lyapunov_sym,
)
from .ufm import (
    ReducedUFMFlow as ReducedUFMFlow,
)
from .ufm import (
    ReducedUFMState as ReducedUFMState,
)
from .ufm import (
    UFMFlow as UFMFlow,
)
