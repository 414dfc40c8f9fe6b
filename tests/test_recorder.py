"""Recorders write statistics files while training, storing no features: NumPy and JAX
batches (`centralpath.ArrayStatsRecorder`) and PyTorch (`centralpath.torch.TorchStatsRecorder`, a forward
hook) give the analysis of the features file to 1e-12."""

import jax.numpy as jnp
import numpy as np
import pytest

import centralpath as cp
from centralpath._errors import InputError
from centralpath.measurement._io import FeaturesFile
from centralpath.measurement.analysis import analyze

C, P = 4, 6


def run(seed=0, K=3, n=90):
    """K checkpoints of features, W and b, imbalanced classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    y[:C] = np.arange(C)
    H = rng.normal(size=(K, n, P)) + 3.0 * np.arange(1, K + 1)[:, None, None] * np.eye(C, P)[y]
    return H, y, rng.normal(size=(K, C, P)), rng.normal(size=(K, C))


def in_memory(H, y, W, b, epochs):
    ff = FeaturesFile(H, y, C, np.asarray(epochs, float), 1e-3, W, b)
    return analyze(ff)


def worst(a, b):
    from test_stream import worst_difference

    return worst_difference(a, b)


@pytest.mark.parametrize("kind", ["numpy", "jax", "directory"])
def test_numpy_and_jax_batches(tmp_path, kind):
    H, y, W, b = run()
    epochs = [0, 3, 10]
    folder = tmp_path / "ckpts" if kind == "directory" else None
    recorder = cp.ArrayStatsRecorder(C, weight_decay=1e-3, directory=folder)
    for k, e in enumerate(epochs):
        batches = [(H[k, i : i + 16], y[i : i + 16]) for i in range(0, len(y), 16)]
        if kind == "jax":
            batches = [(jnp.asarray(h), jnp.asarray(lab)) for h, lab in batches]
        recorder.capture(e, batches, W=W[k], b=b[k])
    path = recorder.save(tmp_path / "stats.npz", loss="mse")
    reference = in_memory(H, y, W, b, epochs)
    src = cp.open_source(path)
    assert src.loss == "mse" and src.num_checkpoints == 3
    assert worst(reference, analyze(src)) <= 1e-12
    if kind == "directory":  # the folder written as it went is itself an input
        assert worst(reference, analyze(cp.open_source(tmp_path / "ckpts"))) <= 1e-12


def test_whole_arrays_and_a_function_of_batches():
    H, y, W, b = run(1)
    whole = cp.checkpoint_of((H[0], y), C, W=W[0], b=b[0])
    fresh = cp.checkpoint_of(
        lambda: iter([(H[0, :50], y[:50]), (H[0, 50:], y[50:])]), C, W=W[0], b=b[0]
    )
    for ck in (whole, fresh):
        stats = ck.acc.finalize()
        ref = cp.class_stats(H[0], y, C)
        np.testing.assert_allclose(stats.sigma_w, ref.sigma_w, rtol=0, atol=1e-13)
        assert ck.acc.nc4() == float(cp.nc4(jnp.asarray(H[0]), ref, W[0], b[0]))
    with pytest.raises(InputError, match="second pass"):
        cp.checkpoint_of((x for x in [(H[0], y)]), C, W=W[0], b=b[0])
    with pytest.raises(InputError, match="labels must lie in 0..3"):
        cp.checkpoint_of((H[0], y + 1), C)


def test_pytorch_hook(tmp_path):
    torch = pytest.importorskip("torch")
    from centralpath.torch import TorchStatsRecorder

    torch.manual_seed(0)
    n = 60
    model = torch.nn.Sequential(torch.nn.Linear(5, P), torch.nn.ReLU(), torch.nn.Linear(P, C))
    x = torch.randn(n, 5)
    y = torch.as_tensor(np.r_[np.arange(C), np.random.default_rng(0).integers(0, C, n - C)])
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]
    recorder = TorchStatsRecorder(model[2])
    features, Ws, bs = [], [], []
    for epoch in (0, 1):
        recorder.capture(model, loader, epoch)
        with torch.no_grad():
            features.append(model[1](model[0](x)).double().numpy())
        Ws.append(model[2].weight.detach().double().numpy())
        bs.append(model[2].bias.detach().double().numpy())
        with torch.no_grad():  # "train": move the layers
            for prm in model.parameters():
                prm.add_(0.1 * torch.randn_like(prm))
    assert model.training  # restored
    path = recorder.save(tmp_path / "stats.npz", weight_decay=1e-3)
    reference = in_memory(np.stack(features), y.numpy(), np.stack(Ws), np.stack(bs), [0, 1])
    assert reference[0]["nc4"] is not None
    assert worst(reference, analyze(cp.open_source(path))) <= 1e-12
    with pytest.raises(InputError, match="final nn.Linear"):
        TorchStatsRecorder(model[1])


def test_train_captures_statistics_instead_of_features(tmp_path):
    """`fit(capture="stats")` (what `auto` does for large data) keeps no features; its statistics
    file analyses like the features file of the same training."""
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    from centralpath.measurement._io import load_features
    from centralpath.networks import datasets as ds, train as tr
    from centralpath.networks.models import make_model

    data = ds.load_dataset("digits", per_class=10, test_fraction=0)

    def fit(capture):
        model = make_model(
            "mlp", data.input_shape, data.num_classes, widths=(32, 16), key=jax.random.PRNGKey(0)
        )
        return tr.fit(
            model,
            data,
            tr.TrainConfig(epochs=4, batch_size=25, num_checkpoints=4),
            key=jax.random.PRNGKey(1),
            capture=capture,
        )

    features, stats = fit("features"), fit("stats")
    assert stats.features is None and stats.stats["sigma_w"].shape == (len(stats.epochs), 16, 16)
    features.save_features(tmp_path / "features.npz")
    stats.save_features(tmp_path / "stats.npz")
    with np.load(tmp_path / "stats.npz") as f:
        assert "features" not in f.files and str(f["loss"]) == "mse"
    reference = analyze(load_features(tmp_path / "features.npz"))
    assert worst(reference, analyze(cp.open_source(tmp_path / "stats.npz"))) <= 1e-12
    assert not tr.capture_statistics(31, 1797, 256)  # digits: features
    assert tr.capture_statistics(31, 50_000, 512)  # CIFAR-10 size: 3.2 GB of features
    with pytest.raises(InputError, match="unknown capture"):
        tr.capture_statistics(3, 10, 10, "everything")


def numpy_nc4(H, y, W, b):
    """NC4 written out in NumPy: classifier decision against the nearest class mean."""
    means = np.stack([H[y == c].mean(axis=0) for c in range(W.shape[0])])
    nearest = np.argmin(((H[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    return float(np.mean(np.argmax(H @ W.T + b, axis=1) != nearest))


def counted(batches):
    """A function of fresh batch iterators that counts how often it is called."""
    calls = []

    def fresh():
        calls.append(1)
        return iter(batches())

    return fresh, calls


def test_nc4_folded_into_the_first_pass():
    """Separated classes (as late in training): no sample's nearest mean can change with the
    final means, so NC4 comes from the statistics' pass, the batches are gone over once, and
    the count is exact."""
    rng = np.random.default_rng(2)
    y = rng.permutation(np.arange(600) % C)
    H = rng.normal(size=(600, P)) + 20.0 * np.eye(C, P)[y]
    W, b = rng.normal(size=(C, P)), rng.normal(size=C)
    fresh, calls = counted(lambda: [(H[i : i + 100], y[i : i + 100]) for i in range(0, 600, 100)])
    ck = cp.checkpoint_of(fresh, C, W=W, b=b)
    expected = numpy_nc4(H, y, W, b)
    assert 0 < expected < 1
    assert ck.acc.nc4() == expected and len(calls) == 1


def test_nc4_goes_over_the_batches_again_when_a_decision_could_change():
    """The first batch holds one class (no provisional mean for the others), and the batches
    come in another order the second time: the second pass counts every sample, exactly."""
    H, y, W, b = run(3, K=1, n=400)
    H, W, b = H[0], W[0], b[0]
    order = np.argsort(y != 0, kind="stable")  # class 0 first
    H, y = H[order], y[order]
    rng = np.random.default_rng(0)

    def batches():
        starts = list(range(0, 400, 50))
        if calls:  # the second time, in another order
            rng.shuffle(starts)
        return [(H[i : i + 50], y[i : i + 50]) for i in starts]

    fresh, calls = counted(batches)
    ck = cp.checkpoint_of(fresh, C, W=W, b=b)
    assert ck.acc.nc4() == numpy_nc4(H, y, W, b) and len(calls) == 2
