"""Hostile input never crashes; a killed run resumes to identical results (issue: reliability)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from centralpath.cli import main


def _assert_clean_failure(code, err, command):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"centralpath {command}: error:"), err
    assert "Traceback" not in err and "internal error" not in err


# ------------------------------------------------------------------ malformed features files

_SHAPES = [(), (0,), (7,), (12,), (12, 3), (2, 12, 3), (3, 2), (12, 3, 1, 1), (1, 0, 3)]
_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int64, np.bool_, np.complex64, "U3"]
_SPECIAL = [np.nan, np.inf, -np.inf, -1.0, 1e300, 0.0, 2.5]


@st.composite
def _array(draw):
    shape = draw(st.sampled_from(_SHAPES))
    dtype = draw(st.sampled_from(_DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    a = rng.normal(size=shape) * draw(st.sampled_from([1.0, 3.0, 1e6]))
    if a.size and draw(st.booleans()):
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(_SPECIAL))
    if dtype == "U3":
        return a.astype(str).astype("U3")
    with np.errstate(invalid="ignore", over="ignore"):
        return a.astype(dtype)


@st.composite
def _features_arrays(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    labels = np.repeat(np.arange(3), 4)
    base = {
        "features": rng.normal(size=(12, 3)),
        "labels": labels,
        "W": rng.normal(size=(3, 3)),
        "b": rng.normal(size=3),
        "epochs": np.array([5.0]),
        "weight_decay": np.float64(1e-3),
    }
    for key in draw(
        st.lists(
            st.sampled_from(sorted(base) + ["num_classes"]), min_size=1, max_size=3, unique=True
        )
    ):
        action = draw(st.sampled_from(["drop", "replace", "labels"]))
        if action == "drop":
            base.pop(key, None)
        elif action == "labels" and key == "labels":
            base["labels"] = draw(
                st.sampled_from(
                    [
                        labels - 1,
                        labels + 5,
                        labels * 0,
                        labels[:-1],
                        labels.astype(float) + 0.5,
                        np.r_[labels[:-1], 9],
                    ]
                )
            )
        else:
            base[key] = draw(_array())
    return base


@settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    arrays=_features_arrays(), corruption=st.sampled_from(["none", "truncate", "garbage", "pickle"])
)
def test_fuzz_features_files(tmp_path, capsys, arrays, corruption):
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))  # tmp_path is shared by all examples
    path = tmp_path / "f.npz"
    if corruption == "pickle":
        arrays = {**arrays, "features": np.array([{"x": 1}, None], dtype=object)}
        np.savez(path, **arrays)  # numpy pickles object arrays; the loader must refuse them
    else:
        np.savez(path, **arrays)
    if corruption == "truncate":
        path.write_bytes(path.read_bytes()[: max(1, len(path.read_bytes()) // 3)])
    elif corruption == "garbage":
        path.write_bytes(b"PK\x03\x04" + os.urandom(64))
    out = tmp_path / "o.json"
    code = main(["analyze", str(path), "--json", str(out), "--quiet"])
    err = capsys.readouterr().err
    if code == 0:
        # A file that happens to be valid: the output is complete, finite or null, never NaN.
        text = out.read_text()
        assert "NaN" not in text and "Infinity" not in text
        assert json.loads(text)["checkpoints"]
    else:
        assert code == 2, err
        _assert_clean_failure(code, err, "analyze")
        assert not out.exists()


# ------------------------------------------------------------------ malformed configs

_VALID = {
    "flow": '"central-path"',
    "classes": "3",
    "per_class": "4",
    "dim": "3",
    "t_end": "10.0",
    "num_saves": "3",
    "methods": '["ode"]',
}
_BAD_VALUES = {
    "flow": ['"gradient"', "3", "true"],
    "classes": ["1", "-4", "0", '"three"', "3.5", "1000000000"],
    "per_class": ["1", "-1", "0", "[4]", "100000000000"],
    "dim": ["0", "1", "-3", "1e9"],
    "t_end": ["0.0", "-1.0", "nan", "inf", '"long"'],
    "num_saves": ["1", "0", "-2"],
    "methods": ['["rk4"]', "[]", '"ode"'],
    "lam": ["-0.5", "nan", "inf"],
    "lam_w": ["-1.0"],
    "eta": ["-0.1", "nan"],
    "rtol": ["0.0", "-1e-3"],
    "representation": ['"sparse"'],
    "seed": ['"zero"', "1.5"],
    "clases": ["3"],
    "bogus_key": ["1"],
}


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(_BAD_VALUES)), data=st.data(), mangle=st.booleans())
def test_fuzz_simulate_configs(tmp_path, capsys, key, data, mangle):
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))
    cfg = dict(_VALID)
    cfg[key] = data.draw(st.sampled_from(_BAD_VALUES[key]))
    text = "\n".join(f"{k} = {v}" for k, v in cfg.items()) + "\n"
    if mangle:
        text = text.replace("=", "", 1) if data.draw(st.booleans()) else text + "[[[\n"
    path = tmp_path / "c.toml"
    path.write_text(text)
    out = tmp_path / "run"
    try:
        code = main(
            ["simulate", "--config", str(path), "--out", str(out), "--quiet", "--no-figures"]
        )
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (text, err)
    _assert_clean_failure(code, err, "simulate")
    assert not out.exists() and not list(tmp_path.glob(".run.partial"))


def test_unreadable_config_and_resume_errors(tmp_path, capsys):
    code = main(["simulate", "--config", str(tmp_path / "none.toml"), "--out", str(tmp_path / "r")])
    _assert_clean_failure(code, capsys.readouterr().err, "simulate")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    code = main(["simulate", "--config", str(tmp_path / "bin.toml"), "--out", str(tmp_path / "r")])
    _assert_clean_failure(code, capsys.readouterr().err, "simulate")
    code = main(["simulate", "--resume", str(tmp_path / "never_started")])
    _assert_clean_failure(code, capsys.readouterr().err, "simulate")


# ------------------------------------------------------------------ kill and resume


def _env(tmp_path):
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # shared compile cache for the three runs
    return env


SIM = [
    "simulate",
    "--flow",
    "central-path",
    "--classes",
    "3",
    "--per-class",
    "4",
    "--dim",
    "3",
    "--t-end",
    "200",
    "--num-saves",
    "60",
    "--eta",
    "0.05",
    "--quiet",
    "--no-figures",
]


def test_simulate_resume_in_process_is_bit_identical(tmp_path, capsys, monkeypatch):
    """Interrupt after a few segments (as Ctrl-C would), resume, compare with a clean run."""
    import centralpath.simulate as sim

    original = sim._Checkpoint.save
    calls = {"n": 0}

    def interrupting(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt

    args = SIM[:-4] + [
        "--t-end",
        "20",
        "--num-saves",
        "12",
        "--eta",
        "0.5",
        "--quiet",
        "--no-figures",
    ]
    monkeypatch.setattr(sim._Checkpoint, "save", interrupting)
    assert main([*args, "--out", str(tmp_path / "a")]) == 130
    assert "--resume" in capsys.readouterr().err
    assert (
        not (tmp_path / "a").exists()
        and (tmp_path / ".a.partial" / "state" / "progress.npz").exists()
    )
    monkeypatch.setattr(sim._Checkpoint, "save", original)
    assert main(["simulate", "--resume", str(tmp_path / "a"), "--quiet", "--no-figures"]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = np.load(tmp_path / "a" / "results.npz"), np.load(tmp_path / "b" / "results.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not (tmp_path / ".a.partial").exists() and not (tmp_path / "a" / "state").exists()


@pytest.mark.slow
def test_simulate_sigkill_then_resume(tmp_path):
    env = _env(tmp_path)
    cmd = [sys.executable, "-m", "centralpath.cli"]
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    proc = subprocess.Popen([*cmd, *SIM, "--out", str(run_a)], env=env)
    progress = tmp_path / ".a.partial" / "state" / "progress.npz"
    deadline = time.time() + 600
    while not progress.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not run_a.exists(), "killed before finishing: no finished run directory"
    subprocess.run(
        [*cmd, "simulate", "--resume", str(run_a), "--quiet", "--no-figures"], env=env, check=True
    )
    subprocess.run([*cmd, *SIM, "--out", str(run_b)], env=env, check=True)
    a, b = np.load(run_a / "results.npz"), np.load(run_b / "results.npz")
    for k in b.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (run_a / "results.csv").read_text() == (run_b / "results.csv").read_text()


def test_determinism_same_seed_same_output(tmp_path, capsys):
    args = SIM[:-4] + [
        "--t-end",
        "5",
        "--num-saves",
        "4",
        "--eta",
        "0.5",
        "--quiet",
        "--no-figures",
    ]
    for name in ("x", "y"):
        assert main([*args, "--out", str(tmp_path / name)]) == 0
    assert (tmp_path / "x" / "results.csv").read_text() == (
        tmp_path / "y" / "results.csv"
    ).read_text()
    assert (
        Path(tmp_path / "x" / "config.toml").read_text()
        == Path(tmp_path / "y" / "config.toml").read_text()
    )


TRAIN = [
    "train",
    "--dataset",
    "digits",
    "--model",
    "mlp",
    "--epochs",
    "60",
    "--per-class",
    "20",
    "--batch-size",
    "25",
    "--quiet",
    "--no-figures",
]


@pytest.mark.slow
def test_train_sigkill_then_resume(tmp_path):
    env = _env(tmp_path)
    cmd = [sys.executable, "-m", "centralpath.cli"]
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    proc = subprocess.Popen([*cmd, *TRAIN, "--out", str(run_a)], env=env)
    state = tmp_path / ".a.partial" / "state"
    deadline = time.time() + 600
    while (
        proc.poll() is None
        and time.time() < deadline
        and not (state.is_dir() and len(list(state.glob("capture-*"))) >= 3)
    ):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not run_a.exists(), "killed before finishing: no finished run directory"
    subprocess.run(
        [*cmd, "train", "--resume", str(run_a), "--quiet", "--no-figures"], env=env, check=True
    )
    subprocess.run([*cmd, *TRAIN, "--out", str(run_b)], env=env, check=True)
    for name in ("features.npz", "results.npz"):
        a, b = np.load(run_a / name), np.load(run_b / name)
        assert sorted(a.files) == sorted(b.files)
        for k in b.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")


def test_checkpoint_writes_at_most_every_interval_and_always_at_the_end(tmp_path, monkeypatch):
    """Between segments the progress file is rewritten only after `interval_s`; the end of each
    method always is, with every snapshot, so a resume after the end has all it needs."""
    import centralpath.measurement._io as io
    import centralpath.simulate as sim

    writes = []
    real = io.save_npz
    monkeypatch.setattr(
        io, "save_npz", lambda path, **a: (writes.append(Path(path).name), real(path, **a))[1]
    )
    monkeypatch.setattr(sim._Checkpoint, "interval_s", 3600.0)
    args = SIM[:-4] + [
        "--t-end",
        "5",
        "--num-saves",
        "6",
        "--methods",
        "ode",
        "--quiet",
        "--no-figures",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    # The first segment's write (nothing written yet), then the final one: 2 writes for 5 segments.
    assert writes.count("progress.npz") == 2, writes
    assert sorted(w for w in writes if w.startswith("snapshot-")) == sorted(
        f"snapshot-ode-{k}.npz" for k in range(6)
    )


# ------------------------------------------------------------------ the Python boundary (issue 29)


def _labelled(C=3, n_c=4, p=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(C * n_c, p)), np.repeat(np.arange(C), n_c)


@pytest.mark.parametrize("bad", [3, 7, -1])
def test_class_stats_under_jit_checks_the_label_range(bad):
    """A label >= C under jit dropped its sample from every class and kept it in the global
    mean (NC1 3.02 for 3.30), silently; now the compiled program raises, naming the range."""
    import equinox as eqx
    import jax

    import centralpath as cp

    H, y = _labelled()
    stats = eqx.filter_jit(lambda h, l: cp.class_stats(h, l, 3))
    np.testing.assert_allclose(
        stats(H, y).sigma_w, cp.class_stats(H, y, 3).sigma_w, rtol=1e-14, atol=0
    )
    with pytest.raises(Exception, match=r"labels must lie in 0\.\.2"):
        jax.block_until_ready(stats(H, np.r_[y[:-1], bad]))
    with pytest.raises(Exception, match=r"labels must lie in 0\.\.2"):
        jax.block_until_ready(
            jax.vmap(lambda h, l: cp.class_stats(h, l, 3).sigma_w)(
                np.stack([H, H]), np.stack([y, np.r_[y[:-1], bad]])
            )
        )


def test_class_stats_under_jit_refuses_float_labels_while_tracing():
    import jax

    import centralpath as cp

    H, y = _labelled()
    with pytest.raises(ValueError, match="labels must be integers"):
        jax.jit(lambda h, l: cp.class_stats(h, l, 3).sigma_w)(H, y.astype(float))


@pytest.mark.parametrize("factor", [1e300, 1e-300])
def test_measure_refuses_a_classifier_at_the_edge_of_float64(factor):
    """NC3 of W·1e300 was 1.0 for 0.31: the classifier is refused with the rescaling hint
    (NC2 and NC3 themselves are scale-free: test_resource_guards)."""
    import centralpath as cp

    H, y = _labelled()
    W, b = np.random.default_rng(1).normal(size=(3, 3)), np.zeros(3)
    reference = cp.measure(H, y, W=W, b=b)
    assert np.isfinite(reference["nc3"]) and np.isfinite(reference["loss"])
    with pytest.raises(ValueError, match="rescale W and b together") as info:
        cp.measure(H, y, W=W * factor, b=b)
    assert "\n" not in str(info.value)


TORCH_LABELS = {
    "float": (lambda y: y.float(), "integer class indices"),
    "float_fractional": (lambda y: y.float() + 0.5, "integer class indices"),
    "bool": (lambda y: y > 0, "integer class indices"),
    "out_of_range": (lambda y: y + 3, "must lie in 0..2"),
    "negative": (lambda y: y - 1, "must lie in 0..2"),
    "one_hot": (lambda y: __import__("torch").nn.functional.one_hot(y, 3), "one class index"),
    "short": (lambda y: y[:-1], "labels for a batch of"),
}


@pytest.mark.parametrize("case", sorted(TORCH_LABELS))
def test_pytorch_recorder_refuses_labels_that_are_not_class_indices(case):
    """Float labels were truncated silently; labels out of range gave a raw torch error."""
    torch = pytest.importorskip("torch")
    from centralpath.torch import TorchStatsRecorder

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    x, y = torch.randn(12, 4), torch.arange(12) % 3
    recorder = TorchStatsRecorder(model[-1])
    change, phrase = TORCH_LABELS[case]
    with pytest.raises(ValueError, match=phrase) as info:
        recorder.capture(model, [(x, change(y))], epoch=0)
    assert "\n" not in str(info.value)
    assert model.training  # put back as it was
    recorder.capture(model, [(x, y)], epoch=0)  # the recorder still works afterwards
