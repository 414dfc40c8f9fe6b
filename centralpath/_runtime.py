"""CPU runtime settings that must precede the start of the JAX backend.

XLA:CPU on a 2-core machine was seen to deadlock when two batched LAPACK calls (a triangular
solve and an eigendecomposition under `vmap`) run concurrently; the concurrency-optimised
scheduler made it likelier. And jax's CPU LAPACK kernels run in scipy's OpenBLAS, whose worker
threads contend with XLA's own pool (a 128×128 triangular solve measured ~100× slower). The
command line and the test suite call `configure_cpu_runtime()` first thing; library users may
too, before creating any array.
"""

from __future__ import annotations

import os

# Belt and braces for the deadlock of the module docstring: fewer concurrently running thunks.
# (Alone it cut the hangs of one program from 3 in 5 to 0 in 8, yet a larger batch still hung;
# the programs here no longer batch LAPACK calls at all.) Read when the backend starts.
XLA_CPU_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)

# Compile time is most of a short command's wall time (`simulate` at C = 10, N = 5,000,
# p = 512: its three programs took ~7 s of CPU to compile against ~3 s of solving). XLA:CPU's
# elemental emitters for fusions, and LLVM at -O1, compile them 35–40% faster; the programs
# here spend their time in matrix products and LAPACK, which these flags do not touch (ODE
# steps, metrics and gradient-descent steps measured within noise of the defaults, ±10%).
QUICK_COMPILE_FLAGS = (
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_backend_optimization_level=1",
)
#: XLA aborts on a flag it does not know: the jaxlib releases ([from, to) as (major, minor))
#: these were measured on; others compile with the defaults.
QUICK_COMPILE_JAXLIB = ((0, 7), (0, 11))


def configure_cpu_runtime(*, quick_compile: bool = False) -> bool:
    """Add `XLA_CPU_FLAGS` to XLA_FLAGS and OPENBLAS_NUM_THREADS=1 (unless set) before the JAX
    backend starts; return False (and change nothing) if a backend is already running.

    jax's CPU LAPACK kernels run in scipy's OpenBLAS, whose worker threads contend with XLA's
    thread pool: a 128×128 triangular solve measured ~100× slower with them (2 cores).

    `quick_compile`: also `QUICK_COMPILE_FLAGS` (the command line's choice), on the jaxlib
    releases they were measured on. A flag the user set in XLA_FLAGS keeps the user's value.
    """
    try:
        from jax._src import xla_bridge

        if getattr(xla_bridge, "_backends", None):
            return all(f in os.environ.get("XLA_FLAGS", "") for f in XLA_CPU_FLAGS)
    except ImportError:  # pragma: no cover - private API moved; be conservative
        return False
    add_xla_flags(XLA_CPU_FLAGS)
    if quick_compile and _jaxlib_in(QUICK_COMPILE_JAXLIB):
        add_xla_flags(QUICK_COMPILE_FLAGS)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return True


def _jaxlib_in(releases) -> bool:
    from jaxlib import version

    release = tuple(int(x) for x in version.__version__.split(".")[:2])
    lo, hi = releases
    return lo <= release < hi


def add_xla_flags(flags) -> None:
    """Append to XLA_FLAGS each of `flags` ("--name=value") whose name it does not set yet (a
    value the user chose wins). Read when the backend starts: call it before."""
    current = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in flags if f.split("=")[0] not in current]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([current, *missing]).strip()
