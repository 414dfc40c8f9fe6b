"""compare as a predictive test (issue #16): models started from a measured state, clocks,
scores against the no-change baseline, and the verdict (centralpath.measurement.predictive, _measured).

The recovery tests generate a trajectory with a flow itself (from a random state and from the
state measured on a features file) and ask the matching model to recover it: the clock to 1e-6
and ω_j to 1e-6. The score tests use hand-built numbers.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath._errors import InputError
from centralpath._integrate import integrate
from centralpath.measurement._initial_state import MeasuredState, initial_state, measured_state
from centralpath.measurement._io import load_features, save_features
from centralpath.measurement.predictive import (
    _MAX_STEPS,
    _SAVES,
    Measurement,
    _pad,
    beside,
    choose_from_epoch,
    isotonic,
    perp_trend,
    predict,
    read_kappa,
    relative_errors,
    scores,
    verdict,
)

C, N, P = 3, 20, 4
LAM = 5e-3
TOL = 1e-6


def _random_state(seed=0, dead=False) -> MeasuredState:
    """Class statistics and a classifier of a random, non-whitened state (p = 4, C = 3)."""
    rng = np.random.default_rng(seed)
    H = rng.normal(size=(C * N, P)) + 1.5 * np.repeat(rng.normal(size=(C, P)), N, axis=0)
    H = H * np.array([1.0, 0.5, 2.0, 0.8]) + 0.3
    labels = np.repeat(np.arange(C), N)
    if dead:
        H = np.concatenate([H, np.zeros((C * N, 1))], axis=1)  # a dead unit
    W = rng.normal(size=(C, H.shape[1])) * 0.3
    b = rng.normal(size=C) * 0.1
    state = MeasuredState.from_stats(cp.class_stats(H, labels, C), W, b, weight_decay=LAM)
    return state, H, W, b


def _measurement(omega, *, loss="mse", lr=None, perp=None, nc1=None) -> Measurement:
    K = len(omega)
    return Measurement(
        epochs=np.arange(K, dtype=float),
        omega=np.asarray(omega, float),
        # NC1 = Σ_j 1/ω_j² for balanced classes (docs/theory.md §5): the measured NC1 that
        # goes with these ω.
        nc1=np.sum(1.0 / np.asarray(omega, float) ** 2, axis=1) if nc1 is None else nc1,
        perp_rel=np.zeros(K) if perp is None else np.asarray(perp, float),
        num_classes=C,
        per_class=float(N),
        weight_decay=LAM,
        loss=loss,
        learning_rate=lr,
        momentum=None if lr is None else 0.5,
        steps_per_epoch=None if lr is None else 4,
    )


def _flow_trajectory(state: MeasuredState, model: str, times, with_nc1: bool = False):
    """ω_j (and NC1) at `times` of the flow that `model` runs, from `state` (a solve of its
    own). NC1 = Σ_j 1/ω_j² for the closed form; the flows' Tr(Σ_W Σ_B^†)/C is not a
    function of ω alone (Σ_W off the span of the class means counts too)."""
    if model == "closed-form":
        omega0 = np.asarray(cp.snr_singular_values(state.stats))
        omega = np.asarray(cp.eigen_dynamics(omega0, C, float(N))(jnp.asarray(times)))
        return (omega, np.sum(1.0 / omega**2, axis=1)) if with_nc1 else omega
    flow, y0 = initial_state(state, model)
    # The model's solver settings and number of save times: one compiled program for both.
    ts = _pad(np.asarray(times, float), _SAVES)
    tr = integrate(flow, y0, float(ts[-1]), ts=ts, max_steps=_MAX_STEPS)
    keep = np.searchsorted(ts, times)
    if not with_nc1:
        return tr.snr()[keep]
    stats = tr.snapshots.stats
    nc1 = [float(cp.nc1(jax.tree.map(lambda a, i=i: a[i], stats))) for i in keep]
    return tr.snr()[keep], np.asarray(nc1)


# The model times of the checkpoints: where ω grows by tens of per cent for each flow.
TIMES = {
    "closed-form": np.array([0.0, 300.0, 1e3, 4e3, 2e4, 6e4]),
    "central-path": np.array([0.0, 40.0, 100.0, 250.0, 500.0, 800.0]),
    "ufm": np.array([0.0, 5.0, 15.0, 40.0, 90.0, 200.0]),
}


@pytest.mark.parametrize("model", ["closed-form", "central-path", "ufm"])
@pytest.mark.parametrize("start", ["random", "measured"])
def test_matching_model_recovers_its_own_trajectory(tmp_path, model, start):
    if start == "random":
        state = _random_state(seed=1)[0]
    else:  # measured on a features file with a dead unit, through the file's reader
        _, H, W, b = _random_state(seed=2, dead=True)
        path = tmp_path / "f.npz"
        labels = np.repeat(np.arange(C), N)
        save_features(path, features=H, labels=labels, W=W, b=b, weight_decay=LAM)
        state = measured_state(path)
        assert state.dropped == 1 and state.stats.dim == P
    times = TIMES[model]
    omega, nc1 = _flow_trajectory(state, model, times, with_nc1=True)
    assert omega[-1].min() > 1.2 * omega[0].max() or omega[-1].mean() > 1.2 * omega[0].mean()
    m = _measurement(omega, nc1=nc1)
    p = predict(m, lambda k: state, model, from_epoch=0, clock="monotone")
    assert_allclose(p.flow_time[1:], times[1:], rtol=TOL)
    assert_allclose(p.omega[1:], omega[1:], rtol=TOL)
    assert p.numbers["median_relative_error"] < TOL
    assert p.verdict == "consistent", p.reason


@pytest.mark.parametrize("model", ["closed-form", "central-path"])
def test_lr_clock_recovers_kappa(model):
    state = _random_state(seed=3)[0]
    lr = np.array([0.4, 0.4, 0.4, 0.04, 0.04, 0.004, 0.004])  # epochs 1..7
    S = np.concatenate([[0.0], np.cumsum(lr * 4 / (1 - 0.5))])  # the clock's units at epochs 0..7
    epochs = np.array([0, 1, 2, 3, 5, 7])
    kappa = TIMES[model][-1] / S[7]
    times = kappa * S[epochs]
    omega = _flow_trajectory(state, model, times)
    m = _measurement(omega, lr=lr)
    m = Measurement(**{**m.__dict__, "epochs": epochs.astype(float)})
    p = predict(m, lambda k: state, model, from_epoch=0, clock="lr")
    assert p.kappa_source == "fitted"
    assert_allclose(p.kappa, kappa, rtol=TOL)
    assert_allclose(p.flow_time, times, rtol=TOL)
    assert_allclose(p.omega[1:], omega[1:], rtol=TOL)
    # A given κ is used as is (the out-of-sample test): the same prediction.
    q = predict(m, lambda k: state, model, from_epoch=0, clock="lr", kappa=kappa, kappa_source="x")
    assert q.kappa == kappa and q.kappa_source == "x"
    assert_allclose(q.omega[1:], omega[1:], rtol=TOL)


def test_renormalised_flow_from_a_measured_state_follows_the_closed_form():
    """Whitening the measured statistics starts F3 with the measured ω: it then follows
    F(ω_j(t)) = F(ω_j(0)) + t (docs/theory.md §6), with the dead unit dropped."""
    state = _random_state(seed=4, dead=True)[0]
    flow, y0 = initial_state(state, "renormalised")
    assert_allclose(np.asarray(y0.sigma_w), np.eye(P), atol=0)
    omega0 = np.asarray(cp.snr_singular_values(state.stats))
    assert_allclose(np.asarray(cp.snr_singular_values(y0)), omega0, rtol=1e-10)
    times = np.array([0.0, 1e3, 1e4])
    tr = integrate(flow, y0, times[-1], ts=times, rtol=1e-11, atol=1e-13)
    expected = np.asarray(cp.eigen_dynamics(omega0, C, float(N))(jnp.asarray(times)))
    assert_allclose(tr.snr(), expected, rtol=1e-7)


def test_trajectory_snr_is_snr_singular_values_of_each_snapshot():
    state = _random_state(seed=5)[0]
    flow, y0 = initial_state(state, "central-path")
    ts = _pad(np.array([0.0, 10.0, 100.0]), _SAVES)
    tr = integrate(flow, y0, 100.0, ts=ts, max_steps=_MAX_STEPS)
    for k in (0, 31, 63):
        stats = jax.tree_util.tree_map(lambda a, k=k: a[k], tr.snapshots.stats)
        expected = cp.snr_singular_values(stats, accuracy=tr.accuracy)
        assert_allclose(tr.snr()[k], np.asarray(expected), rtol=1e-14)


def test_measured_state_is_an_isometry_of_the_live_directions():
    """Dropping dead directions keeps the ridge classifier, ‖W‖ and ω: nothing is whitened."""
    state, H, W, b = _random_state(seed=6, dead=True)
    stats = cp.class_stats(H, np.repeat(np.arange(C), N), C)
    full = cp.least_squares_classifier(stats, LAM)
    live = cp.least_squares_classifier(state.stats, LAM)
    assert_allclose(np.asarray(live.W) @ state.basis.T, np.asarray(full.W), atol=1e-12)
    assert_allclose(np.asarray(live.b), np.asarray(full.b), atol=1e-12)
    assert_allclose(np.linalg.norm(state.W), np.linalg.norm(W[:, :P]), rtol=1e-12)
    assert_allclose(
        np.asarray(cp.snr_singular_values(state.stats)),
        np.asarray(cp.snr_singular_values(stats)),
        rtol=1e-10,
    )


# --------------------------------------------------------------------------- scores


def test_baseline_and_skill_on_hand_built_numbers():
    measured = np.array([[2.0, 1.0], [4.0, 2.0]])  # two checkpoints after e0, C − 1 = 2
    baseline = np.array([1.0, 1.0])  # ω(e0)
    predicted = np.array([[2.2, 1.0], [4.0, 1.5]])
    s = scores(predicted, measured, baseline)
    # |ω̂ − ω|/ω: 0.1, 0, 0, 0.25 -> median 0.05; baseline: 0.5, 0, 0.75, 0.5 -> median 0.5.
    assert s["median_relative_error"] == pytest.approx(0.05)
    assert s["baseline_relative_error"] == pytest.approx(0.5)
    assert s["skill"] == pytest.approx(1 - 0.05 / 0.5)
    # Level: geometric means √2, √8 measured; √2.2, √6 predicted.
    level = np.abs(np.sqrt([2.2, 6.0]) / np.sqrt([2.0, 8.0]) - 1)
    assert s["level_relative_error"] == pytest.approx(np.median(level))
    # Shape: ω / geometric mean; measured (√2, 1/√2) at both checkpoints.
    shape_m = np.array([np.sqrt(2), 1 / np.sqrt(2)])
    shape_p = np.array([[2.2, 1.0] / np.sqrt(2.2), [4.0, 1.5] / np.sqrt(6.0)])
    assert s["shape_relative_error"] == pytest.approx(np.median(np.abs(shape_p / shape_m - 1)))
    # A perfect prediction has skill 1; the baseline itself has skill 0.
    assert scores(measured, measured, baseline)["skill"] == 1.0
    assert scores(np.broadcast_to(baseline, measured.shape), measured, baseline)["skill"] == 0.0


def test_unknown_measurements_are_left_out_and_infinite_predictions_count():
    measured = np.array([[2.0, np.inf]])
    rel = relative_errors(np.array([[np.inf, 3.0]]), measured)
    assert np.isinf(rel[0, 0]) and np.isnan(rel[0, 1])
    s = scores(np.array([[2.0, 5.0]]), measured, np.array([1.0, 1.0]))
    assert s["values_compared"] == 1 and s["values_beyond_resolution"] == 1
    assert s["median_relative_error"] == 0.0


def test_isotonic_pools_adjacent_violators():
    assert_allclose(isotonic([1, 3, 2, 4], [1, 1, 1, 1]), [1, 2.5, 2.5, 4])
    assert_allclose(isotonic([1, 3, 2, 4], [1, 3, 1, 1]), [1, 2.75, 2.75, 4])
    assert_allclose(isotonic([5, 4, 3], [1, 1, 1]), [4, 4, 4])
    assert_allclose(isotonic([1, 2, 3], [1, 1, 1]), [1, 2, 3])


# --------------------------------------------------------------------------- verdicts


def _growing(K=4):
    return np.outer(np.geomspace(1, 3, K), [2.0, 1.0])


def test_cross_entropy_is_not_applicable_with_and_without_the_loss_key():
    state = _random_state()[0]
    p = predict(_measurement(_growing(), loss="ce"), lambda k: state, "closed-form", from_epoch=0)
    assert p.verdict == "not-applicable" and "cross-entropy" in p.reason
    # Without the key: the initialisation (L_perp/L ≈ 0.46 for MSE and CE alike) is not
    # what the prediction covers; after it, L_perp/L >= 0.5 throughout.
    far = np.array([0.46, 0.9, 0.95, 0.99])
    m = _measurement(_growing(), loss=None, perp=far)
    p = predict(m, lambda k: state, "closed-form", from_epoch=0)
    assert p.verdict == "not-applicable" and "not least-squares" in p.reason
    p = predict(m, lambda k: state, "closed-form")  # auto: nothing near the central path
    assert p.verdict == "not-applicable" and p.from_epoch is None
    # auto finds no checkpoint near the central path: nothing to start from.
    m = _measurement(_growing(), loss="mse", perp=far)
    p = predict(m, lambda k: state, "closed-form")
    assert p.verdict == "not-applicable" and p.from_epoch is None and "auto" in p.reason
    assert "train longer" in p.reason and "--from-epoch N" in p.reason  # what would do


def test_the_start_is_where_the_trend_of_perp_falls_to_the_threshold():
    """perp_trend is the closest non-increasing sequence in log: a rise pools with the values
    before it at their geometric mean. The start is where that trend first reaches 0.2, not
    where the raw L_perp/L dips once or stops crossing back."""
    perp = np.array([0.5, 0.1, 0.4, 0.3, 0.15, 0.25, 0.1, 0.1])
    trend = perp_trend(perp)
    # Pool-adjacent-violators by hand, in log: 0.1 < 0.4 pool to √0.04 = 0.2, then with 0.3
    # (0.2 < 0.3) to ∛0.012; 0.15 < 0.25 pool to √0.0375; the rest is already non-increasing.
    expected = [0.5, *[0.012 ** (1 / 3)] * 3, *[0.0375**0.5] * 2, 0.1, 0.1]
    assert_allclose(trend, expected, rtol=1e-13)
    assert np.all(np.diff(trend) <= 0)
    omega = np.outer(np.ones(len(perp)), [2.0, 1.0]) * np.exp(0.3 * np.arange(len(perp)))[:, None]
    k, rule = choose_from_epoch(_measurement(omega, perp=perp))
    # The raw values dip to 0.1 at epoch 1 and cross 0.2 for the last time after epoch 5: the
    # trend (0.229 through epoch 3, then 0.194) reaches 0.2 at epoch 4.
    assert k == 4, rule
    assert "trend of L_perp/L" in rule and "0.194 there, 0.15 measured" in rule
    # A classifier exactly least-squares (L_perp = 0) is the smallest trend, not a NaN.
    assert np.all(np.isfinite(np.log(perp_trend(np.array([0.3, 0.0, 0.0])))))


def test_the_start_waits_for_the_accuracy_plateau_from_there_on():
    """A trend below 0.2 while the training accuracy is still climbing, or before a relapse,
    is not the start."""
    perp = np.full(8, 0.05)
    omega = np.outer(np.ones(8), [2.0, 1.0]) * np.exp(0.3 * np.arange(8))[:, None]
    m = _measurement(omega, perp=perp)
    m = Measurement(**{**vars(m), "train_accuracy": np.array([0.4, 0.8, 1, 0.95, 1, 1, 1, 1])})
    k, rule = choose_from_epoch(m)
    assert k == 4 and "within 0.01 of its largest (1) from there on" in rule, rule


def test_no_growth_is_not_applicable_and_auto_says_where_it_starts():
    state = _random_state()[0]
    flat = np.outer(np.ones(7), [2.0, 1.0]) * (1 + 0.01 * np.arange(7))[:, None]
    perp = [0.3, 0.05, 0.01, 0.0, 0.0, 0.0, 0.0]
    p = predict(_measurement(flat, perp=perp), lambda k: state, "closed-form")
    assert (
        p.from_epoch == 1.0
        and "first checkpoint at which the trend of L_perp/L" in p.from_epoch_rule
    )
    assert p.verdict == "not-applicable" and "does not grow" in p.reason


# --------------------------------------------------------------------------- bad inputs


def _one_line_error(fn, *words):
    with pytest.raises(InputError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_bad_inputs_are_one_line_errors(tmp_path):
    state = _random_state()[0]
    m = _measurement(_growing())
    run = lambda **kw: predict(m, lambda k: state, kw.pop("model", "closed-form"), **kw)  # noqa: E731
    _one_line_error(lambda: run(clock="lr"), "learning_rate", "momentum", "steps_per_epoch")
    _one_line_error(lambda: run(from_epoch=7), "--from-epoch 7")
    _one_line_error(lambda: run(from_epoch=3), "last checkpoint")
    _one_line_error(lambda: run(kappa=2.0), "--clock lr-loss")
    _one_line_error(lambda: run(model="resnet"), "unknown model")
    _one_line_error(lambda: run(clock="wall"), "unknown clock")
    m_noW = Measurement(**{**m.__dict__, "perp_rel": None})
    _one_line_error(lambda: predict(m_noW, lambda k: state, "closed-form"), "W, b")
    odd = _measurement(_growing(), lr=np.ones(2))
    _one_line_error(lambda: predict(odd, lambda k: state, "closed-form", clock="lr"), "every epoch")
    js = tmp_path / "c.json"
    _one_line_error(lambda: read_kappa(js, "ufm"), "does not exist")
    js.write_text("{not json")
    _one_line_error(lambda: read_kappa(js, "ufm"), "not readable JSON")
    js.write_text(json.dumps({"model": "central-path", "clock": "monotone", "kappa": None}))
    _one_line_error(lambda: read_kappa(js, "central-path"), "--clock monotone")
    _one_line_error(lambda: read_kappa(js, "ufm"), "no kappa for model ufm")
    js.write_text(
        json.dumps({"model": "all", "models": [{"model": "ufm", "clock": "lr", "kappa": 2.5}]})
    )
    assert read_kappa(js, "ufm")[0] == 2.5
    _, H, _, _ = _random_state()
    path = tmp_path / "noW.npz"
    save_features(path, features=H, labels=np.repeat(np.arange(C), N))
    _one_line_error(lambda: initial_state(measured_state(path), "ufm"), "no W")
    _one_line_error(lambda: measured_state(path, epoch=3), "no checkpoint at epoch 3")
    _one_line_error(lambda: initial_state(measured_state(path), "renormalised", lam=0.1), "lambda")
    assert load_features(path).W is None


# --------------------------------------------------------------------------- command line


def _shrinking_features(path, *, loss="mse", K=5):
    """A 'network' whose within-class spread shrinks by half each epoch, with the ridge
    least-squares classifier of each checkpoint (so L_perp/L = 0): ω_j grow ~2x per epoch."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(C), N)
    means = 2.0 * rng.normal(size=(C, P))
    eps = rng.normal(size=(C * N, P))
    H = np.stack([means[labels] + 0.5**k * eps for k in range(K)])
    Ws, bs = [], []
    for k in range(K):
        ls = cp.least_squares_classifier(cp.class_stats(H[k], labels, C), LAM)
        Ws.append(np.asarray(ls.W))
        bs.append(np.asarray(ls.b))
    extra = {} if loss is None else {"loss": loss}
    save_features(
        path,
        features=H,
        labels=labels,
        W=np.stack(Ws),
        b=np.stack(bs),
        epochs=np.arange(K, dtype=float),
        weight_decay=LAM,
        learning_rate=np.full(K, 0.1),
        momentum=np.float64(0.9),
        steps_per_epoch=np.int64(10),
        **extra,
    )
    return path


def _cli(capsys, *args):
    from centralpath.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_model_json_figures_and_redraw(tmp_path, capsys):
    path = _shrinking_features(tmp_path / "f.npz")
    js, out = tmp_path / "c.json", tmp_path / "run"
    code, stdout, err = _cli(
        capsys, "compare", path, "--model", "closed-form", "--json", js, "--out", out
    )
    assert code == 0, err
    assert "first checkpoint at which the trend of L_perp/L" in stdout and "closed-form" in stdout
    summary = json.loads(js.read_text())
    for key in (
        "model",
        "from_epoch",
        "clock",
        "kappa",
        "median_relative_error",
        "baseline_relative_error",
        "skill",
        "verdict",
        "reason",
        "checkpoints",
    ):
        assert key in summary, key
    assert summary["model"] == "closed-form" and summary["from_epoch"] == 0.0
    assert summary["verdict"] in ("consistent", "inconsistent")
    rows = summary["checkpoints"]
    assert len(rows) == 5 and rows[0]["predictions"]["closed-form"]["flow_time"] == 0.0
    assert {"omega", "nc1", "omega_ratio", "perp_rel", "relative_error"} <= set(
        rows[1]["predictions"]["closed-form"]
    )
    assert (out / "figures" / "models_vs_measured.png").exists()
    redraw = tmp_path / "redraw"
    assert _cli(capsys, "plot", out, "--to", redraw, "--quiet")[0] == 0
    for name in ("models_vs_measured.png", "model_clock.png"):
        assert (redraw / "figures" / name).read_bytes() == (out / "figures" / name).read_bytes()
    # The figure draws the saved numbers: the measured ω_1 and the prediction of ω_1.
    from centralpath.plotting.compare import figure_models

    results = dict(np.load(out / "results.npz"))
    lines = figure_models(results).axes[0].get_lines()
    assert_allclose(lines[0].get_ydata(), results["predict/omega_measured"][:, 0], rtol=0)
    pred = results["predict/closed-form/omega"][:, 0]
    assert_allclose(lines[1].get_ydata(), pred, rtol=0)


def test_cli_lr_clock_out_of_sample_and_cross_entropy(tmp_path, capsys):
    path = _shrinking_features(tmp_path / "f.npz")
    js = tmp_path / "lr.json"
    args = ["compare", path, "--model", "closed-form", "--clock", "lr", "--quiet"]
    assert _cli(capsys, *args, "--json", js)[0] == 0
    fitted = json.loads(js.read_text())
    assert fitted["clock"] == "lr" and fitted["kappa"] > 0
    again = tmp_path / "again.json"
    assert _cli(capsys, *args, "--kappa-from", js, "--json", again)[0] == 0
    out_of_sample = json.loads(again.read_text())
    assert out_of_sample["kappa"] == fitted["kappa"]
    assert out_of_sample["kappa_source"] == f"from {js}"
    # Cross-entropy: with the key, and without it (the classifier is then far from LS).
    ce = _shrinking_features(tmp_path / "ce.npz", loss="ce")
    code, stdout, _ = _cli(capsys, "compare", ce, "--model", "closed-form")
    assert code == 0 and "not-applicable" in stdout and "cross-entropy" in stdout


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--clock", "lr", "--kappa", "1", "--kappa-from", "x.json"], ["not both"]),
        (["--kappa", "2"], ["--clock", "lr-loss"]),
        (["--clock", "lr", "--kappa", "-1"], ["--kappa"]),
        (["--from-epoch", "soon"], ["--from-epoch"]),
        (["--from-epoch", "2.5"], ["not a checkpoint epoch"]),
        (["--model", "all", "--clock", "lr", "--kappa", "2"], ["--kappa-from"]),
        (["--clock", "lr", "--kappa-from", "missing.json"], ["does not exist"]),
    ],
)
def test_cli_bad_model_options_are_one_line(tmp_path, capsys, extra, words):
    path = _shrinking_features(tmp_path / "f.npz")
    args = ["compare", path, *(["--model", "closed-form"] if "--model" not in extra else [])]
    code, _, err = _cli(capsys, *args, *extra, "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err


def test_cli_lr_clock_without_the_training_record(tmp_path, capsys):
    path = _shrinking_features(tmp_path / "f.npz")
    data = dict(np.load(path))
    for key in ("learning_rate", "momentum", "steps_per_epoch"):
        del data[key]
    bare = tmp_path / "bare.npz"
    np.savez(bare, **data)
    code, _, err = _cli(capsys, "compare", bare, "--model", "closed-form", "--clock", "lr")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert all(k in err for k in ("learning_rate", "momentum", "steps_per_epoch")), err


def test_cli_simulate_from_a_measured_state(tmp_path, capsys):
    """The renormalised flow from a file's checkpoint follows the closed form from its ω."""
    path = _shrinking_features(tmp_path / "f.npz")
    out = tmp_path / "sim"
    args = ["simulate", "--from", path, "--epoch", "1", "--flow", "renormalised"]
    code, _, err = _cli(
        capsys, *args, "--t-end", "1e4", "--num-saves", "4", "--out", out, "--no-figures"
    )
    assert code == 0, err
    assert "from epoch 1" in err
    results = dict(np.load(out / "results.npz"))
    assert_allclose(results["ode/snr"], results["closed_form/snr"], rtol=1e-7)
    state = measured_state(path, epoch=1)
    assert_allclose(results["ode/snr"][0], np.asarray(cp.snr_singular_values(state.stats)))
    for bad, words in (
        (["--methods", "gd"], "ODE"),
        (["--lam-w", "0.1"], "--lam-w"),
        (["--epoch", "9"], "no checkpoint at epoch 9"),
    ):
        code, _, err = _cli(capsys, *args, *bad, "--out", tmp_path / "x", "--quiet")
        assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err


def test_cli_help_states_the_start_rule_in_force():
    """The --from-epoch help quotes the start rule's thresholds (it once said 0.1 after the rule
    became 0.2)."""
    import argparse

    from centralpath.cli import build_parser
    from centralpath.measurement.predictive import AUTO_ACCURACY_PLATEAU, AUTO_PERP_REL

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    (action,) = [a for a in sub.choices["compare"]._actions if "--from-epoch" in a.option_strings]
    assert f"non-increasing fit) is <= {AUTO_PERP_REL:g}," in action.help
    assert f"within {AUTO_ACCURACY_PLATEAU:g} of its largest" in action.help
    # simulate --from --epoch auto is the same start.
    (epoch,) = [a for a in sub.choices["simulate"]._actions if "--epoch" in a.option_strings]
    assert f"trend of L_perp/L is <= {AUTO_PERP_REL:g}," in epoch.help


def test_cli_default_ladder_names_the_verdict_that_answers(tmp_path, capsys):
    """Without --model every model runs; one line says which verdict is the answer (the central
    path's, the JSON's top level) before each model's own."""
    path = _shrinking_features(tmp_path / "f.npz")
    js = tmp_path / "c.json"
    code, stdout, err = _cli(capsys, "compare", path, "--json", js)
    assert code == 0, err
    summary = json.loads(js.read_text())
    assert summary["model"] == "all" and summary["verdict_of"] == "central-path"
    lines = stdout.splitlines()
    headline = f"verdict: {summary['verdict']} (the central-path model's, the theory under test"
    first = next(i for i, line in enumerate(lines) if line.startswith("verdict: "))
    assert lines[first].startswith(headline)
    assert [line.split(":")[0] for line in lines[first + 1 :] if not line.startswith(" ")] == [
        "closed-form",
        "central-path",
        "ufm",
    ]


def test_a_number_beside_its_threshold_never_prints_as_the_threshold():
    """A skill of 0.8497 printed to three decimals is "0.850", and "skill 0.850 < 0.85" was
    printed for a real run: the verdict's numbers get the decimals that show which side they
    are on."""
    assert beside(0.8497, 0.85, 3) == "0.8497"
    assert beside(0.84999999, 0.85, 3) == "0.84999999"
    assert beside(0.8, 0.85, 3) == "0.800"
    assert beside(0.85, 0.85, 3) == "0.850"  # equal: >= holds and reads so
    assert beside(0.049996, 0.05, 2, 100) == "4.9996"
    summary = {
        "median_relative_error": 0.0395,
        "skill": 0.8497,
        "nc1_factor": 1.4999,
        "checkpoints_compared": 8,
    }
    v, text = verdict(summary, None, 19.0)
    assert v == "inconsistent"
    assert "skill 0.8497 < 0.85" in text and "NC1 within x1.4999 <= x1.5" in text, text
    assert "3.95% <= 5%" in text, text
