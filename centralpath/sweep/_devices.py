"""Devices: the 1-D "batch" mesh, placing global inputs on it, gathering results (also across
hosts)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._errors import require

# --------------------------------------------------------------------------- devices


def make_mesh(devices: int | Sequence | None = None):
    """A 1-D `Mesh` with axis "batch" over the first `devices` devices (all by default)."""
    import jax
    from jax.sharding import Mesh

    available = jax.devices()
    if devices is None:
        chosen = available
    elif isinstance(devices, int):
        require(
            1 <= devices <= len(available),
            f"--devices must lie in 1..{len(available)} (devices available: {len(available)}), "
            f"got {devices}",
        )
        chosen = available[:devices]
    else:
        chosen = list(devices)
    return Mesh(np.asarray(chosen), ("batch",))


def as_mesh(devices):
    from jax.sharding import Mesh

    return devices if isinstance(devices, Mesh) else make_mesh(devices)


def put_batch(mesh, host: np.ndarray):
    """A global array sharded over the batch axis, built from the same host array on every process."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    sharding = NamedSharding(mesh, P("batch", *([None] * (host.ndim - 1))))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def fetch(x) -> np.ndarray:
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
