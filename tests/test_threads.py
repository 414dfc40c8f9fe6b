"""BLAS threads: one for everything, the user's count for the streamed SYRK alone — set before
NumPy loads by the program's entry point, and through threadpoolctl for a library user."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, **env) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in ("CENTRALPATH_BLAS_THREADS",)}
    environ.pop("OPENBLAS_NUM_THREADS", None)
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")])
    environ.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_entry_point_sets_threads_before_numpy_loads():
    # The user's OPENBLAS_NUM_THREADS becomes the large products' count; NumPy's OpenBLAS
    # itself loads with one thread.
    out = _python(
        "import os, centralpath_launch; centralpath_launch._set_blas_environment(); "
        "import numpy; from threadpoolctl import threadpool_info; "
        "print(os.environ['CENTRALPATH_BLAS_THREADS'], "
        "[i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'])",
        OPENBLAS_NUM_THREADS="3",
    )
    assert out == "3 [1]"


def test_library_call_limits_loaded_blas_and_lends_the_syrk_its_threads():
    # NumPy (and its OpenBLAS at the default thread count) is loaded before the call, as in a
    # user's script; scipy's OpenBLAS (the SYRK's) loads after it.
    code = """
import numpy
from threadpoolctl import threadpool_info
import centralpath as cp
from centralpath._run import runtime as _runtime
assert cp.configure_cpu_runtime(threads=3) in (True, False)
import scipy.linalg.blas
def counts():
    return sorted(i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas')
outside = counts()
with _runtime.large_products():
    inside = counts()
import json
print(json.dumps([_runtime.blas_threads(), outside, inside, counts()]))
"""
    threads, outside, inside, after = json.loads(_python(code))
    assert threads == 3
    assert set(outside) == {1} and set(after) == {1} and set(inside) == {3}


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(bad):
    from centralpath import configure_cpu_runtime

    with pytest.raises(ValueError, match="threads must be a positive integer"):
        configure_cpu_runtime(threads=bad)


def test_default_thread_count_reads_the_users_variables():
    from centralpath._run.runtime import default_blas_threads

    assert default_blas_threads({"OMP_NUM_THREADS": "4"}) == 4
    assert default_blas_threads({"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "4"}) == 2
    assert default_blas_threads({"CENTRALPATH_BLAS_THREADS": "5", "OMP_NUM_THREADS": "4"}) == 5
    assert default_blas_threads({"OMP_NUM_THREADS": "zero"}) == len(os.sched_getaffinity(0))
