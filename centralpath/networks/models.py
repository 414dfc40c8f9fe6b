"""Classifier networks whose last layer is the (W, b) of the paper: `logits = W h + b`.

Every model is an Equinox module acting on one sample (batch with `jax.vmap`) with

- `features(x)`: h ∈ R^p, the last hidden layer — the input of the final linear layer, which is
  what docs/theory.md §1 calls the features;
- `classifier`: an `eqx.nn.Linear(p, C, use_bias=True)`, so `classifier.weight` is W [C, p] and
  `classifier.bias` is b [C];
- `__call__(x) = classifier(features(x))`.

Parameters default to float32 even when JAX runs at float64 (training speed); the analysis
converts captured features to float64 (docs/theory.md §7½).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import InputError, require

MODELS = ("mlp", "cnn")


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


def make_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    widths: Sequence[int] = (256, 256, 256),
    channels: Sequence[int] = (32, 64),
    dtype=jnp.float32,
    key: PRNGKeyArray,
) -> MLP | CNN:
    """`mlp` (hidden `widths`) or `cnn` (conv `channels`, then a dense layer of width `widths[-1]`).

    **Returns:** the model, initialised from `key`.
    """
    if name == "mlp":
        return MLP(input_shape, num_classes, widths=widths, dtype=dtype, key=key)
    if name == "cnn":
        return CNN(
            input_shape, num_classes, channels=channels, width=widths[-1], dtype=dtype, key=key
        )
    raise InputError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def classifier_of(model) -> tuple[Float[Array, "C p"], Float[Array, " C"]]:
    """(W, b) of the final linear layer."""
    return model.classifier.weight, model.classifier.bias


__all__ = ["CNN", "MLP", "MODELS", "classifier_of", "make_model"]
