"""float64 by construction: the public functions compute in float64 whatever JAX's global flag.

The theory's identities hold to ~1e-12 only in float64; in float32 a collapsing Σ_W resolves the
signal-to-noise ratios to ~1e-3 (ω_1 of a digits network came out 13.85 instead of 14.01). JAX
computes in float32 unless `jax_enable_x64` is on, so a library user who never set it would get
float32 numbers presented as the measurement. Two decorators close that gap:

- `float64` (array functions and methods): when x64 is off and the inputs hold values, the call
  runs inside JAX's scoped x64 context (this thread only) with float inputs — NumPy and JAX
  arrays, and the array leaves of `eqx.Module`s — cast to float64; the results are float64
  arrays. Under a user's `jit`/`vmap` without x64 the inputs are float32 tracers already and
  nothing can be switched any more: the call is refused with one line saying how to enable it.
- `float64_process` (drivers that compute on worker threads: `simulate`, `analyze`): JAX's
  scoped context does not reach other threads, so the global flag is switched on for the
  duration of the call and restored after; their results are NumPy float64.

float32 stays available where asked for explicitly (`precision = "float32"` of `simulate` and
`sweep`): `set_precision` switches the flag and lets the decorated functions run at float32.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import InputError

#: Set by `set_precision("float32")`: a run that asked for float32 gets it (process-wide: the
#: simulation computes metrics on a worker thread).
_float32_requested = False
_global_switch = threading.RLock()

ENABLE_X64 = 'call jax.config.update("jax_enable_x64", True) before creating any array'


def refusal(name: str) -> str:
    return (
        f"{name} computes in float64, which cannot be switched on inside jax.jit/vmap traced "
        f"at float32; {ENABLE_X64}"
    )


def _x64_scope():
    """JAX's thread-local x64 switch: `jax.enable_x64(True)` (JAX ≥ 0.8), else the older
    `jax.experimental.enable_x64()` (JAX 0.4.35, the lower bound, has only that one)."""
    scope = getattr(jax, "enable_x64", None)
    if scope is not None:
        with contextlib.suppress(TypeError):
            cm = scope(True)
            if hasattr(cm, "__enter__"):
                return cm
    from jax.experimental import enable_x64

    return enable_x64(True)


def _upcast(x):
    if isinstance(x, np.ndarray | np.generic | jax.Array):
        dtype = x.dtype
        if jnp.issubdtype(dtype, jnp.floating) and dtype != np.float64:
            if isinstance(x, jax.Array):
                return x.astype(jnp.float64)
            return np.float64(x) if isinstance(x, np.generic) else x.astype(np.float64)
    return x


def _concrete(tree) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def _must_switch(fn, args, kwargs) -> bool:
    """Whether a call has to switch float64 on (refused when it can no longer be switched)."""
    if _float32_requested or jax.config.jax_enable_x64:
        return False
    if not _concrete((args, kwargs)):
        raise InputError(refusal(fn.__name__))
    return True


def float64(fn):
    """Run `fn` in float64 whatever `jax_enable_x64` (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not _must_switch(fn, args, kwargs):
            return fn(*args, **kwargs)
        with _x64_scope():
            args, kwargs = jax.tree_util.tree_map(_upcast, (args, kwargs))
            return fn(*args, **kwargs)

    return wrapper


def float64_process(fn):
    """Run a driver `fn` with `jax_enable_x64` switched on process-wide for the call (its worker
    threads compute too); the flag is restored after. Other threads of the caller see float64
    for the duration."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not _must_switch(fn, args, kwargs):
            return fn(*args, **kwargs)
        with _global_switch:
            jax.config.update("jax_enable_x64", True)
            try:
                args, kwargs = jax.tree_util.tree_map(_upcast, (args, kwargs))
                return fn(*args, **kwargs)
            finally:
                jax.config.update("jax_enable_x64", False)

    return wrapper


def set_precision(precision: str) -> None:
    """Switch JAX to a run's precision, process-wide (the command line, before any array):
    "float64" (x64 on) or "float32" (x64 off, and the decorated functions run at float32)."""
    global _float32_requested
    jax.config.update("jax_enable_x64", precision == "float64")
    _float32_requested = precision == "float32"


@contextlib.contextmanager
def precision_of_run(precision: str):
    """`set_precision` for the duration of a call, then the previous state back."""
    global _float32_requested
    with _global_switch:
        before = (bool(jax.config.jax_enable_x64), _float32_requested)
        set_precision(precision)
        try:
            yield
        finally:
            jax.config.update("jax_enable_x64", before[0])
            _float32_requested = before[1]


def at_configured_precision(fn):
    """For a driver `fn(config, …)` whose configuration names its `precision` ("float64", the
    default, or "float32"): the whole call runs at that precision, process-wide (`simulate`
    computes its metrics on a worker thread), and JAX's flag is restored after."""

    @functools.wraps(fn)
    def wrapper(config, *args, **kwargs):
        precision = getattr(config, "precision", None)
        if precision is None and isinstance(config, dict):
            precision = config.get("precision", "float64")
        if precision not in ("float64", "float32"):  # the configuration's validation refuses it
            return fn(config, *args, **kwargs)
        with precision_of_run(precision):
            return fn(config, *args, **kwargs)

    return wrapper
