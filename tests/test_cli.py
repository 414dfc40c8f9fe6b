"""Each command end to end on a tiny configuration: exit status, run directory, figures."""

import json
import re
import tomllib

import numpy as np
import pytest
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath.cli import main

TINY = ["--classes", "3", "--per-class", "4", "--dim", "3", "--t-end", "100", "--num-saves", "6"]


def _run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _check_run_dir(path, series):
    assert (path / "config.toml").is_file() and (path / "metadata.json").is_file()
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["versions"]["jax"] and meta["wall_time_s"] > 0
    results = dict(np.load(path / "results.npz"))
    for s in series:
        assert f"{s}/times" in results
    header = (path / "results.csv").read_text().splitlines()[0]
    assert header == "time,quantity,index,value"
    assert not list(path.parent.glob(f".{path.name}.partial"))
    return results


def test_simulate_says_when_omega_has_not_moved(tmp_path, capsys):
    """A run too short for its N (ω_j within 1% of their start) says so with the fix; a run
    whose ω_j grow does not."""
    base = ["simulate", "--flow", "renormalised", "--classes", "3", "--per-class", "4", "--dim",
            "3", "--num-saves", "6", "--methods", "ode", "--no-figures"]  # fmt: skip
    code, stdout, err = _run([*base, "--t-end", "1e-4", "--out", str(tmp_path / "early")], capsys)
    assert code == 0, err
    note = [line for line in (stdout + err).splitlines() if line.startswith("note: omega_j")]
    assert len(note) == 1 and "raise --t-end" in note[0] and "N = 4" in note[0], stdout + err
    results = dict(np.load(tmp_path / "early" / "results.npz"))
    moved = np.max(np.abs(results["closed_form/snr"][-1] / results["closed_form/snr"][0] - 1))
    assert moved < 0.01
    code, stdout, err = _run([*base, "--t-end", "1e4", "--out", str(tmp_path / "grown")], capsys)
    assert code == 0, err
    assert "note: omega_j" not in stdout + err
    results = dict(np.load(tmp_path / "grown" / "results.npz"))
    assert np.max(results["closed_form/snr"][-1] / results["closed_form/snr"][0]) > 1.01


@pytest.mark.parametrize("flow", ["renormalised", "whitened", "central-path", "ufm"])
def test_simulate_each_flow(tmp_path, capsys, flow):
    out = tmp_path / flow
    args = [
        "simulate",
        "--flow",
        flow,
        *TINY,
        "--eta",
        "0.2" if flow == "ufm" else "1",
        "--out",
        str(out),
        "--quiet",
        "--no-figures",
    ]
    code, stdout, err = _run(args, capsys)
    assert code == 0, err
    series = ["ode", "gd"] + (["closed_form"] if flow in ("renormalised", "whitened") else [])
    results = _check_run_dir(out, series)
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["flow"] == flow and config["classes"] == 3
    # Moment-reduced by default: no samples, so no NC4 series (rather than one of NaN).
    assert config["representation"] == "reduced"
    assert "ode/nc4" not in results and "gd/nc4" not in results and "ode/nc1" in results
    # The ODE and the closed form agree (closed form only for the renormalised flows).
    if "closed_form/snr" in results:
        assert_allclose(results["ode/snr"], results["closed_form/snr"], rtol=1e-8)
    assert np.all(np.diff(results["ode/objective"]) <= 1e-14)


@pytest.mark.parametrize("t_end", ["10", "1e5"])
def test_simulate_automatic_eta(tmp_path, capsys, t_end):
    """No --eta: half the stable step 2/ρ at the initial state, capped at t-end/100 so a short
    horizon still takes 100 steps (the stable step of this flow is ~400: the cap binds at 10)."""
    from centralpath._discrete import stable_step_size
    from centralpath.simulate import SimulationConfig, build

    out = tmp_path / "run"
    args = ["simulate", "--flow", "whitened", *TINY[:6], "--t-end", t_end, "--methods", "gd"]
    code, _, err = _run([*args, "--out", str(out), "--quiet", "--no-figures"], capsys)
    assert code == 0, err
    config = SimulationConfig(**tomllib.loads((out / "config.toml").read_text()))
    flow, y0, _ = build(config)
    expected = min(0.5 * stable_step_size(flow, y0), float(t_end) / 100)
    eta = float(np.load(out / "results.npz")["gd/eta"])
    assert_allclose(eta, expected, rtol=1e-12)
    assert (eta == float(t_end) / 100) == (t_end == "10")


def test_simulate_config_file_and_flag_override(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'flow = "central-path"\nclasses = 3\nper_class = 4\ndim = 3\nt_end = 50.0\nnum_saves = 4\n'
        'methods = ["ode"]\n'
    )
    out = tmp_path / "run"
    code, _, err = _run(
        [
            "simulate",
            "--config",
            str(cfg),
            "--dim",
            "4",
            "--out",
            str(out),
            "--quiet",
            "--no-figures",
        ],
        capsys,
    )
    assert code == 0, err
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["flow"] == "central-path" and config["dim"] == 4 and config["methods"] == ["ode"]
    results = _check_run_dir(out, ["ode"])
    assert "gd/times" not in results


@pytest.mark.parametrize(
    "args",
    [
        ["--flow", "nope"],
        ["--dim", "1"],  # p < C - 1
        ["--per-class", "1"],
        ["--t-end", "0"],
        ["--t-end", "-5"],
        ["--lam-w", "-1"],
        ["--flow", "renormalised", "--lam", "0.1"],
        ["--methods", "ode,euler"],
        ["--representation", "sparse"],
    ],
)
def test_simulate_bad_input(tmp_path, capsys, args):
    base = ["simulate", "--classes", "3", "--per-class", "4", "--dim", "3", "--t-end", "10"]
    code, _, err = _run([*base, *args, "--out", str(tmp_path / "x"), "--quiet"], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_solver_tolerances_floor_at_the_working_precision():
    """rtol/atol below 100 ulp cannot be met (the controller would shrink steps until max_steps
    runs out): they are raised to 100 ulp; float64 keeps any sensible setting."""
    import jax

    from centralpath.simulate import solver_tolerances

    assert solver_tolerances(1e-10, 1e-12) == (1e-10, 1e-12)
    with jax.enable_x64(False):
        floor = 100 * float(np.finfo(np.float32).eps)
        assert solver_tolerances(1e-10, 1e-12) == (floor, floor)
        assert solver_tolerances(1e-3, 1e-4) == (1e-3, 1e-4)


def test_simulate_float32_ode_finishes(tmp_path):
    """--precision float32 with the default (float64) tolerances: the ODE finishes in a few
    hundred steps and says that it raised the tolerances (a subprocess: the flag switches x64
    off for the whole process)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "f32"
    args = ["simulate", "--flow", "ufm", *TINY, "--methods", "ode", "--precision", "float32"]
    proc = subprocess.run(
        [sys.executable, "-m", "centralpath.cli", *args, "--out", str(out), "--no-figures"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rtol/atol raised to 1.2e-05/1.2e-05" in proc.stderr + proc.stdout
    results = np.load(out / "results.npz")
    assert results["ode/objective"].dtype == np.float32
    assert np.all(np.isfinite(results["ode/objective"]))
    assert np.all(np.diff(results["ode/objective"]) <= 1e-6 * results["ode/objective"][0])


def test_save_times_end_at_t_end():
    from centralpath.simulate import save_times

    assert_allclose(save_times(10.0, 2), [0.0, 10.0], rtol=0)
    ts = save_times(10.0, 5)
    assert ts[0] == 0 and ts[-1] == 10.0 and len(ts) == 5 and np.all(np.diff(ts) > 0)


def test_simulate_two_saves_reach_t_end(tmp_path, capsys):
    out = tmp_path / "two"
    args = ["simulate", "--flow", "ufm", *TINY[:6], "--t-end", "10", "--num-saves", "2"]
    code, _, err = _run([*args, "--out", str(out), "--quiet", "--no-figures"], capsys)
    assert code == 0, err
    results = np.load(out / "results.npz")
    assert_allclose(results["ode/times"], [0.0, 10.0], rtol=0)
    assert_allclose(results["gd/times"][-1], 10.0, rtol=1e-12)


def test_simulate_huge_t_end_names_the_step_count(tmp_path, capsys):
    """1e300 / η overflows int64: the count is checked as a float first."""
    args = ["simulate", "--flow", "ufm", *TINY[:6], "--t-end", "1e300", "--methods", "gd"]
    code, _, err = _run([*args, "--out", str(tmp_path / "r"), "--quiet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(r"gradient descent would take [\d.]+e\+\d{3} steps", err), err


def test_simulate_ode_failure_reports_run_time(tmp_path, capsys):
    """A segment's solve starts its clock at 0; the message gives the run's time instead."""
    args = ["simulate", "--flow", "central-path", *TINY[:6], "--t-end", "1e4", "--methods", "ode"]
    code, _, err = _run(
        [*args, "--max-steps", "5", "--out", str(tmp_path / "r"), "--quiet"], capsys
    )
    assert code == 1 and len(err.strip().splitlines()) == 1
    m = re.search(
        r"stopped at t = ([\d.e+-]+), between the save times ([\d.e+-]+) and ([\d.e+-]+)", err
    )
    assert m, err
    t, lo, hi = (float(x) for x in m.groups())
    assert lo < t < hi and lo > 0
    assert "raise max_steps above 5" in err


def test_simulate_bad_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("clases = 3\n")
    code, _, err = _run(["simulate", "--config", str(cfg), "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "unknown key 'clases'" in err


def test_simulate_diverging_step_is_runtime_failure(tmp_path, capsys):
    args = [
        "simulate",
        "--flow",
        "ufm",
        *TINY,
        "--methods",
        "gd",
        "--eta",
        "5",
        "--out",
        str(tmp_path / "x"),
        "--quiet",
        "--no-figures",
    ]
    code, _, err = _run(args, capsys)
    assert code == 1, err
    assert "diverged" in err and "stable step" in err
    # The step was beyond 2/ρ: a warning said so before the run, then the divergence ended it.
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "warning: eta = 5 is beyond the largest stable step" in lines[0]
    assert not (tmp_path / "x").exists()


def test_existing_out_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    code, _, err = _run(["simulate", *TINY, "--out", str(out), "--quiet"], capsys)
    assert code == 2 and "--overwrite" in err


def test_predict_json_matches_closed_form(tmp_path, capsys):
    out = tmp_path / "p.json"
    code, stdout, _ = _run(
        [
            "predict",
            "--classes",
            "4",
            "--per-class",
            "10",
            "--omega0",
            "0.5,2,1",
            "--times",
            "0,10,1e5",
            "--json",
            str(out),
        ],
        capsys,
    )
    assert code == 0 and "omega_1" in stdout
    data = json.loads(out.read_text())
    assert data["times"] == [0.0, 10.0, 1e5]
    omega = np.asarray(data["omega"])
    assert omega.shape == (3, 3)
    # omega_1 is the largest, as everywhere: the given order is sorted, and stays sorted.
    assert data["omega0"] == [2.0, 1.0, 0.5]
    assert_allclose(omega[0], [2.0, 1.0, 0.5], rtol=1e-13)
    assert np.all(np.diff(omega, axis=1) <= 0)
    F = cp.potential(4, 10)
    assert_allclose(
        np.asarray(F(omega)) - np.asarray(F(omega[0])),
        [[0.0] * 3, [10.0] * 3, [1e5] * 3],
        rtol=1e-10,
        atol=1e-8,
    )
    code, _, _ = _run(
        [
            "predict",
            "--classes",
            "4",
            "--per-class",
            "10",
            "--omega0",
            "1",
            "--times",
            "5",
            "--kappa",
            "2",
            "--json",
            str(out),
        ],
        capsys,
    )
    assert_allclose(
        json.loads(out.read_text())["omega"][0][0],
        np.asarray(cp.eigen_dynamics(np.array([1.0]), 4, 10)(10.0))[0],
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--omega0", "0,1"],
        ["--omega0", "-1"],
        ["--omega0", "1,2,3,4"],  # more than C-1
        ["--times", "-1"],
        ["--times", "1,abc"],
        ["--kappa", "0"],
        ["--classes", "1"],
        ["--per-class", "1"],
    ],
)
def test_predict_bad_input(capsys, args):
    base = {"--classes": "4", "--per-class": "10", "--omega0": "1,2", "--times": "0,1"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    flat = [x for kv in base.items() for x in kv]
    try:
        code = main(["predict", *flat])
    except SystemExit as e:  # argparse type errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _flow_features(tmp_path):
    """Features along the renormalised flow itself: the theory holds exactly."""
    import jax.numpy as jnp

    from centralpath._integrate import integrate
    from centralpath.measurement._io import save_features
    from centralpath.simulate import SimulationConfig, build

    cfg = SimulationConfig(classes=3, per_class=5, dim=3, representation="full", mean_scale=2.0)
    flow, X, _ = build(cfg)
    times = np.array([0.0, 5.0, 50.0, 500.0, 5000.0])
    states = [np.asarray(X)] + [
        np.asarray(integrate(flow, X, t, rtol=1e-12, atol=1e-14).final_state) for t in times[1:]
    ]
    path = tmp_path / "flow.npz"
    save_features(path, features=np.stack(states), labels=np.asarray(flow.labels), epochs=times)
    return path, times, jnp


def test_compare_and_plot_round_trip(tmp_path, capsys):
    path, times, _ = _flow_features(tmp_path)
    out = tmp_path / "cmp"
    js = tmp_path / "cmp.json"
    code, stdout, err = _run(
        ["compare", str(path), "--fit", "--json", str(js), "--out", str(out)], capsys
    )
    assert code == 0, err
    summary = json.loads(js.read_text())
    for key in ("a", "relative_error", "variance_explained", "drift_relative", "checkpoints"):
        assert key in summary
    # Per-checkpoint series are records, in the shape of analyze --json.
    rows = summary["checkpoints"]
    assert [r["epoch"] for r in rows] == list(times)
    assert_allclose([r["time_map"] for r in rows][1:], times[1:], rtol=1e-6)
    assert all({"snr", "nc1", "omega_predicted", "drift"} <= r.keys() for r in rows)
    assert summary["drift_relative"] < 1e-6
    results = _check_run_dir(out, ["train", "fit"])
    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.stem for p in pngs} >= {
        "measured_vs_predicted",
        "invariant",
        "time_map",
        "nc_metrics_train",
    }
    before = {p.name: p.read_bytes() for p in (out / "figures").iterdir()}
    redraw = tmp_path / "redraw"
    code, _, err = _run(["plot", str(out), "--to", str(redraw), "--quiet"], capsys)
    assert code == 0, err
    after = {p.name: p.read_bytes() for p in (redraw / "figures").iterdir()}
    assert before.keys() == after.keys()
    for name in before:
        assert before[name] == after[name], name
    # The figure's data are the saved results, not a recomputation.
    from centralpath.plotting import figure_measured_vs_predicted

    fig = figure_measured_vs_predicted(results)
    lines = fig.axes[0].get_lines()
    assert_allclose(lines[0].get_ydata(), results["fit/omega_measured"][:, 0], rtol=0)
    assert_allclose(lines[1].get_ydata(), results["fit/omega_predicted"][:, 0], rtol=0)


def test_compare_flags_an_inconsistent_trajectory(tmp_path, capsys):
    path, times, _ = _flow_features(tmp_path)
    data = dict(np.load(path))
    # Scale class 0's deviations up over time: Σ_W changes, ω_j no longer move together.
    labels = data["labels"]
    for k in range(len(times)):
        data["features"][k][labels == 0] *= 1.0 + k
    bad = tmp_path / "bad.npz"
    np.savez(bad, **data)
    js = tmp_path / "bad.json"
    assert _run(["compare", str(bad), "--fit", "--json", str(js), "--quiet"], capsys)[0] == 0
    assert json.loads(js.read_text())["drift_relative"] > 1e-2


def test_plot_missing_run(tmp_path, capsys):
    code, _, err = _run(["plot", str(tmp_path / "nope")], capsys)
    assert code == 2 and "does not exist" in err


def test_help_has_example_for_every_command(capsys):
    from centralpath.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "example:" in capsys.readouterr().out


def test_simulate_stops_at_nc1_target(tmp_path, capsys):
    out = tmp_path / "stop"
    args = [
        "simulate",
        "--flow",
        "renormalised",
        *TINY[:-4],
        "--t-end",
        "1e6",
        "--num-saves",
        "8",
        "--methods",
        "ode",
        "--nc1-target",
        "0.05",
        "--out",
        str(out),
        "--quiet",
        "--no-figures",
    ]
    code, _, err = _run(args, capsys)
    assert code == 0, err
    results = dict(np.load(out / "results.npz"))
    nc1, times = results["ode/nc1"], results["ode/times"]
    assert nc1[-1] < 0.05 <= nc1[-2]
    assert times[-1] < 1e6 and np.all(np.diff(times) > 0)
    # The stopping state lies on the closed form at the stopping time.
    omega = np.asarray(cp.eigen_dynamics(results["closed_form/snr"][0], 3, 4)(times[-1]))
    assert_allclose(results["ode/snr"][-1], omega, rtol=1e-8)


@pytest.mark.slow  # trains, simulates and compares (~15 s); tests/test_demo_report.py checks the report quickly
def test_demo_end_to_end_on_a_tiny_config(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        "[simulation]\nclasses = 3\nper_class = 4\ndim = 3\nt_end = 1e3\nnum_saves = 8\neta = 5.0\n\n"
        "[convergence]\nt = 200.0\netas = [20.0, 10.0, 5.0]\n\n"
        "[training]\nepochs = 6\nwidths = [32, 16]\nper_class = 10\nbatch_size = 25\nnum_checkpoints = 4\n"
    )
    out = tmp_path / "demo"
    code, stdout, err = _run(["demo", "--config", str(cfg), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    assert "report" in stdout
    results = _check_run_dir(out, ["ode", "gd", "closed_form", "train", "fit"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["simulation"]["ode_vs_closed_form_max_rel"] < 1e-7
    assert abs(summary["convergence"]["slope"] - 1.0) < 0.2
    assert summary["training"]["epochs"] == 6 and "perp_rel_last" in summary["training"]
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for stem in ("omega", "gd_convergence", "measured_vs_predicted", "nc_metrics_train"):
        assert (out / "figures" / f"{stem}.png").is_file() and (
            out / "figures" / f"{stem}.pdf"
        ).is_file()
        assert f"figures/{stem}.png" in md
    assert html.count("data:image/png;base64,") >= 4
    assert results["train/times"].shape == results["fit/time_map"].shape
    code, _, err = _run(["demo", "--config", str(cfg), "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in err


def test_demo_rejects_unknown_config_section(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[simulations]\nclasses = 3\n")
    code, _, err = _run(["demo", "--config", str(cfg), "--out", str(tmp_path / "d")], capsys)
    assert code == 2 and "unknown section" in err


@pytest.mark.parametrize("flow", ["renormalised", "whitened", "central-path", "ufm"])
def test_every_flow_warns_of_a_step_beyond_the_stable_bound(tmp_path, capsys, flow):
    """Three of four flows used to accept η far above 2/ρ silently (the renormalised step stays
    bounded while leaving the flow: ω = [3290, 131] against the closed form's [53.2, 53.1]).
    The warning is one line and shows with --quiet; a stable step gives none."""
    args = ["simulate", "--flow", flow, *TINY, "--methods", "gd", "--quiet", "--no-figures"]
    code, _, err = _run([*args, "--eta", "1e4", "--out", str(tmp_path / "x")], capsys)
    assert "warning: eta = 1e+04 is beyond the largest stable step 2/rho" in err, err
    code, _, err = _run([*args, "--out", str(tmp_path / "y")], capsys)
    assert code == 0 and "warning" not in err, err


@pytest.mark.parametrize("multi_host", [False, True])
def test_installed_program_skips_finalisation_except_in_a_multi_host_run(multi_host):
    """The `centralpath` program (main() reading sys.argv) ends with os._exit once its output is
    flushed — the interpreter's teardown took ~0.6 s — but a process of a multi-host run
    (jax.distributed) finalises, so that jax.distributed's own shutdown runs."""
    import subprocess
    import sys

    fake_client = (
        "from jax._src import distributed; distributed.global_state.client = object(); "
        if multi_host
        else ""
    )
    probe = (
        "import atexit, sys; atexit.register(lambda: print('finalised', flush=True)); "
        f"import jax; {fake_client}"
        "from centralpath.cli import main; "
        "sys.argv = ['centralpath', 'simulate', '--flow', 'nope']; sys.exit(main())"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "unknown flow 'nope'" in out.stderr  # flushed before the exit
    assert ("finalised" in out.stdout) == multi_host, out.stdout
