"""Each benchmark's `main(cfg)` at the `tiny` sizes of bench_all.py: it runs, and its
correctness assertions (same answers on both sides of every ratio) hold. Wall times are never
checked. The benchmarks that start subprocesses (sharding over host devices, the cold start,
float32 in a fresh process) are in the slow tier; tests/test_sweep.py covers sharding fast."""

import functools
import os
import sys
from pathlib import Path

import pytest
from _compile import default_compile_env

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import bench_all  # noqa: E402

TINY = bench_all.PROFILES["tiny"]
SUBPROCESS = {"sharding", "cold_start", "precision", "scale"}


def _params():
    for name in bench_all.BENCHMARKS:
        marks = [pytest.mark.slow] if name in SUBPROCESS else []
        yield pytest.param(name, marks=marks, id=name)


#: Benchmarks whose checks are about rounding itself (the sharding benchmark: bitwise equality
#: across device counts): their child processes compile with XLA's defaults, as users'
#: programs do, not with the suite's -O0 (tests/_compile.py), under which 2 and 4 host devices
#: differed by up to 3e-15.
ROUNDING = {"sharding"}


@functools.cache
def tiny_result(name: str) -> dict:
    """A benchmark's `tiny` run through bench_all, once per session (several tests read it)."""
    saved = dict(os.environ)
    if name in ROUNDING:  # read by the benchmark's child process only: this one's backend runs
        os.environ.clear()
        os.environ.update(default_compile_env(saved))
    try:
        (result,) = bench_all.run("tiny", [name])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return result


@pytest.mark.slow  # each benchmark end to end at tiny sizes (~2-5 s each)
@pytest.mark.parametrize("name", list(_params()))
def test_benchmark_runs_and_its_checks_hold(name):
    result = tiny_result(name)
    assert result["rows"], name
    for row in result["rows"]:
        assert row["seconds"] is None or row["seconds"] > 0
        assert row["value"] is None or row["value"] >= 0
    assert "rows" in result and isinstance(result["checks"], dict)
    table = bench_all.combined_table([result])
    assert all(r["name"] in table for r in result["rows"])


def test_reduced_flows_agree_with_the_full_ones():
    checks = tiny_result("reduced")["checks"]
    assert checks["central_path_rel_err"] < 1e-9 and checks["ufm_rel_err"] < 1e-9


def test_bench_all_rejects_an_unknown_benchmark(capsys):
    with pytest.raises(SystemExit) as e:
        bench_all.main(["--only", "nope"])
    assert e.value.code == 2


@pytest.fixture
def roofline_kernel():
    """bench_roofline with its C++ kernel built and registered (skips without a compiler)."""
    import bench_roofline

    try:
        bench_roofline.load_kernel()
    except bench_roofline.KernelUnavailable as e:
        pytest.skip(str(e))
    return bench_roofline


@pytest.mark.parametrize(
    "classes, rows, dim",
    [
        (3, 27, 21),  # two 12-row blocks and a short one; 16 vector columns and a 5-column tail
        (1, 5, 8),  # one short block only, no 16-column chunk
        (16, 40, 48),  # the largest class count the kernel takes
    ],
)
def test_one_pass_kernel_matches_the_written_out_step(roofline_kernel, classes, rows, dim):
    """The C++ kernel of the roofline benchmark, five in-place steps at sizes that reach every
    tail path, is as accurate as XLA's own float32 step: both against the same step
    (`fused_step`, whose agreement with autodiff the benchmark checks) in float64."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    k = jax.random.split(jax.random.PRNGKey(classes), 3)
    W = jax.random.normal(k[0], (classes, dim), jnp.float32)
    b = jax.random.normal(k[1], (classes,), jnp.float32)
    H = jax.random.normal(k[2], (rows, dim), jnp.float32)
    Y = jax.nn.one_hot(jnp.arange(rows) % classes, classes, dtype=jnp.float32)
    hyper = (0.3, 1e-2, 2e-2, 5e-2)  # eta, lam_W, lam_H, lam_b

    def steps(step, dtype=jnp.float32):
        run = lambda W, b, H: jax.lax.fori_loop(  # noqa: E731
            0, 5, lambda _, s: step(*s, Y.astype(dtype), *hyper), (W, b, H)
        )
        args = (W.astype(dtype), b.astype(dtype), jnp.array(H, dtype))  # a copy: H is donated
        return [np.asarray(x, np.float64) for x in jax.jit(run, donate_argnums=(2,))(*args)]

    kernel = steps(roofline_kernel.kernel_step)
    xla = steps(roofline_kernel.fused_step)
    exact = steps(roofline_kernel.fused_step, jnp.float64)
    eps = float(jnp.finfo(jnp.float32).eps)
    for k_, x_, e_ in zip(kernel, xla, exact, strict=True):
        scale = float(np.max(np.abs(e_)))
        err_kernel, err_xla = (float(np.max(np.abs(a - e_))) / scale for a in (k_, x_))
        assert err_kernel <= 4 * max(err_xla, eps), (err_kernel, err_xla)
    assert not np.allclose(kernel[2], np.asarray(H))  # the steps moved H


def test_one_pass_kernel_names_a_class_count_it_cannot_take(roofline_kernel):
    import jax
    import jax.numpy as jnp

    C, n, p = 17, 4, 8
    z = lambda *s: jnp.zeros(s, jnp.float32)  # noqa: E731
    with pytest.raises(jax.errors.JaxRuntimeError, match="1 to 16 classes"):
        jax.block_until_ready(
            roofline_kernel.kernel_step(z(C, p), z(C), z(n, p), z(n, C), 0.1, 0, 0)
        )


@pytest.mark.parametrize(
    "script", sorted(p.name for p in EXPERIMENTS.glob("bench_*.py") if p.name != "bench_all.py")
)
def test_a_benchmark_script_answers_help_and_refuses_what_it_does_not_take(script):
    """`--help` prints what the benchmark measures without running it; a mistyped option is
    refused (exit 2) instead of starting a minute-long run."""
    import subprocess

    path = EXPERIMENTS / script
    first_line = _docstring_first_line(path)
    shown = subprocess.run(
        [sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "".join(first_line.split()) in "".join(shown.stdout.split())  # however it wraps
    wrong = subprocess.run(
        [sys.executable, str(path), "--bogus"], capture_output=True, text=True, timeout=60
    )
    assert wrong.returncode == 2 and "--bogus" in wrong.stderr


def _docstring_first_line(path: Path) -> str:
    import ast

    return ast.get_docstring(ast.parse(path.read_text())).splitlines()[0].strip()
