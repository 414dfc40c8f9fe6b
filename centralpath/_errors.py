"""The error a user can act on.

`InputError` is a `ValueError` whose message is one line that names the problem and the fix.
The command line prints it without a traceback and exits with status 2 (usage) or 1 (runtime);
library callers catch it as a `ValueError`.
"""

from __future__ import annotations

import numpy as np


class InputError(ValueError):
    """Bad input: the message names what is wrong and what to do instead."""


class NumericalError(RuntimeError):
    """A numerical fault (divergence, failed solve, NaN) with what to change."""


def is_concrete(*xs) -> bool:
    """True when every argument holds values (not a tracer inside `jit`/`vmap`)."""
    import jax.core

    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def check_finite(name: str, x) -> None:
    """Raise `InputError` when a concrete array holds NaN or Inf."""
    if not is_concrete(x):
        return
    a = np.asarray(x)
    if a.size and not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise InputError(
            f"{name} holds {bad} non-finite value(s) (NaN or Inf); "
            "remove or replace them before analysis"
        )


def check_lambda(lam, name: str = "lambda") -> None:
    if is_concrete(lam):
        a = np.asarray(lam)
        if a.ndim != 0 or not np.isfinite(a) or a < 0:
            raise InputError(f"{name} must be a finite number >= 0, got {lam!r}; pass a ridge >= 0")
