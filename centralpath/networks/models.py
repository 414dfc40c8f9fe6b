"""Classifier networks whose last layer is the (W, b) of the paper: `logits = W h + b`.

Every model is an Equinox module acting on one sample (batch with `jax.vmap`) with

- `features(x)`: h ∈ R^p, the last hidden layer — the input of the final linear layer, which is
  what docs/theory.md §1 calls the features;
- `classifier`: an `eqx.nn.Linear(p, C, use_bias=True)`, so `classifier.weight` is W [C, p] and
  `classifier.bias` is b [C];
- `__call__(x) = classifier(features(x))`.

`ResNet18` has batch normalisation, whose running statistics are state, the Equinox way
(`eqx.nn.State`): it is built with `eqx.nn.make_with_state`, and `features(x, state)` /
`__call__(x, state)` return `(output, new_state)`. Training calls it under
`jax.vmap(..., axis_name="batch")` (batch statistics, running averages updated); evaluation and
feature capture call `eqx.nn.inference_mode(model)` (the running statistics, as PyTorch's
`model.eval()`). `is_stateful(model)` tells the training loop which convention a model follows.

Parameters default to float32 even when JAX runs at float64 (training speed); the analysis
converts captured features to float64 (docs/theory.md §7½).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import InputError, require
from .._run.config import MODELS  # the names, as plain data beside TrainConfig


class MLP(eqx.Module):
    """Fully connected ReLU network; the input is flattened.

    **Arguments:**

    - `input_shape`: shape of one sample.
    - `num_classes`: C.
    - `widths`: hidden widths; the last one is the feature dimension p.
    - `dtype`: parameter dtype (default float32).
    - `key`: PRNG key of the initialisation.
    """

    layers: tuple[eqx.nn.Linear, ...]
    classifier: eqx.nn.Linear

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        widths: Sequence[int] = (256, 256, 256),
        dtype=jnp.float32,
        key: PRNGKeyArray,
    ):
        widths = tuple(int(w) for w in widths)
        require(
            len(widths) >= 1, "the MLP needs at least one hidden layer; pass widths like 256,256"
        )
        keys = jax.random.split(key, len(widths) + 1)
        sizes = (math.prod(input_shape), *widths)
        self.layers = tuple(
            eqx.nn.Linear(a, b_, dtype=dtype, key=k)
            for a, b_, k in zip(sizes[:-1], sizes[1:], keys[:-1], strict=True)
        )
        self.classifier = eqx.nn.Linear(
            widths[-1], num_classes, use_bias=True, dtype=dtype, key=keys[-1]
        )

    def features(self, x: Float[Array, "..."]) -> Float[Array, " p"]:
        x = jnp.ravel(x)
        for layer in self.layers:
            x = jax.nn.relu(layer(x))
        return x

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, " C"]:
        return self.classifier(self.features(x))


class CNN(eqx.Module):
    """Small ReLU convolutional network: [3-conv, ReLU, 2-max-pool] blocks, then one dense layer.

    A sample of shape [L] or [H, W] is one channel (1-D convolutions for MNIST-1D, 2-D for
    images); [channels, H, W] is taken as given. Pooling is skipped once a spatial side is 1, so
    the same network fits 8×8 digits and 28×28 MNIST.

    **Arguments:**

    - `input_shape`: shape of one sample.
    - `num_classes`: C.
    - `channels`: output channels of the convolution blocks.
    - `width`: the dense layer's width, which is the feature dimension p.
    - `dtype`: parameter dtype (default float32).
    - `key`: PRNG key of the initialisation.
    """

    convs: tuple[eqx.nn.Conv, ...]
    pools: tuple[bool, ...] = eqx.field(static=True)
    spatial_dims: int = eqx.field(static=True)
    dense: eqx.nn.Linear
    classifier: eqx.nn.Linear

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        channels: Sequence[int] = (32, 64),
        width: int = 128,
        dtype=jnp.float32,
        key: PRNGKeyArray,
    ):
        input_shape = tuple(int(s) for s in input_shape)
        require(
            1 <= len(input_shape) <= 3,
            f"the CNN takes samples of shape [L], [H, W] or [channels, H, W], got {input_shape}; "
            "use --model mlp",
        )
        if len(input_shape) == 3:
            in_ch, spatial = input_shape[0], input_shape[1:]
        else:
            in_ch, spatial = 1, input_shape
        self.spatial_dims = len(spatial)
        keys = jax.random.split(key, len(channels) + 2)
        convs, pools = [], []
        for out_ch, k in zip(channels, keys[: len(channels)], strict=True):
            convs.append(
                eqx.nn.Conv(self.spatial_dims, in_ch, int(out_ch), 3, padding=1, dtype=dtype, key=k)
            )
            pool = min(spatial) >= 2
            pools.append(pool)
            spatial = tuple(s // 2 for s in spatial) if pool else spatial
            in_ch = int(out_ch)
        self.convs, self.pools = tuple(convs), tuple(pools)
        self.dense = eqx.nn.Linear(
            in_ch * math.prod(spatial), int(width), dtype=dtype, key=keys[-2]
        )
        self.classifier = eqx.nn.Linear(
            int(width), num_classes, use_bias=True, dtype=dtype, key=keys[-1]
        )

    def _pool(self, x):
        window = (1,) + (2,) * self.spatial_dims
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")

    def features(self, x: Float[Array, "..."]) -> Float[Array, " p"]:
        if x.ndim == self.spatial_dims:
            x = x[None]
        for conv, pool in zip(self.convs, self.pools, strict=True):
            x = jax.nn.relu(conv(x))
            if pool:
                x = self._pool(x)
        return jax.nn.relu(self.dense(jnp.ravel(x)))

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, " C"]:
        return self.classifier(self.features(x))


def _spatial(input_shape: Sequence[int], model: str) -> tuple[int, tuple[int, ...]]:
    """(input channels, spatial shape) of a sample [L], [H, W] or [channels, H, W]."""
    input_shape = tuple(int(s) for s in input_shape)
    require(
        1 <= len(input_shape) <= 3,
        f"the {model} takes samples of shape [L], [H, W] or [channels, H, W], got "
        f"{list(input_shape)}; use --model mlp",
    )
    if len(input_shape) == 3:
        return input_shape[0], input_shape[1:]
    return 1, input_shape


def _batch_norm(channels: int, dtype) -> eqx.nn.BatchNorm:
    """Batch norm as PyTorch's BatchNorm2d: training normalises by the batch's statistics and
    updates running averages with momentum 0.1 (Equinox's 1 − 0.9); evaluation uses the running
    averages, which start at mean 0 and variance 1. That is Equinox's mode "batch" (its "ema"
    mode normalises training batches by the running averages themselves)."""
    return eqx.nn.BatchNorm(channels, axis_name="batch", momentum=0.9, mode="batch", dtype=dtype)


class _BasicBlock(eqx.Module):
    """Two 3×3 convolutions with batch norm and a shortcut (a 1×1 strided convolution with batch
    norm where the shape changes): He et al.'s BasicBlock, as torchvision's."""

    conv1: eqx.nn.Conv
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv
    bn2: eqx.nn.BatchNorm
    shortcut: tuple[eqx.nn.Conv, eqx.nn.BatchNorm] | None

    def __init__(self, dims: int, cin: int, cout: int, stride: int, *, dtype, key):
        k1, k2, k3 = jax.random.split(key, 3)

        def bn(c):
            return _batch_norm(c, dtype)

        conv = functools.partial(eqx.nn.Conv, dims, use_bias=False, dtype=dtype)
        self.conv1 = conv(cin, cout, 3, stride=stride, padding=1, key=k1)
        self.bn1 = bn(cout)
        self.conv2 = conv(cout, cout, 3, stride=1, padding=1, key=k2)
        self.bn2 = bn(cout)
        self.shortcut = (
            (conv(cin, cout, 1, stride=stride, key=k3), bn(cout))
            if stride != 1 or cin != cout
            else None
        )

    def __call__(self, x, state):
        y, state = self.bn1(self.conv1(x), state)
        y, state = self.bn2(self.conv2(jax.nn.relu(y)), state)
        if self.shortcut is not None:
            conv, bn = self.shortcut
            x, state = bn(conv(x), state)
        return jax.nn.relu(y + x), state


class ResNet18(eqx.Module):
    """ResNet18 for small inputs, as in the paper's experiments (Papyan, Han & Donoho 2020):
    a 3×3 stride-1 stem convolution and no max-pool (ImageNet's 7×7 stride-2 stem and pool
    would shrink a 32×32 image to 8×8 before the first block), then four stages of two
    BasicBlocks with `width`·(1, 2, 4, 8) channels and strides (1, 2, 2, 2), global average
    pooling, and the classifier. The features h are the pooled `8·width` values (512 for the
    paper's width 64): the input of the last linear layer.

    Batch normalisation keeps running statistics as `eqx.nn.State` (module docstring); build
    with `eqx.nn.make_with_state(ResNet18)(...)`, which returns `(model, state)`. A sample of
    shape [L] or [H, W] is one channel (1-D or 2-D convolutions); [channels, H, W] is taken as
    given (channels first: transpose [H, W, channels] images first).

    **Arguments:**

    - `input_shape`: shape of one sample.
    - `num_classes`: C.
    - `width`: channels of the first stage (64 in the paper); p = 8·width.
    - `dtype`: parameter dtype (default float32).
    - `key`: PRNG key of the initialisation.
    """

    stem: eqx.nn.Conv
    stem_bn: eqx.nn.BatchNorm
    blocks: tuple[_BasicBlock, ...]
    classifier: eqx.nn.Linear
    spatial_dims: int = eqx.field(static=True)

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        width: int = 64,
        dtype=jnp.float32,
        key: PRNGKeyArray,
    ):
        in_ch, spatial = _spatial(input_shape, "ResNet18")
        require(int(width) >= 1, f"resnet-width must be >= 1, got {width}")
        width = int(width)
        self.spatial_dims = len(spatial)
        keys = jax.random.split(key, 10)
        self.stem = eqx.nn.Conv(
            self.spatial_dims, in_ch, width, 3, padding=1, use_bias=False, dtype=dtype, key=keys[0]
        )
        self.stem_bn = _batch_norm(width, dtype)
        blocks, cin = [], width
        for stage, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2))):
            for i in range(2):
                blocks.append(
                    _BasicBlock(
                        self.spatial_dims,
                        cin,
                        width * mult,
                        stride if i == 0 else 1,
                        dtype=dtype,
                        key=keys[1 + 2 * stage + i],
                    )
                )
                cin = width * mult
        self.blocks = tuple(blocks)
        self.classifier = eqx.nn.Linear(cin, num_classes, use_bias=True, dtype=dtype, key=keys[9])

    def features(self, x: Float[Array, "..."], state: eqx.nn.State):
        if x.ndim == self.spatial_dims:
            x = x[None]
        x, state = self.stem_bn(self.stem(x), state)
        x = jax.nn.relu(x)
        for block in self.blocks:
            x, state = block(x, state)
        return jnp.mean(x, axis=tuple(range(1, x.ndim))), state

    def __call__(self, x: Float[Array, "..."], state: eqx.nn.State):
        h, state = self.features(x, state)
        return self.classifier(h), state


@eqx.filter_jit
def _make_resnet18(input_shape, num_classes, width, dtype, key):
    """`(ResNet18, state)`, built in one compiled call: eagerly, every random initialiser of
    every distinct shape is compiled on its own (~20 s on two cores)."""
    return eqx.nn.make_with_state(ResNet18)(
        input_shape, num_classes, width=width, dtype=dtype, key=key
    )


def is_stateful(model) -> bool:
    """Whether `model` follows the stateful convention (`features(x, state)`), i.e. has
    batch normalisation: ResNet18."""
    return isinstance(model, ResNet18)


def make_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    widths: Sequence[int] = (256, 256, 256),
    channels: Sequence[int] = (32, 64),
    resnet_width: int = 64,
    dtype=jnp.float32,
    key: PRNGKeyArray,
):
    """`mlp` (hidden `widths`), `cnn` (conv `channels`, then a dense layer of width
    `widths[-1]`) or `resnet18` (first-stage width `resnet_width`; p = 8·resnet_width).

    **Returns:** the model, initialised from `key` — and for `resnet18` (stateful, batch norm)
    the pair `(model, state)` of `eqx.nn.make_with_state`.
    """
    if name == "mlp":
        return MLP(input_shape, num_classes, widths=widths, dtype=dtype, key=key)
    if name == "cnn":
        return CNN(
            input_shape, num_classes, channels=channels, width=widths[-1], dtype=dtype, key=key
        )
    if name == "resnet18":
        return _make_resnet18(tuple(input_shape), num_classes, int(resnet_width), dtype, key)
    raise InputError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def classifier_of(model) -> tuple[Float[Array, "C p"], Float[Array, " C"]]:
    """(W, b) of the final linear layer."""
    return model.classifier.weight, model.classifier.bias


__all__ = ["CNN", "MLP", "MODELS", "ResNet18", "classifier_of", "is_stateful", "make_model"]
