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


def configure_cpu_runtime() -> bool:
    """Add `XLA_CPU_FLAGS` to XLA_FLAGS and OPENBLAS_NUM_THREADS=1 (unless set) before the JAX
    backend starts; return False (and change nothing) if a backend is already running.

    jax's CPU LAPACK kernels run in scipy's OpenBLAS, whose worker threads contend with XLA's
    thread pool: a 128×128 triangular solve measured ~100× slower with them (2 cores).
    """
    try:
        from jax._src import xla_bridge

        if getattr(xla_bridge, "_backends", None):
            return all(f in os.environ.get("XLA_FLAGS", "") for f in XLA_CPU_FLAGS)
    except ImportError:  # pragma: no cover - private API moved; be conservative
        return False
    add_xla_flags(XLA_CPU_FLAGS)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return True


def add_xla_flags(flags) -> None:
    """Append to XLA_FLAGS each of `flags` ("--name=value") whose name it does not set yet (a
    value the user chose wins). Read when the backend starts: call it before."""
    current = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in flags if f.split("=")[0] not in current]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([current, *missing]).strip()
