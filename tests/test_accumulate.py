"""Mergeable class statistics: chunks, merges, JAX, devices and processes all give the
statistics of one pass over every sample (to 1e-12), imbalanced classes and chunks that miss a
class included."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from numpy.testing import assert_allclose

import centralpath as cp
from centralpath._errors import InputError

C, P = 5, 7
COUNTS = (40, 3, 150, 20, 2)  # imbalanced, one class of two samples


def features(seed=0, scale=1e3, dtype=np.float32):
    """Imbalanced classes whose means are far from 0 and from each other (cancellation)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), COUNTS)
    rng.shuffle(y)
    H = rng.standard_normal((y.size, P)) + scale * rng.standard_normal((C, P))[y]
    return H.astype(dtype), y


def close(stats, ref, rtol=1e-12):
    for a, b in (
        (stats.counts, ref.counts),
        (stats.class_means, ref.class_means),
        (stats.sigma_w, ref.sigma_w),
    ):
        a, b = np.asarray(a), np.asarray(b)
        # Normwise: entries of Σ_W near 0 carry the rounding of the largest ones.
        assert np.max(np.abs(a - b)) <= rtol * np.max(np.abs(b)), np.max(np.abs(a - b))


@given(
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=12),
    sort=st.booleans(),
    seed=st.integers(0, 3),
)
def test_chunks_equal_one_pass(sizes, sort, seed):
    H, y = features(seed)
    if sort:  # chunks of sorted labels miss whole classes
        order = np.argsort(y, kind="stable")
        H, y = H[order], y[order]
    ref = cp.class_stats(H, y, C)
    acc = cp.StatsAccumulator.zeros(C, P)
    bounds = np.minimum(np.cumsum([0, *sizes]), y.size)
    bounds = np.unique(np.r_[bounds, y.size])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        acc = acc.update(H[a:b], y[a:b])
    close(acc.finalize(), ref)


def test_a_chunk_missing_a_class_and_empty_chunks():
    H, y = features(1)
    ref = cp.class_stats(H, y, C)
    no_class_1 = y != 1
    acc = cp.StatsAccumulator.zeros(C, P).update(H[no_class_1], y[no_class_1])
    assert acc.counts[1] == 0 and np.all(acc.means[1] == 0)
    acc = acc.update(H[:0], y[:0]).update(H[~no_class_1], y[~no_class_1])
    close(acc.finalize(), ref)


def test_merge_is_exact_in_any_order():
    H, y = features(2)
    ref = cp.class_stats(H, y, C)
    parts = [
        cp.StatsAccumulator.zeros(C, P).update(H[i : i + 23], y[i : i + 23])
        for i in range(0, y.size, 23)
    ]
    left = parts[0]
    for part in parts[1:]:
        left = left.merge(part)
    right = parts[-1]
    for part in reversed(parts[:-1]):
        right = part.merge(right)
    tree = parts
    while len(tree) > 1:
        tree = [
            tree[i].merge(tree[i + 1]) if i + 1 < len(tree) else tree[i]
            for i in range(0, len(tree), 2)
        ]
    for acc in (left, right, tree[0]):
        close(acc.finalize(), ref)
    # Merging with an empty accumulator changes nothing.
    close(left.merge(cp.StatsAccumulator.zeros(C, P)).finalize(), ref)


def test_jax_backend_and_padding_mask_equal_numpy():
    H, y = features(3)
    ref = cp.class_stats(H, y, C)
    acc = cp.StatsAccumulator.zeros(C, P, backend="jax")
    m = 32  # fixed shape: the last chunk is padded and masked
    for i in range(0, y.size, m):
        h, lab = H[i : i + m], y[i : i + m]
        pad = m - len(lab)
        mask = np.r_[np.ones(len(lab)), np.zeros(pad)]
        h = np.pad(h, ((0, pad), (0, 0)), constant_values=1e6)  # padding must not count
        lab = np.pad(lab, (0, pad))
        acc = acc.update(jnp.asarray(h), jnp.asarray(lab), mask=jnp.asarray(mask))
    assert isinstance(acc.counts, jnp.ndarray)
    close(acc.finalize(), ref)
    close(acc.to_numpy().finalize(), ref)


def test_nc4_count_equals_the_metric():
    H, y = features(4, scale=1.0)
    rng = np.random.default_rng(0)
    W, b = rng.standard_normal((C, P)), rng.standard_normal(C)
    ref = cp.class_stats(H, y, C)
    expected = float(cp.nc4(jnp.asarray(H, jnp.float64), ref, W, b))
    acc = cp.StatsAccumulator.zeros(C, P)
    for i in range(0, y.size, 50):
        acc = acc.update(H[i : i + 50], y[i : i + 50])
    assert np.isnan(acc.nc4())
    for i in range(0, y.size, 17):  # the second pass, against the final means
        acc = acc.count_nc4(H[i : i + 17], W, b)
    assert 0 < expected < 1
    assert acc.nc4() == expected and acc.nc4_samples == y.size
    jax_acc = cp.StatsAccumulator.zeros(C, P, backend="jax").update(jnp.asarray(H), jnp.asarray(y))
    assert float(jax_acc.count_nc4(jnp.asarray(H), W, b).nc4()) == expected


def test_refusals_are_one_line():
    acc = cp.StatsAccumulator.zeros(C, P)
    H, y = features(0)
    for call, phrase in (
        (lambda: acc.update(H, y + 1), "labels must lie in 0..4"),
        (lambda: acc.update(H[:, :3], y), "features must be [m, p = 7]"),
        (lambda: acc.update(H, y[:-1]), "labels must have shape"),
        (lambda: acc.update(H, y.astype(float)), "labels must be integers"),
        (lambda: acc.merge(cp.StatsAccumulator.zeros(C, P + 1)), "same C and p"),
        (lambda: acc.finalize(), "has seen no sample"),
        (lambda: acc.count_nc4(H, np.zeros((C, 3)), np.zeros(C)), "W must be [C, p]"),
        (lambda: cp.StatsAccumulator.zeros(C, P, backend="torch"), "unknown backend"),
    ):
        with pytest.raises(InputError) as info:
            call()
        assert phrase in str(info.value) and "\n" not in str(info.value)


def test_single_process_merge_is_identity():
    H, y = features(0)
    acc = cp.StatsAccumulator.zeros(C, P).update(H, y)
    assert cp.merge_across_processes(acc) is acc


SHARDED = """
import json, sys
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
import centralpath as cp
from jax.sharding import Mesh
sys.path.insert(0, sys.argv[1])
from test_accumulate import C, features
H, y = features(5, dtype=np.float64)
rng = np.random.default_rng(1)
W, b = rng.standard_normal((C, H.shape[1])), rng.standard_normal(C)
out = {}
for d in (1, 4):
    mesh = Mesh(np.asarray(jax.devices()[:d]), ("samples",))
    acc = cp.sharded_stats(H, y, C, mesh=mesh, W=W, b=b).to_numpy()
    out[d] = [acc.counts.tolist(), acc.means.tolist(), acc.sigma_w().tolist(), float(acc.nc4())]
ref = cp.class_stats(H, y, C)
out["ref"] = [np.asarray(ref.counts).tolist(), np.asarray(ref.class_means).T.tolist(),
              np.asarray(ref.sigma_w).tolist(), float(cp.nc4(H, ref, W, b))]
out["devices"] = len(jax.devices())
print(json.dumps(out))
"""


def test_four_host_devices_equal_one_device():
    """A reduction over a 4-device mesh (n = 215 does not divide by 4: the tail is masked)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED, os.path.dirname(__file__)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    for got in (out["1"], out["4"]):
        for a, b in zip(got[:3], out["ref"][:3], strict=True):
            a, b = np.asarray(a), np.asarray(b)
            assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b))
        assert got[3] == out["ref"][3]
    for a, b in zip(out["1"][:3], out["4"][:3], strict=True):
        assert_allclose(a, b, rtol=0, atol=1e-12 * np.max(np.abs(b)))


LAUNCH = """
import json, sys
import jax, numpy as np
port, pid = sys.argv[1], int(sys.argv[2])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_enable_x64", True)
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
sys.path.insert(0, sys.argv[3])
import centralpath as cp
from test_accumulate import C, P, features
H, y = features(6)
half = slice(0, 100) if pid == 0 else slice(100, None)  # each process sees its own samples
acc = cp.merge_across_processes(cp.StatsAccumulator.zeros(C, P).update(H[half], y[half]))
print(json.dumps([acc.counts.tolist(), acc.means.tolist(), acc.sigma_w().tolist()]))
"""


@pytest.mark.slow
def test_two_processes_merge_to_one_pass():
    """jax.distributed on one machine (CPU collectives over gloo): both processes get the
    statistics of all samples."""
    import json
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = str(sock.getsockname()[1])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LAUNCH, port, str(pid), os.path.dirname(__file__)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    H, y = features(6)
    ref = cp.class_stats(H, y, C)
    for got in outs:
        for a, b in zip(got, (ref.counts, np.asarray(ref.class_means).T, ref.sigma_w), strict=True):
            b = np.asarray(b)
            assert np.max(np.abs(np.asarray(a) - b)) <= 1e-12 * np.max(np.abs(b))


def test_source_is_not_needed_as_a_whole():
    """`accumulate` takes any iterable of chunks, e.g. a generator reading a file."""
    H, y = features(7)

    def chunks():
        for i in range(0, y.size, 31):
            yield H[i : i + 31], y[i : i + 31]

    close(cp.accumulate(chunks(), C, P).finalize(), cp.class_stats(H, y, C))


def test_x64_is_required_for_jax_arrays():
    code = textwrap.dedent(
        """
        import numpy as np, centralpath as cp
        from centralpath._errors import InputError
        try:
            cp.StatsAccumulator.zeros(3, 2, backend="jax")
        except InputError as e:
            print("refused:", e)
        acc = cp.StatsAccumulator.zeros(3, 2).update(np.ones((3, 2)), np.arange(3))
        print("host ok", acc.counts.dtype)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "refused: a JAX StatsAccumulator needs float64" in proc.stdout, proc.stderr
    assert "host ok float64" in proc.stdout
