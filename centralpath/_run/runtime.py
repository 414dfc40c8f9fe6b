"""CPU runtime settings: XLA flags that must precede the start of the JAX backend, and the
threads of the BLAS libraries.

XLA:CPU on a 2-core machine was seen to deadlock when two batched LAPACK calls (a triangular
solve and an eigendecomposition under `vmap`) run concurrently; the concurrency-optimised
scheduler made it likelier. And jax's CPU LAPACK kernels run in scipy's OpenBLAS, whose worker
threads contend with XLA's own pool (a 128×128 triangular solve measured ~100× slower). The
command line and the test suite call `configure_cpu_runtime()` first thing; library users may
too, before creating any array.

BLAS threads: a thin product (one-hot sums, NC4 scores: m×p×C) or a small factorisation split
over threads that a loaded machine does not schedule waits for them (0.13–0.16 s per checkpoint
became 2.3–3.0 s on a shared 2-core box), and even the SYRK of a streamed pass (n·p² flops per
checkpoint) ran 3–5× slower on 2 BLAS threads than on one there. So every BLAS runs on one
thread, and the threads the user allows — `CENTRALPATH_BLAS_THREADS`, else the user's
OPENBLAS_NUM_THREADS, MKL_NUM_THREADS or OMP_NUM_THREADS, else every core the process may run
on (`blas_threads()`) — go to whole chunks of a streamed pass, one thread per chunk (`_stream`),
or, where a pass cannot be split (one chunk, a deflated file read in order, a recorder's batch),
to its SYRK (`large_products()`). The program's entry point
(`centralpath_launch`) records that number and sets OPENBLAS_NUM_THREADS=1 before NumPy loads;
`configure_cpu_runtime()` does the same for a library user (and limits libraries already loaded
through threadpoolctl).
"""

from __future__ import annotations

import contextlib
import os
import sys

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


def configure_cpu_runtime(*, quick_compile: bool = False, threads: int | None = None) -> bool:
    """Add `XLA_CPU_FLAGS` to XLA_FLAGS before the JAX backend starts, run BLAS on one thread,
    and give a streamed pass `threads` threads (module docstring); return False (and leave
    XLA_FLAGS alone) if a backend is already running.

    jax's CPU LAPACK kernels run in scipy's OpenBLAS, whose worker threads contend with XLA's
    thread pool: a 128×128 triangular solve measured ~100× slower with them (2 cores).

    `threads`: how many threads a streamed pass over features may use (whole chunks per
    thread, or its SYRK's BLAS threads where it cannot be split; the default:
    CENTRALPATH_BLAS_THREADS, else the user's OPENBLAS_NUM_THREADS, MKL_NUM_THREADS or
    OMP_NUM_THREADS, else every core the process may run on). On a machine shared with other
    work, 1 can be the fastest. The thread settings hold whenever this is called, also after
    NumPy has loaded.

    `quick_compile`: also `QUICK_COMPILE_FLAGS` (the command line's choice), on the jaxlib
    releases they were measured on. A flag the user set in XLA_FLAGS keeps the user's value.
    """
    configure_blas_threads(threads)
    try:
        from jax._src import xla_bridge

        if getattr(xla_bridge, "_backends", None):
            return all(f in os.environ.get("XLA_FLAGS", "") for f in XLA_CPU_FLAGS)
    except ImportError:  # pragma: no cover - private API moved; be conservative
        return False
    add_xla_flags(XLA_CPU_FLAGS)
    if quick_compile and _jaxlib_in(QUICK_COMPILE_JAXLIB):
        add_xla_flags(QUICK_COMPILE_FLAGS)
    return True


# ------------------------------------------------------------------------------ BLAS threads

#: The threads a streamed pass may use (set by the program's entry point, or by the user).
THREADS_ENV = "CENTRALPATH_BLAS_THREADS"
#: The variables BLAS libraries read when they load, in the order a user's value is taken from.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")

_controller = None  # threadpoolctl's view of the loaded BLAS libraries
_controller_key = None  # which BLAS-bearing modules were loaded when it was made


def _positive_int(value) -> int | None:
    try:
        n = int(str(value).strip())
    except ValueError:
        return None
    return n if n >= 1 else None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_blas_threads(environ=os.environ) -> int:
    """The threads the user allows a streamed pass when nobody said otherwise: the first
    positive value of `THREADS_ENV` and `BLAS_THREAD_VARIABLES`, else the usable cores."""
    for name in (THREADS_ENV, *BLAS_THREAD_VARIABLES):
        n = _positive_int(environ.get(name, ""))
        if n is not None:
            return n
    return _cores()


def blas_threads() -> int:
    """The threads a streamed pass uses, and `large_products()` (`THREADS_ENV`, or its
    default)."""
    return _positive_int(os.environ.get(THREADS_ENV, "")) or default_blas_threads()


def configure_blas_threads(threads: int | None = None) -> int:
    """Record the streamed pass's thread count (`threads`, or `default_blas_threads()` the
    first time), make BLAS libraries that load from now on start with one thread, and limit
    those already loaded to one. Returns the streamed pass's count."""
    set_blas_environment(threads)
    controller = _blas_controller(refresh=True)
    if controller is not None:
        controller.limit(limits=1, user_api="blas")  # not a context: it stays
    return blas_threads()


def set_blas_environment(threads: int | None = None) -> None:
    """The environment half of `configure_blas_threads`, for BLAS libraries yet to load: what
    the program's entry point calls before NumPy is imported."""
    if threads is not None:
        n = None if isinstance(threads, bool) else _positive_int(threads)
        if n is None or n != threads:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        os.environ[THREADS_ENV] = str(n)
    else:
        os.environ.setdefault(THREADS_ENV, str(default_blas_threads()))
    # OpenBLAS (NumPy's and SciPy's wheels) reads this when it loads. MKL_NUM_THREADS and
    # OMP_NUM_THREADS stay as they are: PyTorch sizes its own pool from them (`train`).
    os.environ["OPENBLAS_NUM_THREADS"] = "1"


def _blas_controller(refresh: bool = False):
    """threadpoolctl's controller of the BLAS libraries loaded now (None without threadpoolctl)."""
    global _controller, _controller_key
    # SciPy's OpenBLAS (which serves the SYRK and jax's LAPACK) loads after NumPy's, on first use.
    key = tuple(m in sys.modules for m in ("scipy.linalg._fblas", "torch"))
    if _controller is None or refresh or key != _controller_key:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - a dependency; without it threads stay as loaded
            return None
        _controller = ThreadpoolController().select(user_api="blas")
        _controller_key = key
    return _controller


@contextlib.contextmanager
def single_threaded_blas():
    """Every BLAS library loaded now on one thread for the block, restored after: the thin
    products of a streamed loop, whatever the process was configured with."""
    # SciPy's OpenBLAS (the SYRK's) loads on first use, maybe inside the block, maybe in a
    # worker thread: load it first, so that the limit covers it.
    with contextlib.suppress(ImportError):
        import scipy.linalg.blas  # noqa: F401
    controller = _blas_controller()
    if controller is None or all(lib.num_threads == 1 for lib in controller.lib_controllers):
        yield
        return
    with controller.limit(limits=1):
        yield


@contextlib.contextmanager
def large_products(threads: int | None = None):
    """BLAS on `threads` (default `blas_threads()`) for the block: the SYRK of a streamed
    accumulation, the one product per chunk large enough to gain from threads."""
    n = blas_threads() if threads is None else threads
    controller = _blas_controller()
    if controller is None or all(lib.num_threads == n for lib in controller.lib_controllers):
        yield
        return
    with controller.limit(limits=n):
        yield


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
