"""Outputs that stand alone: figure titles name the run's configuration, legends say what a line
is, the analyze table explains its columns, train's summary has no None, simulate --help says how
to pick --t-end, and `plot` draws every kind of run directory the package writes (or refuses)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath import plotting
from centralpath.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "figures"
RUN_KINDS = sorted(p.name for p in FIGURES.iterdir() if (p / "results.npz").is_file())


def _titles(fig) -> str:
    return "\n".join([fig.get_suptitle(), *(ax.get_title() for ax in fig.axes)])


@pytest.mark.parametrize(
    "name, words",
    [
        ("closed_form", "F3 renormalised flow: C = 5, N = 20, p = 16"),
        ("ufm_collapse", "F1 UFM flow: C = 4, N = 10, p = 8, λ_W = 0.005, λ_H = 0.005"),
        ("gd_convergence", "F3 renormalised flow: C = 5, N = 20, p = 16"),
        ("digits_mlp", "digits, MLP, MSE loss, 400 epochs"),
        ("paper", "digits, mnist, mnist1d × mlp, cnn × mse, ce"),
    ],
)
def test_the_configuration_line_of_each_run(name, words):
    """What each title's second line says (tests/test_figures.py checks every committed figure
    carries it; here one figure of the paper set, which that file does not draw)."""
    from centralpath._run.rundir import verify_run

    config = plotting.read_run_config(FIGURES / name)
    assert plotting.describe_run(config) == words
    if name == "paper":
        import matplotlib.pyplot as plt

        kind, results = verify_run(FIGURES / name)
        fig = plotting.figures_for(kind, results, config)["nc1"]()
        assert words in fig.axes[0].get_title()
        plt.close(fig)


def test_the_lines_say_what_they_are():
    import matplotlib.pyplot as plt

    results = dict(np.load(FIGURES / "digits_mlp" / "results.npz"))
    fig = plotting.figure_invariant(results)
    assert "theory: 0" in " ".join(fig.axes[0].get_legend_handles_labels()[1])
    for make in (plotting.figure_time_map, plotting.figure_measured_vs_predicted):
        fig = make(results)
        assert any("free time map" in t for t in fig.axes[0].get_legend_handles_labels()[1])
        plt.close(fig)


def test_simulate_help_says_how_to_pick_t_end(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = capsys.readouterr().out
    assert "choosing --t-end" in text and "t = N*(C-1)^2/(4*x^2)" in text
    # The rule is the closed form's: at t = N(C−1)²/(4x²) from an ordinary start, NC1 ≈ x.
    C, N, x = 4, 10, 1e-2
    t = N * (C - 1) ** 2 / (4 * x**2)
    assert "t ~ 2e5" in text and 1.5e5 < t < 2.5e5
    omega_t = cp.eigen_dynamics(np.array([3.0, 2.0, 1.0]), C, N)(np.array([t]))
    assert_allclose(float(cp.nc1_from_snr(omega_t)[0]), x, rtol=0.05)


def test_analyze_prints_a_legend_under_its_table(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    path = tmp_path / "f.npz"
    np.savez(path, features=rng.normal(size=(30, 4)) + 3 * np.eye(3, 4)[y], labels=y)
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("legend: NC1 = ") and "- = not measured" in out[-1]


def test_train_summary_says_what_was_not_reached():
    from centralpath.cli.train import _summary_line

    results = {"train/perp_rel": np.array([0.7, 0.1])}
    base = {"final_train_accuracy": 0.9, "final_test_accuracy": None, "test_split": None}
    never = _summary_line(
        {**base, "first_zero_error_epoch": None, "nc1_drop_from_first_zero_error": None}, results
    )
    assert "None" not in never and "never reached 1" in never
    between = _summary_line(
        {**base, "first_zero_error_epoch": 7, "nc1_drop_from_first_zero_error": None}, results
    )
    assert "None" not in between and "first zero-error epoch 7" in between
    reached = _summary_line(
        {**base, "first_zero_error_epoch": 7, "nc1_drop_from_first_zero_error": 12.5}, results
    )
    assert "NC1 drop since then 12.5x" in reached


def test_plot_knows_every_kind_of_run_under_figures():
    """The figures `plot` would draw for each committed run are the committed ones (the
    drawing itself: below, and every kind under -m slow)."""
    from centralpath._run.rundir import verify_run

    for name in RUN_KINDS:
        kind, results = verify_run(FIGURES / name)
        stems = set(plotting.figures_for(kind, results))
        assert stems == {p.stem for p in (FIGURES / name / "figures").glob("*.png")}, name


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[] if n == "gd_convergence" else pytest.mark.slow) for n in RUN_KINDS],
)
def test_plot_draws_every_kind_of_run_under_figures(name, tmp_path, capsys):
    """Written into a temporary folder: the committed figures are never touched (~15-30 s a
    run on a loaded 2-core machine: one in the default suite, all with -m slow)."""
    assert main(["plot", str(FIGURES / name), "--to", str(tmp_path), "--quiet"]) == 0
    drawn = {p.name for p in (tmp_path / "figures").iterdir()}
    committed = {p.name for p in (FIGURES / name / "figures").iterdir()}
    assert drawn == committed and any(n.endswith(".png") for n in drawn)


def test_plot_refuses_a_run_it_does_not_draw(tmp_path, capsys):
    run = tmp_path / "odd"
    shutil.copytree(FIGURES / "gd_convergence", run)
    meta = json.loads((run / "metadata.json").read_text())
    meta["command"] = "predict"
    (run / "metadata.json").write_text(json.dumps(meta))
    (run / ".centralpath-run").unlink()  # it records the digest of the old metadata
    assert main(["plot", str(run), "--to", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "plot does not draw" in err
    assert not (tmp_path / "out").exists()
    # Results that hold no series a figure draws: refused, no empty folder.
    np.savez(run / "results.npz", nothing=np.zeros(3))
    meta["command"] = "simulate"
    meta.pop("files", None)
    meta.pop("results_members", None)
    (run / "metadata.json").write_text(json.dumps(meta))
    assert main(["plot", str(run), "--to", str(tmp_path / "out")]) == 2
    assert "hold no series a figure draws" in capsys.readouterr().err
    assert not (tmp_path / "out" / "figures").exists()
