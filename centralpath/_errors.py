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


class CentralpathWarning(UserWarning):
    """A result that stands but should be read with care (the command line prints one line)."""


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


def check_lambda(lam, name: str = "lambda"):
    """Refuse a ridge that is not a finite number ≥ 0: before any compute when its value is
    known, at run time (`eqx.error_if`) under jit/vmap. Returns `lam` (checked)."""
    if is_concrete(lam):
        a = np.asarray(lam)
        if a.ndim != 0 or not np.isfinite(a) or a < 0:
            raise InputError(f"{name} must be a finite number >= 0, got {lam!r}; pass a ridge >= 0")
        return lam
    import equinox as eqx
    import jax.numpy as jnp

    return eqx.error_if(
        lam, ~(jnp.isfinite(lam) & (lam >= 0)), f"{name} must be a finite number >= 0"
    )


# Seeds become 32-bit PRNG keys: jax.random.PRNGKey(2**32) equals PRNGKey(0) in float32 mode and
# not in float64 mode, and seeds >= 2**63 or < 0 fail inside JAX. One documented range for all.
SEED_MAX = 2**32 - 1


def _is_real(x) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(
        x, bool | np.bool_
    )


def _show(x) -> str:
    return repr(x.item() if isinstance(x, np.generic) else x)


def _range_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


def require_real(
    name: str, x, lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False, fix=""
) -> None:
    """`InputError` unless x is a finite real number in the range (NaN, ±inf and 1e400 refused)."""
    ok = _is_real(x) and bool(np.isfinite(x))
    ok = ok and (lo is None or (x > lo if lo_open else x >= lo))
    ok = ok and (hi is None or (x < hi if hi_open else x <= hi))
    if not ok:
        where = _range_text(lo, hi, lo_open, hi_open)
        raise InputError(
            f"{name} must be a finite number{' ' + where if where else ''}, got {_show(x)}"
            + (f"; {fix}" if fix else "")
        )


def require_int(name: str, x, lo=None, hi=None, *, fix="") -> None:
    """`InputError` unless x is an integer (not a bool, not a float) in lo..hi."""
    ok = isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)
    ok = ok and (lo is None or x >= lo) and (hi is None or x <= hi)
    if not ok:
        where = (
            f" in {lo}..{hi}"
            if lo is not None and hi is not None
            else f" >= {lo}"
            if lo is not None
            else f" <= {hi}"
            if hi is not None
            else ""
        )
        raise InputError(
            f"{name} must be an integer{where}, got {_show(x)}" + (f"; {fix}" if fix else "")
        )


def require_seed(x, name: str = "seed") -> None:
    require_int(
        name,
        x,
        0,
        SEED_MAX,
        fix="seeds are 0..2**32-1 (each becomes a 32-bit PRNG key); pick one in that range",
    )


def require_classifier_shape(W, b, num_classes: int, dim: int) -> None:
    """`InputError` unless W is [C, p] and b (when given) is [C]: shapes are known under jit
    too, and a W with the wrong number of rows would otherwise broadcast or fail inside JAX."""
    shape = np.shape(W)
    require(
        len(shape) == 2, f"W must be a 2-D array [C, p] = [{num_classes}, {dim}], got shape {shape}"
    )
    require(
        shape[0] == num_classes,
        f"W has {shape[0]} rows but the labels have {num_classes} classes; the label count must "
        "match the classifier",
    )
    require(
        shape[1] == dim,
        f"W must be [C, p] = [{num_classes}, {dim}] to match the features, got {shape}",
    )
    if b is not None:
        require(
            np.shape(b) == (num_classes,),
            f"b must be [C] = [{num_classes}], got shape {np.shape(b)}",
        )
