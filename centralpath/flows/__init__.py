"""The flows of docs/theory.md §6, each a Diffrax vector field `flow(t, y, args)` with a GD step."""

from ._base import AbstractFlow as AbstractFlow, Snapshot as Snapshot
from .central_path import (
    CentralPathFlow as CentralPathFlow,
    ReducedCentralPathFlow as ReducedCentralPathFlow,
)
from .renormalised import (
    ReducedRenormalisedFlow as ReducedRenormalisedFlow,
    RenormalisedFlow as RenormalisedFlow,
    solve_lyapunov_sym as solve_lyapunov_sym,
)
from .ufm import (
    ReducedUFMFlow as ReducedUFMFlow,
    ReducedUFMState as ReducedUFMState,
    UFMFlow as UFMFlow,
)
