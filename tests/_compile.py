"""How the suite compiles: XLA:CPU's quick compile by default (see conftest.py), and the
environment of a child process that compiles as users' programs do.

Compilation is most of the suite's time (measured on 2 cores: ~75% of it, ~2,600 programs),
and LLVM at -O0 with the elemental emitter for fusions takes about a third of the default
compile time. The answers agree to an ulp or so, so every identity checked at ~1e-12 holds
alike; the few assertions about rounding itself — bitwise equality across device counts, the
accuracy of ω_j at the edge of float64 — run in a child with `default_compile_env()`.
"""

import os

from centralpath._run.runtime import QUICK_COMPILE_JAXLIB, _jaxlib_in, add_xla_flags

#: LLVM at -O0 (the command line's own quick compile stops at -O1: users' runs are longer).
#: XLA aborts on a flag it does not know: only for the jaxlib releases `QUICK_COMPILE_JAXLIB`.
QUICK_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def quick_compile() -> bool:
    """Add `QUICK_COMPILE_FLAGS` to XLA_FLAGS (before the backend starts) unless
    CENTRALPATH_TEST_OPTIMISED is set or jaxlib is outside the measured releases."""
    if os.environ.get("CENTRALPATH_TEST_OPTIMISED") or not _jaxlib_in(QUICK_COMPILE_JAXLIB):
        return False
    add_xla_flags(QUICK_COMPILE_FLAGS)
    return True


def default_compile_env(env: dict | None = None) -> dict:
    """A copy of `env` (default os.environ) whose child compiles with XLA's defaults."""
    env = dict(os.environ if env is None else env)
    quick = {f.split("=")[0] for f in QUICK_COMPILE_FLAGS}
    kept = [f for f in env.get("XLA_FLAGS", "").split() if f.split("=")[0] not in quick]
    env["XLA_FLAGS"] = " ".join(kept)
    env["CENTRALPATH_TEST_OPTIMISED"] = "1"
    return env
