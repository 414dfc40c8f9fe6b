"""Simulation start-up: the NC1 stop is cheap (the C×C Gram of the means, equal to the metric),
every segment of a run reuses one compiled solve, and segments carry the step history over."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import centralpath as cp
from centralpath._metrics import nc1_from_gram
from centralpath._stats import ClassStats


def random_stats(seed, C=5, p=9, counts=None, dead=0, collapse=1.0):
    rng = np.random.default_rng(seed)
    counts = np.full(C, 20.0) if counts is None else np.asarray(counts, float)
    M = rng.standard_normal((p, C)) * 3
    A = rng.standard_normal((p, p))
    S = A @ A.T / p
    S[:, : C - 1] *= collapse  # anisotropic: small variance along some directions
    S[: C - 1, :] *= collapse
    if dead:
        S[-dead:, :] = S[:, -dead:] = 0.0
        M[-dead:] = 1.5
    return ClassStats(jnp.asarray(counts), jnp.asarray(M), jnp.asarray(S))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"counts": [3, 50, 7, 20, 11]},
        {"dead": 2},
        {"collapse": 1e-6},
        {"C": 10, "p": 64},
    ],
)
def test_nc1_from_gram_equals_the_metric(kw):
    for seed in range(3):
        stats = random_stats(seed, **kw)
        np.testing.assert_allclose(nc1_from_gram(stats), cp.nc1(stats), rtol=1e-12)


def test_nc1_from_gram_with_coinciding_means():
    stats = random_stats(0)
    M = np.asarray(stats.class_means).copy()
    M[:, 1] = M[:, 0]  # rank C − 2: the cutoff drops the null direction as the metric does
    stats = ClassStats(stats.counts, jnp.asarray(M), stats.sigma_w)
    np.testing.assert_allclose(nc1_from_gram(stats), cp.nc1(stats), rtol=1e-10)


class _Compiles(logging.Handler):
    def __init__(self):
        super().__init__()
        self.names = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Finished XLA compilation of"):
            self.names.append(message.split()[4])


def _count_compiles(fn):
    handler = _Compiles()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    # Set globally, not by the thread-local `jax.log_compiles`: simulate compiles its ODE program
    # on a second thread.
    previous = jax.config.jax_log_compiles
    jax.config.update("jax_log_compiles", True)
    try:
        fn()
    finally:
        jax.config.update("jax_log_compiles", previous)
        logger.removeHandler(handler)
    return handler.names


def test_every_segment_reuses_one_compiled_solve():
    """`simulate` solves segment by segment; the NC1 stop used to be a new closure per call,
    i.e. a new static argument, and every segment recompiled (~16 s each at p = 512)."""
    from centralpath.simulate import simulate

    config = dict(
        flow="ufm",
        classes=3,
        per_class=4,
        dim=5,
        methods=["ode"],
        t_end=50.0,
        num_saves=6,
        nc1_target=1e-9,
    )
    names = _count_compiles(lambda: simulate(config))
    assert names.count("jit(_solve_segment)") == 1, names
    # Another target, another start: still the same program.
    again = _count_compiles(lambda: simulate({**config, "nc1_target": 1e-8, "seed": 3}))
    assert "jit(_solve_segment)" not in again, again


@pytest.mark.parametrize("representation", ["full", "reduced"])
def test_stable_step_is_two_over_the_jacobian_spectral_radius(representation):
    """The power iteration runs on the state's pytree (no flattened copies); it still finds
    the largest |eigenvalue| of the flow's Jacobian."""
    import centralpath.simulate as S
    from centralpath._discrete import stable_step_size

    config = S.SimulationConfig(flow="ufm", classes=3, per_class=6, dim=5)
    flow, y0, _ = S.build(config.replace(representation=representation))
    flat, unravel = jax.flatten_util.ravel_pytree(y0)
    J = jax.jacfwd(lambda z: jax.flatten_util.ravel_pytree(flow(0.0, unravel(z)))[0])(flat)
    rho = np.max(np.abs(np.linalg.eigvals(np.asarray(J))))
    # Power iteration's error shrinks as (|λ₂|/ρ)^(2k): for the reduced state drawn here the two
    # largest |eigenvalues| are 4.698 and 4.624 (6e-8 off after 400 iterations, 1e-15 after 1600).
    np.testing.assert_allclose(stable_step_size(flow, y0, iterations=1600), 2 / rho, rtol=1e-8)


def test_command_line_compiles_quickly_unless_the_user_chose_otherwise():
    """The program adds XLA:CPU's quick-compile flags before the backend starts (on the jaxlib
    releases they were measured on); a flag already in XLA_FLAGS keeps the user's value."""
    import os
    import subprocess
    import sys

    from centralpath._run.runtime import QUICK_COMPILE_FLAGS, QUICK_COMPILE_JAXLIB, _jaxlib_in

    probe = (
        "import os; from centralpath._run.runtime import configure_cpu_runtime; "
        "configure_cpu_runtime(quick_compile=True); print(os.environ['XLA_FLAGS'])"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=3")
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "--xla_backend_optimization_level=3" in out
    assert "--xla_backend_optimization_level=1" not in out
    fusion = "--xla_cpu_use_fusion_emitters=false"
    assert fusion in QUICK_COMPILE_FLAGS
    assert (fusion in out) == _jaxlib_in(QUICK_COMPILE_JAXLIB)
