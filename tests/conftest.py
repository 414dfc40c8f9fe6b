"""Every test runs at float64 (docs/theory.md: identities hold to ~1e-12 only there), compiled
with XLA:CPU's quick settings (tests/_compile.py; CENTRALPATH_TEST_OPTIMISED=1 for the
defaults), with the command line's compilation cache in a temporary directory of its own."""

import atexit
import os
import shutil
import tempfile

from _compile import quick_compile

quick_compile()
# The command line keeps compiled programs under XDG_CACHE_HOME: keep the suite's out of the
# user's cache, and its results independent of what is in there.
_CACHE = tempfile.mkdtemp(prefix="centralpath-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

from centralpath._run.runtime import configure_cpu_runtime  # noqa: E402

configure_cpu_runtime()  # before the JAX backend starts

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import hypothesis  # noqa: E402

hypothesis.settings.register_profile(
    "centralpath", deadline=None, max_examples=25, derandomize=True, print_blob=True
)
hypothesis.settings.load_profile("centralpath")


#: The test files that take longest (measured), run first: a worker that draws one of them last
#: would leave the other cores idle while it finishes (pytest-xdist hands out whole files).
LONGEST_FIRST = (
    "test_sweep.py",
    "test_cli.py",
    "test_compare_predictive.py",
    "test_experiments.py",
    "test_rundir_safety.py",
    "test_flows.py",
    "test_sim_startup.py",
    "test_snr_resolution.py",
    "test_benchmarks.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within
