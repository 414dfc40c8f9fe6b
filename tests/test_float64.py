"""float64 by construction: from Python without `jax_enable_x64`, the measurements and flows give
the float64 numbers of the command line, or refuse (under a user's float32 jit) in one line.

Each check runs in a fresh process: the test session itself runs with x64 on (conftest)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from centralpath.cli import main
from centralpath.measurement._io import save_features

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "digits_mlp_final.npz"


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter that never touches jax_enable_x64."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def _features_file(tmp_path):
    rng = np.random.default_rng(3)
    C, N, p = 4, 40, 7
    y = np.repeat(np.arange(C), N)
    # Nearly collapsed features: float32 arithmetic would resolve ω_j only to ~1e-3.
    H = 30.0 * np.eye(C, p)[y] + 0.05 * rng.normal(size=(C * N, p))
    W, b = rng.normal(size=(C, p)), rng.normal(size=C)
    path = tmp_path / "features.npz"
    save_features(path, features=H[None].astype(np.float32), labels=y, W=W[None], b=b[None],
                  epochs=np.array([5]), weight_decay=1e-3)  # fmt: skip
    return path


def test_measure_without_x64_equals_analyze(tmp_path):
    path = _features_file(tmp_path)
    out = tmp_path / "a.json"
    assert main(["analyze", str(path), "--json", str(out)]) == 0
    (want,) = json.loads(out.read_text())["checkpoints"]
    proc = _python(
        """
        import json, sys
        import jax, numpy as np
        import centralpath as cp
        f = np.load(sys.argv[1])
        H = f["features"][0]
        assert H.dtype == np.float32 and not jax.config.jax_enable_x64
        r = cp.measure(H, f["labels"], W=f["W"][0], b=f["b"][0],
                       weight_decay=float(f["weight_decay"]))
        stats = cp.class_stats(H, f["labels"], 4)
        dtypes = {str(stats.sigma_w.dtype), str(stats.sigma_b.dtype),
                  str(cp.snr_singular_values(stats).dtype)}
        assert not jax.config.jax_enable_x64  # nothing switched on for the caller
        print(json.dumps({k: np.asarray(v).tolist() for k, v in r.items()}))
        print(json.dumps(sorted(dtypes)))
        """,
        str(path),
    )
    assert proc.returncode == 0, proc.stderr
    got, dtypes = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert dtypes == ["float64"]
    for key in ("nc1", "snr", "loss", "loss_nc1", "loss_nc23", "loss_perp", "nc3", "nc4"):
        assert_allclose(got[key], want[key], rtol=1e-10, atol=0, err_msg=key)


@pytest.mark.slow  # a fresh process compiling the README's run (~12 s)
def test_readme_example_without_x64_gets_the_float64_numbers(tmp_path):
    """The README's Python example with its `jax_enable_x64` line removed gives what it gives
    with it (in this x64 session)."""
    from test_readme import check, readme_example, run_example

    want = run_example(DATA)
    check(want)
    code = readme_example().replace("runs/digits/features.npz", str(DATA))
    code = "\n".join(line for line in code.splitlines() if "jax_enable_x64" not in line)
    code += textwrap.dedent(
        f"""
        assert not jax.config.jax_enable_x64
        np.savez({str(tmp_path / "got.npz")!r}, loss=d.loss, nc1=d.nc1, nc23=d.nc23,
                 perp=d.perp, omega=omega, omega_t=omega_t, snr=traj.metrics()["snr"])
        """
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "got.npz")
    d = want["d"]
    for key, value in [("loss", d.loss), ("nc1", d.nc1), ("nc23", d.nc23), ("perp", d.perp),
                       ("omega", want["omega"]), ("omega_t", want["omega_t"]),
                       ("snr", want["traj"].metrics()["snr"])]:  # fmt: skip
        assert got[key].dtype == np.float64, key
        assert_allclose(got[key], np.asarray(value), rtol=1e-10, err_msg=key)


def test_a_float32_jit_is_refused_in_one_line():
    proc = _python(
        """
        import jax, numpy as np
        import centralpath as cp
        H = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
        y = np.repeat(np.arange(3), 4)
        try:
            jax.jit(lambda h: cp.nc1(cp.class_stats(h, y, 3)))(H)
        except ValueError as e:
            print(e)
        """
    )
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert len(line.splitlines()) == 1
    assert "float64" in line and 'jax.config.update("jax_enable_x64", True)' in line


def test_drivers_restore_the_flag_and_float32_stays_available(tmp_path):
    """`analyze` switches x64 on for its worker threads and off again; `set_precision("float32")`
    (the command line's --precision float32) runs the library at float32 as asked."""
    path = _features_file(tmp_path)
    proc = _python(
        """
        import sys, jax, numpy as np
        from centralpath.measurement._io import load_features
        from centralpath.measurement.analysis import analyze
        from centralpath._float64 import set_precision
        import centralpath as cp
        (r,) = analyze(load_features(sys.argv[1]))
        assert not jax.config.jax_enable_x64
        set_precision("float32")
        H = np.asarray(load_features(sys.argv[1]).features[0], np.float32)
        s = cp.class_stats(H, np.repeat(np.arange(4), 40), 4)
        print(r["nc1"], s.sigma_w.dtype)
        """,
        str(path),
    )
    assert proc.returncode == 0, proc.stderr
    nc1, dtype = proc.stdout.split()
    assert np.isfinite(float(nc1)) and dtype == "float32"
