"""Each experiment script's main(cfg) runs on a tiny configuration and writes its figures."""

import importlib.util
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from test_figures import figure_problems, omega_grow_while_nc1_falls

from centralpath.plotting import figures_for

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _load(name):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(EXPERIMENTS))


SIM = {"classes": 3, "per_class": 4, "dim": 3, "t_end": 100.0, "num_saves": 6, "eta": 1.0}


@pytest.mark.parametrize(
    ("name", "cfg", "stems"),
    [
        ("closed_form", {"simulation": SIM}, ["omega", "nc_metrics_ode"]),
        (
            "gd_convergence",
            {
                "simulation": {k: SIM[k] for k in ("classes", "per_class", "dim")},
                "t": 40.0,
                "etas": [4.0, 2.0, 1.0],
            },
            ["gd_convergence"],
        ),
        (
            "ufm_collapse",
            {"simulation": {**SIM, "flow": "ufm", "lam_w": 5e-3, "lam_h": 5e-3, "eta": 0.2}},
            ["loss_decomposition_gd"],
        ),
        (
            "digits_mlp",
            {
                "training": {
                    "epochs": 4,
                    "widths": [32, 16],
                    "per_class": 10,
                    "batch_size": 25,
                    "num_checkpoints": 4,
                }
            },
            ["measured_vs_predicted", "invariant"],
        ),
    ],
)
@pytest.mark.slow  # each trains or solves end to end (~10 s); tests/test_figures.py checks their committed output
def test_experiment_smoke(tmp_path, name, cfg, stems):
    out = _load(name).main({**cfg, "name": name}, out_root=tmp_path)
    assert out == tmp_path / name
    assert (out / "results.npz").is_file() and (out / "config.toml").is_file()
    for stem in stems:
        assert (out / "figures" / f"{stem}.png").is_file()
    results = dict(np.load(out / "results.npz"))
    # +inf is allowed only where the run says an ω_j is beyond float64 resolution.
    for k, v in results.items():
        series = k.split("/")[0]
        if k.endswith("/snr") and f"{series}/snr_beyond_resolution" in results:
            flagged = results[f"{series}/snr_beyond_resolution"] > 0
            v = np.where(flagged[:, None] & np.isposinf(v), np.nan, v)
        assert np.all(np.isfinite(v) | np.isnan(v)), k
    # The figures of a fresh run obey the drawing rules the committed ones are held to.
    for stem, make in figures_for(name, results).items():
        fig = make()
        assert not figure_problems(fig), (stem, figure_problems(fig))
        plt.close(fig)
    for series in ("closed_form", "ode", "gd"):
        if f"{series}/snr" in results and f"{series}/nc1" in results:
            assert not omega_grow_while_nc1_falls(results, series)


def test_scripts_write_to_runs_unless_told_and_never_to_the_reference_figures(tmp_path):
    """Without --out a script writes runs/<name> (git-ignored), so trying one leaves the
    committed figures/ and `git status` alone; `--out DIR` and `--out=DIR` both work; only
    regenerate_figures.py passes `--out figures`."""
    import shutil
    import subprocess

    runner = _load("_runner")
    toml = tmp_path / "c.toml"
    toml.write_text("x = 1\n")
    script = str(EXPERIMENTS / "closed_form.py")
    assert runner.parse_args(script, [script]) == (
        runner.load_cfg(script, [script]),
        runner.ROOT / "runs",
    )
    assert runner.parse_args(script, [script, str(toml), "--out", "a"]) == ({"x": 1}, Path("a"))
    assert runner.parse_args(script, [script, "--out=b", str(toml)]) == ({"x": 1}, Path("b"))
    for bad in (["--out"], ["--out="], [str(toml), str(toml)]):
        with pytest.raises(SystemExit):
            runner.parse_args(script, [script, *bad])
    if shutil.which("git") and (runner.ROOT / ".git").exists():
        ignored = subprocess.run(
            ["git", "-C", str(runner.ROOT), "check-ignore", "-q", "runs/closed_form/results.npz"]
        )
        assert ignored.returncode == 0, "runs/ must be ignored by git"
    assert "--out" in (EXPERIMENTS / "regenerate_figures.py").read_text()


@pytest.mark.parametrize(
    "name",
    sorted(p.stem for p in EXPERIMENTS.glob("*.py") if "parse_args(__file__" in p.read_text()),
)
def test_experiment_answers_help(name, capsys):
    """`--help` prints the script's docstring and usage and exits 0 (it was read as the path of a
    config file: a FileNotFoundError traceback)."""
    runner = _load("_runner")
    script = str(EXPERIMENTS / f"{name}.py")
    with pytest.raises(SystemExit) as exit_:
        runner.parse_args(script, [script, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: python {name}.py [CONFIG.toml] [--out DIR]" in out
    assert out.split("\n")[0] == _load(name).__doc__.strip().split("\n")[0]
