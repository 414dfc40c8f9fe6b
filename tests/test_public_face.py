"""The package's face: the entry points a researcher meets (`cp.simulate`, `cp.analyze`,
`cp.compare`, `cp.load_features`, `cp.integrate`), each documented with an example, giving the
command line's numbers, and refusing misuse with the command line's one-line messages."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath.cli import main
from centralpath.measurement._io import save_features

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = ["simulate", "analyze", "measure", "compare", "compare_models", "load_features",
                "integrate", "eigen_dynamics", "class_stats", "loss_decomposition"]  # fmt: skip


def test_the_entry_points_are_on_the_face_with_arguments_returns_and_an_example():
    for name in ENTRY_POINTS:
        assert name in cp.__all__ and name in dir(cp), name
        obj = getattr(cp, name)
        doc = (obj.__call__ if name == "simulate" else obj).__doc__
        assert "**Arguments:**" in doc and "**Returns:**" in doc, name
    for name in ["simulate", "analyze", "measure", "compare", "compare_models", "load_features"]:
        doc = (cp.simulate.__call__ if name == "simulate" else getattr(cp, name)).__doc__
        assert "```python" in doc, name
    assert "SimulationConfig" in cp.__all__ and "ArrayStatsRecorder" in cp.__all__
    assert all(hasattr(cp, name) for name in cp.__all__)


def test_simulate_is_the_module_and_the_function():
    import centralpath.simulate as S

    assert S is cp.simulate and S.DEFAULTS["classes"] == cp.SimulationConfig().classes
    assert cp.simulate.__call__.__doc__ == S.simulate.__doc__


def test_cp_simulate_gives_the_command_lines_numbers(tmp_path):
    """In a fresh process that never switched x64 on, as a theorist would call it."""
    out = tmp_path / "run"
    args = ["--flow", "renormalised", "--classes", "3", "--per-class", "4", "--dim", "4",
            "--t-end", "100", "--num-saves", "6", "--seed", "2"]  # fmt: skip
    assert main(["simulate", *args, "--out", str(out), "--quiet", "--no-figures"]) == 0
    want = dict(np.load(out / "results.npz"))
    code = f"""
import jax, numpy as np
import centralpath as cp
config = cp.SimulationConfig(flow="renormalised", classes=3, per_class=4, dim=4, t_end=100.0,
                             num_saves=6, seed=2)
r = cp.simulate(config)
assert not jax.config.jax_enable_x64
# The command line writes each gradient-descent save once (a step longer than a save gap
# repeats a state): the same function here.
np.savez({str(tmp_path / "py.npz")!r}, **cp.simulate.distinct_gd_saves(r))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    got = dict(np.load(tmp_path / "py.npz"))
    numeric = [k for k in want if np.issubdtype(want[k].dtype, np.number)]
    assert {"ode/nc1", "gd/snr", "closed_form/snr"} <= set(numeric)
    for key in numeric:
        assert got[key].dtype == want[key].dtype, key
        assert_allclose(got[key], want[key], rtol=1e-12, atol=0, err_msg=key)


@pytest.fixture
def features_file(tmp_path):
    rng = np.random.default_rng(1)
    C, N, p = 4, 15, 6
    y = np.repeat(np.arange(C), N)
    H = np.stack([(2.0 + 3 * k) * np.eye(C, p)[y] + rng.normal(size=(C * N, p)) for k in range(3)])
    path = tmp_path / "features.npz"
    save_features(path, features=H.astype(np.float32), labels=y, W=rng.normal(size=(3, C, p)),
                  b=rng.normal(size=(3, C)), epochs=np.array([0, 3, 9]), weight_decay=1e-3)  # fmt: skip
    return path


def test_analyze_of_a_path_is_the_command_lines(features_file, tmp_path):
    out = tmp_path / "a.json"
    assert main(["analyze", str(features_file), "--json", str(out)]) == 0
    want = json.loads(out.read_text())["checkpoints"]
    got = cp.analyze(features_file)
    assert [r["epoch"] for r in got] == [0, 3, 9]
    for r, w in zip(got, want, strict=True):
        for key in ("nc1", "snr", "loss", "loss_perp", "nc4", "w_ls_distance"):
            assert_allclose(np.asarray(r[key], float), w[key], rtol=1e-12, err_msg=key)
    ff = cp.load_features(features_file)
    assert repr(ff).startswith("FeaturesFile(K=3 checkpoints at epochs [0, 3, 9], n=60")
    assert len(repr(ff)) < 200


def test_misuse_gets_the_command_lines_one_line_messages(features_file, tmp_path, capsys):
    # W with the wrong number of rows: the same words as analyze's refusal of such a file.
    ff = cp.load_features(features_file)
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=ff.features[:1], labels=ff.labels, W=ff.W[:1, :3], b=ff.b[:1, :3],
             num_classes=np.int64(4))  # fmt: skip
    assert main(["analyze", str(bad)]) == 2
    cli = capsys.readouterr().err.strip()
    with pytest.raises(ValueError) as e:
        cp.measure(ff.features[0], ff.labels, W=ff.W[0, :3], b=ff.b[0, :3])
    assert "\n" not in str(e.value)
    assert str(e.value) in cli.replace("'W'", "W"), (str(e.value), cli)
    with pytest.raises(ValueError, match="W has 3 rows but the labels have 4 classes"):
        cp.loss_decomposition(cp.class_stats(ff.features[0], ff.labels, 4), ff.W[0, :3])
    # p < C − 1: analyze's words.
    H = ff.features[0][:, :2]
    with pytest.raises(ValueError, match=r"feature dimension p = 2 is below C-1 = 3; the class"):
        cp.measure(H, ff.labels)
    # A path instead of arrays.
    with pytest.raises(TypeError, match="measure takes arrays, got a path"):
        cp.measure(str(features_file), ff.labels)
    # ω of the wrong length and negative times: `centralpath predict`'s words.
    with pytest.raises(
        ValueError, match=r"omega0 has 4 values but C = 4 classes have at most C-1 = 3"
    ):
        cp.eigen_dynamics(np.ones(4), 4, 10)
    predict = cp.eigen_dynamics(np.ones(3), 4, 10)
    with pytest.raises(ValueError, match="times must be >= 0"):
        predict(np.array([0.0, -1.0]))
    assert np.all(np.isinf(predict(np.inf)))


def test_the_recorders_say_which_framework_they_serve():
    assert cp.ArrayStatsRecorder.__name__ == "ArrayStatsRecorder"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert cp.StatsRecorder is cp.ArrayStatsRecorder
    assert any("ArrayStatsRecorder" in str(x.message) for x in w)
    assert "StatsRecorder" not in cp.__all__


def test_compare_reads_itself(features_file):
    result = cp.compare(features_file, models=["closed-form"])
    assert set(result.verdicts) == {"closed-form"}
    assert result.verdicts["closed-form"] in ("consistent", "inconsistent", "not-applicable")
    text = repr(result)
    assert text.splitlines()[0] == "Comparison(3 checkpoints, 1 model(s))"
    assert text.splitlines()[1].startswith("  closed-form: ")
