"""centralpath's Diffrax solvers, built on Diffrax's public seams (`AbstractAdaptiveSolver`,
`AbstractAdaptiveStepSizeController`, `diffeqsolve(..., solver_state=, controller_state=)`).

- `StagedTsit5`: Tsit5 with its stages written out (any flow);
- `FactoredTsit5`: Tsit5 for flows whose p×p Σ moves by a rank-structured rate (reduced UFM);
- `SegmentController`: a run cut into segments steps as one solve;
- `solve`: the one `diffeqsolve` call every caller uses.
"""

from ._controller import SegmentController as SegmentController
from ._factored import (
    FactoredInterpolation as FactoredInterpolation,
    FactoredTsit5 as FactoredTsit5,
)
from ._solve import (
    CARRY_FORMAT as CARRY_FORMAT,
    SolverCarry as SolverCarry,
    carry_description as carry_description,
    default_solver as default_solver,
    factorable as factorable,
    solve as solve,
    start_carry as start_carry,
)
from ._tableau import DENSE as DENSE, TABLEAU as TABLEAU, dense_weights as dense_weights
from ._tsit5 import StagedTsit5 as StagedTsit5, Tsit5Interpolation as Tsit5Interpolation
