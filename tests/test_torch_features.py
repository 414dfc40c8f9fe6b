"""`centralpath.torch.FeatureRecorder`: a short PyTorch loop writes a features file with the
per-epoch record that `analyze` and `compare` accept, in the paper's scale (docs/theory.md §2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_training_record import _cli  # noqa: E402

from centralpath._errors import InputError  # noqa: E402
from centralpath.measurement._io import load_features  # noqa: E402
from centralpath.networks import datasets as ds  # noqa: E402
from centralpath.torch import FeatureRecorder  # noqa: E402

nn = torch.nn


def _digits(per_class=20):
    d = ds.load_dataset("digits", per_class=per_class, test_fraction=0.2)
    x, y = torch.tensor(d.inputs, dtype=torch.float32).flatten(1), torch.tensor(d.labels)
    xt = torch.tensor(d.test_inputs, dtype=torch.float32).flatten(1)
    yt = torch.tensor(d.test_labels)
    return torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(xt, yt)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    torch.manual_seed(0)
    train, test = _digits()
    DL = torch.utils.data.DataLoader
    train_loader, eval_loader = DL(train, 40, shuffle=True), DL(train, 500)
    test_loader = DL(test, 500)
    model = nn.Sequential(
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    path = tmp_path_factory.mktemp("torch") / "features.npz"
    # The loop of the README / docs/guides/pytorch.md: 11 lines around the recorder.
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    rec = FeatureRecorder(model[-1], loss="mse", weight_decay=5e-4, capture_at=range(0, 41, 2))
    rec.end_epoch(0, model, eval_loader, test_loader)
    for epoch in range(1, 41):
        for x, y in train_loader:
            opt.zero_grad()
            nn.functional.mse_loss(model(x), nn.functional.one_hot(y, 10).float()).backward()
            opt.step()
            rec.step(y, opt)
        rec.end_epoch(epoch, model, eval_loader, test_loader)
    rec.save(path)
    return rec, path, model, eval_loader


def test_the_loop_writes_the_record_in_the_papers_scale(recorded):
    rec, path, model, eval_loader = recorded
    ff = load_features(path)
    assert ff.num_checkpoints == 21 and ff.features.shape[1:] == (200, 32)
    assert ff.loss == "mse" and ff.momentum == 0.9 and ff.steps_per_epoch == 5
    # nn.MSELoss() is (2/C)·½ Ave‖z − y‖²: λ = C·wd/2, η = 2·lr/C.
    assert ff.weight_decay == pytest.approx(10 * 5e-4 / 2)
    np.testing.assert_allclose(ff.learning_rate, np.full(40, 2 * 0.5 / 10))
    for key in ("epoch_loss", "feature_grad_sq", "class_mean_step"):
        v = getattr(ff, key)
        assert v.shape == (40,) and np.all(np.isfinite(v)) and np.all(v > 0), key
    assert ff.feature_step is None  # the recorder keeps no per-sample features between epochs
    assert ff.train_accuracy[-1] == 1.0 and ff.test_accuracy.shape == (21,)
    # The last capture is the model now: its features, W, b and accuracy.
    with torch.no_grad():
        x = eval_loader.dataset.tensors[0]
        H = model[:-1](x).numpy()
    np.testing.assert_allclose(ff.features[-1], H, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ff.W[-1], model[-1].weight.detach().numpy(), rtol=1e-7)
    # The loss falls: the last epochs' minibatch loss is below the first's.
    assert ff.epoch_loss[-1] < 0.2 * ff.epoch_loss[0]


def test_the_record_has_trains_normalisation():
    # The same logits and labels give the same data loss and feature gradient as `train`'s
    # (mse_loss: ½ Ave ‖z − y‖²; ∂ℓ_i/∂h_i = Wᵀ(z_i − y_i)), computed here in NumPy.
    torch.manual_seed(1)
    layer = nn.Linear(6, 4)
    rec = FeatureRecorder(layer, loss="mse", capture_at=[])
    h = torch.randn(8, 6, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    z = layer(h)
    rec.step(y, lr=1.0)
    Z, W = z.detach().double().numpy(), layer.weight.detach().double().numpy()
    R = Z - np.eye(4)[y.numpy()]
    assert rec._epoch["loss"] == pytest.approx(0.5 * np.mean(np.sum(R**2, 1)), rel=1e-12)
    assert rec._epoch["grad_sq"] == pytest.approx(np.mean(np.sum((R @ W) ** 2, 1)), rel=1e-12)
    assert rec._epoch["lr"] == pytest.approx(2 / 4)


def test_one_sgd_step_is_the_papers_step_at_the_converted_scale():
    # One torch SGD step on nn.MSELoss() with (lr, wd) equals a step of η = 2·lr/C on
    # ½ Ave‖W h + b − y‖² + (λ/2)(‖W‖² + ‖b‖²) with λ = C·wd/2 (the recorder's conversion).
    torch.manual_seed(2)
    C, lr, wd = 5, 0.3, 1e-2
    layer = nn.Linear(7, C).double()
    W0, b0 = layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()
    h = torch.randn(9, 7, dtype=torch.float64)
    y = torch.randint(0, C, (9,))
    opt = torch.optim.SGD(layer.parameters(), lr=lr, weight_decay=wd)
    nn.functional.mse_loss(layer(h), nn.functional.one_hot(y, C).double()).backward()
    opt.step()
    rec = FeatureRecorder(nn.Linear(7, C), loss="mse", weight_decay=wd, capture_at=[])
    eta, lam = 2 * lr / C, rec.weight_decay
    H, Y = h.numpy(), np.eye(C)[y.numpy()]
    R = H @ W0.T + b0 - Y
    W1 = W0 - eta * (R.T @ H / len(H) + lam * W0)
    b1 = b0 - eta * (R.mean(0) + lam * b0)
    np.testing.assert_allclose(layer.weight.detach().numpy(), W1, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.detach().numpy(), b1, rtol=1e-12)


@pytest.mark.parametrize(
    "labels, message",
    [
        (torch.tensor([0.0, 1.5]), "integer class indices"),
        (torch.tensor([0, 12]), r"must lie in 0\.\.9, found 0\.\.12"),
        (torch.tensor([-1, 2]), r"must lie in 0\.\.9"),
    ],
)
def test_bad_labels_are_refused_in_one_line(labels, message):
    layer = nn.Linear(3, 10)
    rec = FeatureRecorder(layer, capture_at=[])
    layer(torch.randn(2, 3, requires_grad=True))
    with pytest.raises(InputError, match=message) as info:
        rec.step(labels, lr=0.1)
    assert "\n" not in str(info.value)


@pytest.mark.slow  # trains, then analyze and compare in full (~8 s)
def test_analyze_and_compare_accept_the_file(recorded, capsys, tmp_path):
    _, path, _, _ = recorded
    code, out, err = _cli(
        capsys, "analyze", str(path), "--quiet", "--json", str(tmp_path / "a.json")
    )
    assert code == 0, err
    code, out, err = _cli(capsys, "compare", str(path), "--json", str(tmp_path / "c.json"))
    assert code == 0, err
    summary = json.loads((tmp_path / "c.json").read_text())
    assert summary["model"] == "all" and summary["verdict"] in (
        "consistent",
        "inconsistent",
        "not-applicable",
    )
