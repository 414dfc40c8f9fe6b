"""`--model resnet18`: the paper's ResNet18 (3×3 stride-1 stem, no max-pool, batch norm with
state), one epoch on a tiny subset, end to end through `centralpath train`."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
import pytest

from centralpath._errors import InputError
from centralpath.cli import main
from centralpath.measurement._io import load_features

networks = pytest.importorskip("centralpath.networks")
from centralpath.networks import train as tr  # noqa: E402
from centralpath.networks.models import ResNet18, is_stateful, make_model  # noqa: E402

# Width 2 (p = 16): the paper's architecture at a size whose compile and epoch are short on CPU.
FLAGS = ["--model", "resnet18", "--resnet-width", "2", "--per-class", "4", "--epochs", "1"]
FLAGS += ["--batch-size", "20", "--lr", "0.02", "--num-checkpoints", "2", "--quiet"]


def test_resnet18_architecture():
    # Shapes only (eval_shape): the paper's width 64 without initialising 11M parameters.
    model, state = eqx.filter_eval_shape(
        eqx.nn.make_with_state(ResNet18), (3, 32, 32), 10, width=64, key=jax.random.PRNGKey(0)
    )
    assert is_stateful(model) and isinstance(model, ResNet18)
    # torchvision's resnet18 has 11,689,512 parameters with a 7×7 stem and 1000 classes; with a
    # 3×3 stem (−9,408 + 1,728) and 10 classes (−512,512 + 5,130) the CIFAR variant has 11,173,962.
    shapes = jax.tree.leaves(model, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
    count = sum(x.size for x in shapes if isinstance(x, jax.ShapeDtypeStruct))
    assert count == 11_173_962
    assert model.stem.stride == (1, 1) and model.stem.kernel_size == (3, 3)
    assert len(model.blocks) == 8 and model.classifier.weight.shape == (10, 512)
    # The sizes check_resources estimates are those of the model.
    params, _, _, p = tr._resnet_layers(64, (3, 32, 32), 10)
    assert (params, p) == (count, 512)


def test_resnet18_refuses_channels_last(tmp_path, capsys):
    data = tmp_path / "hwc.npz"
    np.savez(data, inputs=np.zeros((20, 8, 8, 3), np.float32), labels=np.arange(20) % 2)
    code = main(
        ["train", "--dataset", f"npz:{data}", "--model", "resnet18", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "looks like [H, W, channels]" in err and "numpy.transpose" in err
    with pytest.raises(InputError, match="resnet-width must be >= 1"):
        tr.validate({**tr.DEFAULTS, "model": "resnet18", "resnet_width": 0})


@pytest.mark.slow
def test_resnet18_trains_one_epoch_on_a_tiny_subset(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "digits", *FLAGS, "--out", str(out), "--no-figures"])
    assert code == 0, capsys.readouterr().err
    ff = load_features(out / "features.npz")
    assert ff.features.shape == (2, 40, 16) and ff.W.shape == (2, 10, 16)
    assert ff.test_accuracy is not None and np.all(np.isfinite(ff.test_loss))
    assert ff.loss == "mse" and ff.steps_per_epoch == 2
    # The model is saved with its batch-norm running statistics.
    like = make_model("resnet18", (8, 8), 10, resnet_width=2, key=jax.random.PRNGKey(0))
    model, state = eqx.tree_deserialise_leaves(out / "model.eqx", like)
    assert isinstance(model, ResNet18)
    np.testing.assert_array_equal(ff.W[-1], np.asarray(model.classifier.weight))
