"""`simulate --from F --clock CLOCK --kappa K | --kappa-from JSON` (issue #31): the flow from a
network's checkpoint saved at compare's κ-clock times of the later checkpoints, t_k = κ·S(e_k).

The file is synthetic (the `_shrinking_features` of test_compare_predictive, with a learning rate
that changes every epoch so that S is no multiple of the epoch count): C = 3, N = 20, p = 4."""

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath.measurement._io import save_features

C, N, P, K = 3, 20, 4, 6
LAM = 5e-3
LR = np.array([0.1, 0.08, 0.12, 0.05, 0.1, 0.07])  # epoch e's rate is LR[e - 1]
MOMENTUM, STEPS = 0.9, 10
#: With η_eff = lr·10/(1 − 0.9) ≈ 10 an epoch, model times run to ~400: the central path's ω_j
#: move by tens of per cent there (test_compare_predictive's TIMES).
KAPPA = 10.0
E = 1.0  # the start: a checkpoint before the last


def _features(path, *, record=True):
    """A 'network' whose within-class spread halves each epoch, with the ridge least-squares
    classifier of each checkpoint (L_perp/L = 0), and the training record of the lr clock."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(C), N)
    means = 2.0 * rng.normal(size=(C, P))
    eps = rng.normal(size=(C * N, P))
    H = np.stack([means[labels] + 0.5**k * eps for k in range(K)])
    ls = [cp.least_squares_classifier(cp.class_stats(H[k], labels, C), LAM) for k in range(K)]
    extra = (
        dict(learning_rate=LR, momentum=np.float64(MOMENTUM), steps_per_epoch=np.int64(STEPS))
        if record
        else {}
    )
    save_features(
        path,
        features=H,
        labels=labels,
        W=np.stack([np.asarray(c.W) for c in ls]),
        b=np.stack([np.asarray(c.b) for c in ls]),
        epochs=np.arange(K, dtype=float),
        weight_decay=LAM,
        loss="mse",
        **extra,
    )
    return path


def _cli(capsys, *args):
    from centralpath.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The file, compare's prediction with the lr clock at κ from E (its JSON), and simulate's
    run with the same clock, κ given."""
    import contextlib
    import io

    from centralpath.cli import main

    tmp = tmp_path_factory.mktemp("clock")
    path = _features(tmp / "f.npz")
    js = tmp / "compare.json"

    def cli(*args):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in args])
        assert code == 0, err.getvalue()
        return err.getvalue()

    cli(
        "compare", path, "--model", "central-path", "--clock", "lr", "--kappa", KAPPA,
        "--from-epoch", E, "--json", js, "--quiet",
    )  # fmt: skip
    out = tmp / "sim"
    err = cli(
        "simulate", "--from", path, "--epoch", E, "--flow", "central-path", "--clock", "lr",
        "--kappa", KAPPA, "--out", out, "--no-figures",
    )  # fmt: skip
    return dict(
        tmp=tmp,
        path=path,
        json=js,
        compare=json.loads(js.read_text()),
        results=dict(np.load(out / "results.npz")),
        config=(out / "config.toml").read_text(),
        log=err,
        cli=cli,
    )


def test_saves_are_at_the_clock_times_of_the_checkpoints(run):
    r = run["results"]
    epochs = np.arange(K, dtype=float)
    later = epochs[epochs >= E]
    assert_allclose(r["ode/epochs"], later, rtol=0)
    # S(e) = Σ_{E < e' <= e} lr(e')·steps_per_epoch/(1 − momentum), lr(e') = LR[e' − 1].
    S = np.array([sum(LR[int(E) : int(e)]) for e in later]) * STEPS / (1 - MOMENTUM)
    assert S[0] == 0.0 and np.all(np.diff(S) > 0)
    assert_allclose(r["ode/times"], KAPPA * S, rtol=1e-15)
    # The log and the run's configuration say the clock, κ and where κ came from.
    assert f"clock lr: t = kappa * S(e), kappa = {KAPPA:g} (given)" in run["log"], run["log"]
    assert "epoch = 5" in run["log"]
    for line in ('clock = "lr"', "kappa = 10.0", 'kappa_source = "given"', "epoch = 1.0"):
        assert line in run["config"], run["config"]


def test_the_flow_at_the_checkpoints_is_compares_prediction(run):
    """Both solve the central path from the same measured state at E with the same solver and
    tolerances (rtol 1e-10, atol 1e-12, the defaults of both) up to the same last time, so they
    take the same steps and differ only where the save times fall between them: far below
    1e-8 (the ODE's own error, ~1e-10 relative, is common to both)."""
    r = run["results"]
    rows = run["compare"]["checkpoints"]
    assert run["compare"]["kappa"] == KAPPA and run["compare"]["from_epoch"] == E
    predicted = [row["predictions"]["central-path"] for row in rows[int(E) :]]
    assert_allclose(r["ode/times"], [p["flow_time"] for p in predicted], rtol=1e-15)
    omega = np.array([p["omega"] for p in predicted])
    assert np.max(np.abs(omega[-1] / omega[0] - 1)) > 0.1  # the flow moves: no vacuous match
    assert_allclose(r["ode/snr"], omega, rtol=1e-8, atol=0)
    assert_allclose(r["ode/nc1"], [p["nc1"] for p in predicted], rtol=1e-8, atol=0)


def test_kappa_from_a_compare_json_gives_the_same_times(run):
    out = run["tmp"] / "from-json"
    err = run["cli"](
        "simulate", "--from", run["path"], "--epoch", E, "--flow", "central-path", "--clock",
        "lr", "--kappa-from", run["json"], "--out", out, "--no-figures",
    )  # fmt: skip
    results = dict(np.load(out / "results.npz"))
    assert np.array_equal(results["ode/times"], run["results"]["ode/times"])
    assert np.array_equal(results["ode/epochs"], run["results"]["ode/epochs"])
    assert f"(from {run['json']})" in err
    assert f'kappa_from = "{run["json"]}"' in (out / "config.toml").read_text()


def test_renormalised_flow_reads_the_closed_forms_kappa(run, capsys):
    """compare's closed form is F3, which the renormalised flow from the whitened state follows
    exactly: its κ is the one that flow runs on; the closed-form series carries the epochs."""
    js = run["tmp"] / "closed.json"
    run["cli"](
        "compare", run["path"], "--model", "closed-form", "--clock", "lr", "--kappa", 3 * KAPPA,
        "--from-epoch", E, "--json", js, "--quiet",
    )  # fmt: skip
    out = run["tmp"] / "renormalised"
    run["cli"](
        "simulate", "--from", run["path"], "--epoch", E, "--flow", "renormalised", "--clock",
        "lr", "--kappa-from", js, "--out", out, "--no-figures",
    )  # fmt: skip
    results = dict(np.load(out / "results.npz"))
    assert_allclose(results["ode/times"], 3 * run["results"]["ode/times"], rtol=1e-15)
    assert np.array_equal(results["closed_form/epochs"], results["ode/epochs"])
    rows = json.loads(js.read_text())["checkpoints"][int(E) :]
    closed = np.array([row["predictions"]["closed-form"]["omega"] for row in rows])
    assert_allclose(results["closed_form/snr"], closed, rtol=1e-10)
    assert_allclose(results["ode/snr"], closed, rtol=1e-7)  # the ODE against its closed form


def _refusals(tmp):
    bare = _features(tmp / "bare.npz", record=False)
    other_clock = tmp / "lr-loss.json"
    other_clock.write_text(json.dumps({"model": "central-path", "clock": "lr-loss", "kappa": 2}))
    return [
        (["--clock", "lr"], ["needs its scale", "--kappa-from"]),
        (["--clock", "lr", "--kappa", "1", "--kappa-from", "x.json"], ["not both"]),
        (["--kappa", "1"], ["add --clock", "lr-loss"]),
        (["--clock", "lr", "--kappa", "1", "--t-end", "10"], ["drop --t-end"]),
        (["--clock", "lr", "--kappa", "1", "--num-saves", "5"], ["drop --num-saves"]),
        (["--clock", "speed", "--kappa", "1"], ["compare --clock speed"]),
        (["--clock", "displacement"], ["compare --clock displacement"]),
        (["--clock", "monotone"], ["compare --clock monotone"]),
        (["--clock", "hourly", "--kappa", "1"], ["unknown clock", "lr-loss-epoch"]),
        (["--clock", "lr", "--kappa", "-1"], ["--kappa"]),
        (["--clock", "lr", "--kappa", "1e308"], ["beyond", "pass a kappa of at most"]),
        (["--clock", "lr", "--kappa", "1", "--epoch", "5"], ["--epoch 5 is the last"]),
        (["--clock", "lr", "--kappa", "1", "--epoch", "2.5"], ["--epoch 2.5 is not a checkpoint"]),
        (["--clock", "lr", "--kappa-from", tmp / "missing.json"], ["does not exist"]),
        (["--clock", "lr", "--kappa-from", other_clock], ["used --clock lr-loss"]),
        (
            ["--flow", "whitened", "--clock", "lr", "--kappa-from", other_clock],
            ["no model of the whitened flow", "central-path, ufm, renormalised", "--kappa K"],
        ),
        (
            ["--clock", "lr", "--kappa", "1", "--from", bare],
            ["learning_rate", "momentum", "drop --clock lr"],
        ),
    ]


def test_every_refusal_is_one_line_and_writes_nothing(run, capsys):
    tmp = run["tmp"] / "refusals"
    tmp.mkdir()
    for extra, words in _refusals(tmp):
        before = sorted(p.name for p in tmp.iterdir())
        args = ["simulate", "--from", run["path"], "--flow", "central-path", "--epoch", E]
        code, _, err = _cli(capsys, *args, *extra, "--out", tmp / "run", "--quiet")
        assert code == 2 and len(err.strip().splitlines()) == 1, (extra, err)
        assert "Traceback" not in err and all(w in err for w in words), (extra, err)
        assert sorted(p.name for p in tmp.iterdir()) == before, extra
    # Without --from there is no checkpoint to start at: the clock's options are refused too.
    code, _, err = _cli(capsys, "simulate", "--clock", "lr", "--kappa", "1", "--out", tmp / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--clock and --kappa go with --from" in err and not (tmp / "run").exists()


def test_checkpoints_at_one_clock_time_are_saved_alike(run):
    """An epoch with no step (lr = 0) leaves the clock where it was: both of its checkpoints get
    the one state at that time (five distinct times: the program the run above compiled)."""
    from centralpath.measurement._initial_state import measured_state, simulate_measured

    ts = np.array([0.0, 50.0, 50.0, 100.0, 200.0, 300.0])
    r = simulate_measured(measured_state(run["path"], E), "central-path", ts=ts)
    assert np.array_equal(r["ode/times"], ts)
    assert np.array_equal(r["ode/snr"][1], r["ode/snr"][2]) and r["ode/snr"].shape[0] == 6
