"""`centralpath sweep`: batched runs equal per-configuration `simulate`, sharding and resume
change no number, and bad sweep files fail in one line.

Two small groups keep compilation to a few programs: the renormalised flow (GD and the closed
form, seeds × mean scales) and the reduced UFM (GD, ridges λ_W batched).
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _compile import default_compile_env

import centralpath as cp
from centralpath import simulate as sim, sweep as sw
from centralpath._series import Status
from centralpath.cli import main
from centralpath.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent

SWEEP_TOML = """
classes = 3
per_class = 4
dim = 4
methods = ["gd"]
t_end = 100.0
num_saves = 4
record = "all"

[sweep]
seeds = 2
flow = ["renormalised", "ufm"]
lam_w = [1e-3, 1e-2]
"""


def _eta(flow):
    return {"renormalised": 5.0, "ufm": 0.25}[flow]


def _spec(text=SWEEP_TOML):
    import tomllib

    raw = tomllib.loads(text)
    return sw.parse_sweep(raw)


def _close(a: dict, b: dict, rtol: float) -> None:
    """Quantity by quantity, normwise; quantities that are rounding noise (< 1e-10: L_perp and
    ‖W̃ − W̃_LS‖ on the central path) are skipped, NaN patterns must agree."""
    for key in a:
        if key not in b:
            continue
        x, y = np.asarray(a[key], float), np.asarray(b[key], float)
        assert x.shape == y.shape, key
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=key)
        if not x.size or np.all(np.isnan(x)):
            continue
        scale = float(np.nanmax(np.abs(y)))
        if scale < 1e-10:
            continue
        assert float(np.nanmax(np.abs(x - y))) <= rtol * scale, (key, x, y)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The sweep of SWEEP_TOML (η per flow), written once with the command line."""
    base = tmp_path_factory.mktemp("sweep")
    text = SWEEP_TOML.replace('methods = ["gd"]', 'methods = ["gd"]\neta = 0.5')
    # The renormalised flow needs a larger step to move within t_end: a separate eta by flow
    # is not sweepable with another key, so give each flow its own file.
    files = {}
    for flow in ("renormalised", "ufm"):
        t = text.replace('flow = ["renormalised", "ufm"]', f'flow = ["{flow}"]')
        t = t.replace("eta = 0.5", f"eta = {_eta(flow)}")
        if flow == "ufm":  # stop before the features collapse: ω_j of Σ_W → 0 is ill-conditioned
            t = t.replace("t_end = 100.0", "t_end = 10.0")
        files[flow] = base / f"{flow}.toml"
        files[flow].write_text(t)
    outs = {}
    for flow, path in files.items():
        out = base / f"run-{flow}"
        assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 0
        outs[flow] = out
    return files, outs


def _child_env(host_devices: int = 0, default_compile: bool = False) -> dict:
    """Environment of a child Python: this checkout importable, CPU only, (if asked) that many
    host devices (the flag must be set before jax starts, hence a child) and XLA's default
    compile rather than the suite's quick one (for assertions about rounding)."""
    env = default_compile_env() if default_compile else dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if host_devices:
        flag = f"--xla_force_host_platform_device_count={host_devices}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    return env


def _by_config(path: Path) -> dict:
    """results.csv → {(swept values…): {quantity: array [T, k]}}."""
    with open(path / "results.csv", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    swept = header[: header.index("time")]
    grouped: dict = {}
    for r in rows:
        key = tuple(r[: len(swept)])
        t, q, j, v = float(r[len(swept)]), r[len(swept) + 1], int(r[len(swept) + 2]), r[-1]
        grouped.setdefault(key, {}).setdefault(q, {})[(t, j)] = float(v)
    out = {}
    for key, qs in grouped.items():
        out[key] = {}
        for q, cells in qs.items():
            times = sorted({t for t, _ in cells})
            idx = sorted({j for _, j in cells})
            out[key][q] = np.asarray([[cells.get((t, j), np.nan) for j in idx] for t in times])
    return out


def _at_distinct_times(results: dict, quantity: str) -> np.ndarray:
    times = results[quantity.split("/")[0] + "/times"]
    _, first = np.unique(times, return_index=True)
    return np.asarray(results[quantity])[first]


def test_parse_expands_the_product_and_groups_by_shape():
    spec = _spec()
    assert spec.swept == ("seed", "flow", "lam_w")
    assert len(spec.configs) == 2 * 2 * 2
    assert [c["seed"] for c in spec.configs[:4]] == [0, 0, 0, 0]  # first key varies slowest
    groups = sw.groups(spec.configs)
    # seed and lam_w batch; the flow splits: two groups of four.
    assert sorted(len(g) for g in groups) == [4, 4]
    assert {spec.configs[i]["flow"] for i in groups[0]} == {"renormalised"}


@pytest.mark.parametrize("flow", ["renormalised", "ufm"])
def test_batched_equals_simulate(run, flow):
    """Every swept configuration: the sweep's numbers are simulate's (GD and closed form)."""
    files, outs = run
    spec = sw.load_sweep(files[flow])
    table = _by_config(outs[flow])
    for config in spec.configs:
        ref = simulate(config)
        key = tuple(sw.cell(config[k]) for k in spec.swept)
        # The CSV holds one row per distinct time (GD saves repeat when round(t/η) does).
        ref = {
            q: _at_distinct_times(ref, q) for q in ref if not q.endswith(("times", "eta", "status"))
        }
        got = {q: v.reshape(np.shape(ref[q])) for q, v in table[key].items() if q in ref}
        series = {"gd", "closed_form"} if flow == "renormalised" else {"gd"}
        assert {q.split("/")[0] for q in got} == series
        _close(got, ref, 1e-12)


def test_batched_simulate_in_memory_matches_and_keeps_simulate_times():
    spec = _spec()
    configs = [c for c in spec.configs if c["flow"] == "ufm"]
    configs = [{**c, "eta": 0.25, "t_end": 10.0} for c in configs]
    res = sw.batched_simulate(configs, record="all")
    for c, r in zip(configs, res, strict=True):
        ref = simulate(c)
        np.testing.assert_array_equal(r["gd/times"], ref["gd/times"])
        _close({k: v for k, v in r.items() if not k.endswith("times")}, ref, 1e-12)


@pytest.mark.parametrize(
    "flow, extra",
    [("renormalised", {"eta": 5.0}), ("ufm", {"eta": 0.25, "t_end": 10.0}), ("central-path", {})],
)
def test_same_configuration_same_results_whichever_command_ran_it(flow, extra):
    """simulate and a one-configuration sweep write the same keys (series, quantities, status)
    and the same numbers: GD bitwise-or-rounding, the closed form to 1e-12; the sweep replaces
    the renormalised flows' ODE by their exact closed form, which simulate writes too."""
    config = {
        **sim.DEFAULTS,
        "flow": flow,
        "classes": 3,
        "per_class": 4,
        "dim": 4,
        "methods": ["gd"],
        "t_end": 100.0,
        "num_saves": 4,
        **extra,
    }
    ref = simulate(config)
    (got,) = sw.batched_simulate([config], record="all")
    assert set(got) == set(ref)
    for k in ref:
        assert np.shape(got[k]) == np.shape(ref[k]), k
    assert int(got["gd/status"]) == int(ref["gd/status"]) == 0
    np.testing.assert_array_equal(got["gd/times"], ref["gd/times"])
    _close(got, ref, 1e-12)


def test_a_diverged_run_is_reported_as_data_or_raised_on_request():
    """The same verdict in both commands: NaN metrics from the divergence on and a status, or
    (simulate's default, the command line's choice) a NumericalError."""
    config = {
        **sim.DEFAULTS,
        "flow": "ufm",
        "classes": 3,
        "per_class": 4,
        "dim": 4,
        "methods": ["gd"],
        "t_end": 100.0,
        "num_saves": 6,
        "eta": 5.0,
    }
    with pytest.warns(cp.CentralpathWarning, match="beyond the largest stable step"):
        with pytest.raises(cp.NumericalError, match="diverged"):
            simulate(config)
        ref = simulate(config, throw=False)
        (got,) = sw.batched_simulate([config], record="all")
    for res in (ref, got):
        assert int(res["gd/status"]) == int(Status.gd_diverged)
        nc1 = res["gd/nc1"]
        assert np.isfinite(nc1[0]) and np.isnan(nc1[-1])
    np.testing.assert_array_equal(np.isnan(got["gd/nc1"]), np.isnan(ref["gd/nc1"]))


def test_closed_form_etf_distance_at_t0_matches_the_metric(run):
    """closed_form/etf_distance comes from ω alone; at t = 0 it must equal the metric of M̄."""
    _, outs = run
    table = _by_config(outs["renormalised"])
    for res in table.values():
        np.testing.assert_allclose(
            res["closed_form/etf_distance"][0], res["gd/etf_distance"][0], rtol=1e-12
        )


def test_resume_skips_done_groups_and_gives_identical_output(tmp_path, monkeypatch):
    spec = _spec(SWEEP_TOML.replace('methods = ["gd"]', 'methods = ["gd"]\neta = 0.5'))
    full = sw.write_sweep(spec, tmp_path / "full")
    calls = []
    real = sw.batched_simulate

    def interrupted(configs, **kw):
        calls.append(len(configs))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(configs, **kw)

    monkeypatch.setattr(sw._write, "batched_simulate", interrupted)  # what run_sweep calls
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        sw.write_sweep(spec, out)
    assert not out.exists() and (tmp_path / ".resumed.partial" / "groups").is_dir()
    calls.clear()
    monkeypatch.setattr(
        sw._write, "batched_simulate", lambda c, **kw: (calls.append(len(c)), real(c, **kw))[1]
    )
    sw.write_sweep(spec, out, resume=True)
    assert calls == [4]  # only the unfinished group ran
    assert (out / "results.csv").read_bytes() == (full / "results.csv").read_bytes()
    assert (out / "config.toml").read_text() == (full / "config.toml").read_text()


@pytest.mark.slow  # a child compiling the sweep for 1 and 4 devices (~11 s)
def test_sharded_over_four_host_devices_equals_unsharded(run, tmp_path):
    """The same sweep on 4 host devices and on 1, in one child compiled as users' programs are
    (tests/_compile.py): the GD objective bit for bit, every quantity to 1e-12 — and to 1e-12
    of this process's run too."""
    files, outs = run
    out = {d: tmp_path / f"devices-{d}" for d in ("1", "4")}
    _sweep_in_child(files["ufm"], out, host_devices=4, default_compile=True)
    import json

    assert json.loads((out["4"] / "metadata.json").read_text())["mesh_devices"] == 4
    a, b, here = _by_config(out["4"]), _by_config(out["1"]), _by_config(outs["ufm"])
    assert a.keys() == b.keys() == here.keys()
    for key in a:
        _close(a[key], b[key], 1e-12)
        _close(a[key], here[key], 1e-12)
        # The GD states do not depend on the device count (chunks of a fixed size, loops whose
        # count is data); the metrics are bitwise equal too in most runs, but XLA compiles the
        # unpartitioned 1-device program differently and an ulp can remain (centralpath.sweep).
        np.testing.assert_array_equal(a[key]["gd/objective"], b[key]["gd/objective"])


@pytest.mark.slow  # ~20 s of compiles; tests/test_accumulate.py keeps 4 host devices in the quick tier
def test_two_and_four_devices_give_bitwise_identical_tables(tmp_path):
    """The central-path flow (least-squares solves in every step) by GD and by the shared
    vector ODE: every number the same bit for bit on 2 devices and on 4, where each device
    holds a single configuration (a loop XLA would delete if it could see its count; see the
    Devices notes of centralpath.sweep)."""
    text = SWEEP_TOML.replace('methods = ["gd"]', 'methods = ["gd", "ode"]\neta = 5.0')
    text = text.replace('flow = ["renormalised", "ufm"]', 'flow = ["central-path"]')
    path = tmp_path / "cp.toml"
    path.write_text(text)
    two, four = _tables_on_two_and_four_devices(path, tmp_path, default_compile=False)
    assert two == four
    quantities = {row.split(",")[-3] for row in two.splitlines()[1:]}
    assert {"gd/objective", "ode/objective", "ode/nc1", "gd/loss_perp"} <= quantities


def _sweep_in_child(path, outs: dict, *, host_devices: int, default_compile: bool) -> None:
    """Run the sweep `path` once per device count in one child process with that many host
    devices: `outs` maps each count (e.g. "2") to its output directory."""
    script = (
        "import sys; from centralpath.cli import main; "
        "sys.exit(max(main(['sweep', sys.argv[1], '--out', out, '--devices', d, '--quiet']) "
        "for d, out in zip(sys.argv[2::2], sys.argv[3::2])))"
    )
    pairs = [str(x) for d, out in outs.items() for x in (d, out)]
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path), *pairs],
        env=_child_env(host_devices=host_devices, default_compile=default_compile),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr


def _tables_on_two_and_four_devices(path, tmp_path, *, default_compile: bool):
    """results.csv of the sweep `path` run on 2 and on 4 host devices, in one child process."""
    outs = {d: tmp_path / f"d{d}" for d in ("2", "4")}
    _sweep_in_child(path, outs, host_devices=4, default_compile=default_compile)
    return tuple((outs[d] / "results.csv").read_text() for d in ("2", "4"))


# The full-feature UFM with one configuration per device on 4 devices: under the command
# line's quick compile its GD metrics rounded differently from 2 devices (up to 2e-15) until a
# shard of a single chunk ran as a loop over two (map_chunks); at C = 3, N = 4 they agreed.
ONE_PER_DEVICE_UFM = """
flow = "ufm"
representation = "full"
classes = 4
per_class = 5
dim = 4
methods = ["gd"]
eta = 0.1
t_end = 1.0

[sweep]
seeds = 4
"""


@pytest.mark.slow
def test_one_configuration_per_device_gives_the_bits_of_two(tmp_path):
    """The full-feature UFM by vectorised GD, 4 configurations on 2 devices and on 4 (one
    each), compiled as the command line compiles for its users: the same table bit for bit."""
    path = tmp_path / "ufm.toml"
    path.write_text(ONE_PER_DEVICE_UFM)
    two, four = _tables_on_two_and_four_devices(path, tmp_path, default_compile=True)
    assert two == four
    quantities = {row.split(",")[-3] for row in two.splitlines()[1:]}
    assert {"gd/objective", "gd/nc1", "gd/nc3", "gd/snr"} <= quantities


def test_a_list_of_quantities_keeps_exactly_those(tmp_path):
    """`quantities = [...]`: results.csv holds those metrics (and nothing else) for every config."""
    cfg = tmp_path / "q.toml"
    cfg.write_text(
        'flow = "ufm"\nclasses = 3\nper_class = 4\ndim = 4\nmethods = ["gd"]\neta = 0.5\n'
        't_end = 5.0\nquantities = ["nc1", "objective"]\n[sweep]\nseeds = 3\n'
    )
    out = tmp_path / "run"
    assert main(["sweep", str(cfg), "--out", str(out), "--quiet"]) == 0
    by_config = _by_config(out)
    assert len(by_config) == 3
    for quantities in by_config.values():
        assert set(quantities) == {"gd/nc1", "gd/objective"}
        assert all(np.all(np.isfinite(v)) for v in quantities.values())


def test_plot_of_a_sweep_says_there_is_nothing_to_draw(run, capsys):
    _, outs = run
    assert main(["plot", str(outs["ufm"])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "holds a sweep" in err


LAUNCH = """
import sys, jax
port, pid = sys.argv[1], int(sys.argv[2])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
from centralpath.cli import main
raise SystemExit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_two_process_sweep_equals_one_process(run, tmp_path):
    """The multi-host path on one machine: 2 processes joined by jax.distributed (CPU
    collectives over gloo), a shared file system, process 0 writing. The same table, bit for
    bit, as one process on 2 host devices (the same partitioned program); against one device,
    the objective bitwise and the metrics to rounding. Every run compiles as the command line
    does for its users (tests/_compile.py): under the suite's -O0 one device's objective was an
    ulp off."""
    import socket

    files, _ = run
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = str(sock.getsockname()[1])
    env = _child_env(default_compile=True)
    out = tmp_path / "two-process"
    args = ["sweep", str(files["ufm"]), "--out", str(out), "--quiet"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LAUNCH, port, str(pid), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    one = {d: tmp_path / f"one-process-{d}" for d in ("1", "2")}
    _sweep_in_child(files["ufm"], one, host_devices=2, default_compile=True)
    import json

    assert json.loads((out / "metadata.json").read_text())["mesh_devices"] == 2
    assert (out / "results.csv").read_text() == (one["2"] / "results.csv").read_text()
    a, b = _by_config(out), _by_config(one["1"])
    assert a.keys() == b.keys()
    for key in a:
        _close(a[key], b[key], 1e-12)
        np.testing.assert_array_equal(a[key]["gd/objective"], b[key]["gd/objective"])


BAD = {
    "unknown top-level key": ("clases = 3\n[sweep]\nseeds = 2\n", "unknown key 'clases'"),
    "no sweep table": ("classes = 3\n", "no [sweep] table"),
    "empty sweep table": ("[sweep]\n", "is empty"),
    "empty list": ("[sweep]\nlam_w = []\n", "empty list"),
    "not a list": ("[sweep]\nlam_w = 0.1\n", "must be a list"),
    "bad element type": ('[sweep]\nlam_w = [0.1, "x"]\n', "must be float"),
    "unknown swept key": ("[sweep]\nlamw = [0.1]\n", "unknown key 'lamw'"),
    "seeds and seed": ("[sweep]\nseeds = 2\nseed = [1]\n", "not both"),
    "bad seeds count": ("[sweep]\nseeds = 0\n", "count >= 1"),
    "unsweepable key": ('[sweep]\nmethods = [["gd"]]\n', "cannot be swept"),
    "invalid configuration": ("[sweep]\nclasses = [1, 3]\n", "classes must be >= 2"),
    "unknown quantity": ('quantities = ["ncl"]\n[sweep]\nseeds = 1\n', "unknown quantity 'ncl'"),
    "bad precision": ('precision = "half"\n[sweep]\nseeds = 1\n', "precision must be"),
    "nc4 of a reduced state": (
        'quantities = ["nc4"]\n[sweep]\nseeds = 1\n',
        "nc4 needs the samples",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_sweep_files_fail_in_one_line(name, tmp_path, capsys):
    text, message = BAD[name]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code = main(["sweep", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_resume_without_an_interrupted_sweep_fails_in_one_line(tmp_path, capsys):
    code = main(["sweep", "--resume", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no interrupted sweep" in err


@pytest.mark.parametrize(
    "flow, representation",
    [
        ("ufm", "reduced"),
        # The other two compile the same programs at another flow or representation (~10 s each).
        pytest.param("ufm", "full", marks=pytest.mark.slow),
        pytest.param("central-path", "reduced", marks=pytest.mark.slow),
    ],
)
def test_one_point_sweep_is_simulate_ode_and_gd(flow, representation):
    """simulate and a one-configuration sweep run the ODE through the same solve (the same
    solver, segments and carried controller; the sweep's batch norm is the RMS norm for one
    configuration): the same keys and the same numbers to 1e-12, ODE and GD. (With Diffrax's
    stock Tsit5 and a max norm the sweep was 1.07e-10 off.)"""
    config = {
        **sim.DEFAULTS,
        "flow": flow,
        "representation": representation,
        "classes": 4,
        "per_class": 10,
        "dim": 8,
        "methods": ["ode", "gd"],
        "t_end": 50.0,
        "num_saves": 5,
        "eta": 0.25,
    }
    ref = simulate(config)
    (got,) = sw.batched_simulate([config], record="all")
    assert set(got) == set(ref)
    assert int(got["ode/status"]) == int(ref["ode/status"]) == 0
    for k in ref:
        if k.endswith(("status", "eta")):
            continue
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_a_sweep_recording_the_final_save_is_simulates_last_ode_save():
    """`record = "final"` (the default) keeps the last save of the same segmented solve: the
    ODE's numbers equal simulate's at t_end to 1e-12 (it used to fail on an empty grid)."""
    config = {
        **sim.DEFAULTS,
        "flow": "ufm",
        "classes": 3,
        "per_class": 5,
        "dim": 4,
        "methods": ["ode"],
        "t_end": 20.0,
        "num_saves": 4,
    }
    ref = simulate(config)
    (got,) = sw.batched_simulate([config], record="final")
    for k, v in got.items():
        if k.startswith("ode/") and k not in ("ode/status", "ode/times"):
            np.testing.assert_allclose(v[-1], ref[k][-1], rtol=1e-12, atol=1e-12, err_msg=k)
    assert float(got["ode/times"][-1]) == float(ref["ode/times"][-1])
