"""Small frictions a new user met, each fixed: --version, no empty figures/ with --no-figures,
plain progress lines off a terminal, readable result objects, unique GD times in results.csv,
and the sweep-only keys of a sweep file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import centralpath as cp
from centralpath._run.progress import progress
from centralpath.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and out.strip() == f"centralpath {cp.__version__}"


SIM = ["--flow", "renormalised", "--classes", "3", "--per-class", "4", "--dim", "3"]
SIM += ["--t-end", "1e3", "--num-saves", "12", "--methods", "gd", "--quiet"]


def test_no_figures_folder_with_no_figures(tmp_path, capsys):
    out = tmp_path / "sim"
    code, _, err = _run(["simulate", *SIM, "--no-figures", "--out", str(out)], capsys)
    assert code == 0, err
    assert (out / "results.npz").is_file() and not (out / "figures").exists()
    rng = np.random.default_rng(0)
    path = tmp_path / "f.npz"
    labels = np.repeat(np.arange(3), 6)
    np.savez(path, features=rng.standard_normal((3, 18, 4)) * [[[1.0]], [[2.0]], [[3.0]]],
             labels=labels, epochs=np.arange(3))  # fmt: skip
    cmp = tmp_path / "cmp"
    code, _, err = _run(
        ["compare", str(path), "--fit", "--out", str(cmp), "--no-figures", "--quiet"], capsys
    )
    assert code == 0, err
    assert (cmp / "compare.json").is_file() and not (cmp / "figures").exists()


def test_gd_times_are_unique_so_the_table_pivots(tmp_path, capsys):
    """The automatic η is capped at t_end/100 (100 for the default t_end = 1e4) while the saves
    are log-spaced from t_end·1e-4 = 1: every save below η/2 = 50 rounded to step 0, and later
    neighbours to one step count, so the default run's 40 GD rows held 18 distinct times, 18 of
    them at t = 0. Each step count is now kept once."""
    pd = pytest.importorskip("pandas")
    out = tmp_path / "sim"
    code, _, err = _run(["simulate", *SIM, "--no-figures", "--out", str(out)], capsys)
    assert code == 0, err
    df = pd.read_csv(out / "results.csv")
    assert not df.duplicated(["time", "quantity", "index"]).any()
    wide = df.pivot(index=["time", "index"], columns="quantity", values="value")
    assert "gd/nc1" in wide.columns
    gd = np.load(out / "results.npz")["gd/times"]
    assert np.all(np.diff(gd) > 0) and gd[0] == 0
    # The library keeps a snapshot per save time; the run directory drops the repeats.
    from centralpath.simulate import distinct_gd_saves

    r = {"gd/times": np.array([0.0, 0.0, 1.0, 1.0, 2.0]), "gd/nc1": np.arange(5.0),
         "gd/snr": np.ones((5, 2)), "gd/eta": np.asarray(1.0), "ode/times": np.zeros(5)}  # fmt: skip
    d = distinct_gd_saves(r)
    np.testing.assert_array_equal(d["gd/times"], [0, 1, 2])
    np.testing.assert_array_equal(d["gd/nc1"], [0, 2, 4])
    assert d["gd/snr"].shape == (3, 2) and d["ode/times"].shape == (5,)


def test_progress_is_plain_lines_off_a_terminal():
    log = io.StringIO()
    bar = progress(40, desc="train", unit="epoch", stream=log)
    for i in range(40):
        bar.set_postfix(loss=f"{1 / (i + 1):.3g}")
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 11 and lines[-1].startswith("train: 40/40 epochs")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    from tqdm.auto import tqdm

    bar = progress(3, stream=Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    assert progress(3, enabled=False, stream=log).update(1) is None


def test_train_logs_plain_progress_lines(capsys, tmp_path):
    pytest.importorskip("centralpath.networks")
    flags = ["--per-class", "10", "--widths", "32,16", "--epochs", "4", "--batch-size", "25"]
    flags += ["--num-checkpoints", "4", "--no-figures", "--test-fraction", "0"]
    code, _, err = _run(["train", *flags, "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    assert "\r" not in err and "train: 4/4 epochs" in err
    assert not (tmp_path / "r" / "figures").exists()


def test_result_objects_print_numbers():
    rng = np.random.default_rng(0)
    H, labels = rng.standard_normal((12, 4)), np.repeat(np.arange(3), 4)
    stats = cp.class_stats(H, labels, 3)
    W, b = rng.standard_normal((3, 4)), np.zeros(3)
    d = cp.loss_decomposition(stats, W, b, lam=0.1)
    text = str(d)
    assert "f64[]" not in text and text == repr(d)
    assert text.startswith("LossDecomposition(loss=") and f"loss={float(d.loss):.6g}" in text
    m = repr(cp.collapse_metrics(stats, W))
    assert "f64" not in m and f"nc1={float(cp.nc1(stats)):.6g}" in m and "snr=[" in m
    assert "counts=[4., 4., 4.]" in repr(stats)
    assert "singular=False" in repr(cp.least_squares_classifier(stats, 0.1))
    # Large arrays by shape and range; traced values by shape.
    big = cp.class_stats(rng.standard_normal((100, 30)), np.repeat(np.arange(5), 20), 5)
    assert "sigma_w=f64[30, 30] (min " in repr(big)
    import jax

    seen = []
    jax.jit(lambda h: seen.append(repr(cp.class_stats(h, labels, 3))) or 0)(H)
    assert "(traced)" in seen[0]


def test_sweep_only_keys_are_named(tmp_path, capsys):
    guide = (ROOT / "docs" / "guides" / "sweeps.md").read_text()
    assert "`record`, `quantities` and `[sweep]` belong to `sweep` only" in guide
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        'flow = "ufm"\nclasses = 3\nper_class = 4\ndim = 3\nt_end = 10.0\nmethods = ["gd"]\n'
        'record = "final"\n\n[sweep]\nseeds = 2\n'
    )
    code, _, err = _run(["simulate", "--config", str(sweep), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "unknown key 'record'" in err and err.count("\n") == 1
    # Without the sweep-only lines it is a simulate configuration.
    plain = tmp_path / "plain.toml"
    plain.write_text(sweep.read_text().split("record")[0])
    code, _, err = _run(
        [
            "simulate",
            "--config",
            str(plain),
            "--out",
            str(tmp_path / "p"),
            "--quiet",
            "--no-figures",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads((tmp_path / "p" / "metadata.json").read_text())["command"]
