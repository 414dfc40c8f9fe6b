"""Sweeps: many `simulate` configurations, batched into one compiled call per shape group.

A sweep file is a `simulate` configuration (keys of `simulate.DEFAULTS` at top level) plus a
`[sweep]` table of lists whose Cartesian product is run:

    flow = "ufm"
    classes = 4
    per_class = 10
    dim = 16
    methods = ["gd"]
    eta = 0.5
    t_end = 100.0

    [sweep]
    seeds = 100                  # a count: seed = base seed + 0, 1, …, 99 (or seed = [0, 7, …])
    lam_w = [1e-3, 5e-3]
    per_class = [10, 20]

Top-level sweep options: `precision` ("float64" default, or "float32"), `record` ("final":
metrics at t_end only, default; "all": at every save time) and `quantities` ("all" or a list
such as ["nc1", "objective", "snr", "etf_distance"]).

**Batching.** Configurations that agree on every key except the batchable ones (`seed`, `lam`,
`lam_w`, `lam_h`, `lam_b`, `mean_scale`, `noise_scale`, `eta`) form a *group* — in particular
they share their shapes (classes, per_class, dim, flow, representation) — and a group runs as
ONE compiled call (`batched_simulate`): the initial states are drawn under `vmap` over PRNG keys
with `simulate.build`, so the flows carry their ridges as batched leaves, and

- gradient descent is the `lax.scan` of `gradient_descent` run for every configuration; each
  keeps its own η (η = 0: `simulate.automatic_eta` at its own initial state) and its own step
  counts. The UFM's steps (matrix products only) are vectorised, in chunks whose states fit in
  L2; the flows whose steps solve for a least-squares classifier run one configuration at a
  time inside the compiled call, as do the initial states and the metrics (see "Deadlock");
- the renormalised flows (F3, F3′) use the closed form F(ω(t)) = F(ω(0)) + t, one vectorised
  Newton call; it *is* the exact solution of their ODE, so no ODE is integrated for them (their
  `ode` method is replaced by the `closed_form` series, which `simulate` also writes);
- the other flows integrate ONE vector ODE for the whole group with Diffrax. The configurations
  are independent, so the batched vector field is separable; the step-size controller takes
  the max norm over the batch, so every configuration's local error is held to rtol/atol. The
  steps are shared, so these numbers agree with per-configuration `simulate` to the tolerance,
  not bitwise. (Vmapping `diffeqsolve` instead would run every configuration in lock-step
  with the slowest one anyway, with a while loop per configuration.)

GD and closed-form results equal per-configuration `simulate` runs to ~1e-12 at float64
(`tests/test_sweep.py`).

**Deadlock.** jaxlib's batched LAPACK kernels (eigh, svd, LU, triangular solves under `vmap`)
split their batch over XLA:CPU's intra-op thread pool and block until it finishes; two of them
running concurrently can hold every thread of a small pool and wait forever (seen on 2 cores:
dtrsm and dsyevd both parked in `ParallelBatchMap`, 3 hangs in 5 runs). The compiled programs
here therefore never batch a LAPACK call (`_sequential`: `jax.custom_batching.sequential_vmap`),
and importing this module also turns XLA:CPU's concurrency-optimised scheduler off
(`XLA_CPU_FLAGS`) when no backend is running yet.

**Devices.** The batch axis is split over devices with `jax.shard_map` on a 1-D `Mesh` with
axis "batch" (inputs placed with `NamedSharding(mesh, P("batch"))`); the batch is padded to a
multiple of the device count with copies of its first configuration, dropped from the results.
Each device runs its shard's loops independently, in chunks whose size depends on the batch,
not on the device count; the shared ODE steps are kept in step on every device by a `pmax` in
the error norm. Every number is the same bit for bit on any two device counts above one
(tested: 2 and 4 devices, GD and ODE; and in the sharding benchmark at 256 and 64
configurations). That needs care, because XLA rewrites arithmetic in ways that change the
last bits, differently in differently shaped programs: a loop over a shard of one
configuration is deleted and inlined. So the per-configuration work (GD's initial states, GD,
metrics, the ODE's vector field, snapshots and metrics) runs inside one chunk loop whose trip
count arrives as data (`_map_chunks`). One device is the exception XLA leaves: its program
is not partitioned (under Shardy `shard_map` inlines the body; under GSPMD it does not, and the
numbers differ the same way), and XLA compiles it differently in ways not pinned down here.
The GD states stay bitwise; the metrics and the ODE agree to rounding (measured: an ulp in
NC2's equiangularity, 2.6e-14 relative in the ODE of the central path; bitwise in the small
test sweeps). The flows and the least-squares classifier scale by a traced scalar as
(1/n)·(A B), not (A B)/n, which removed most of those differences: XLA reassociated the
division in one program and not in the other. On one CPU host,
`XLA_FLAGS=--xla_force_host_platform_device_count=4` (set before jax is imported) makes four
host devices.

Multi-host: start the same command on every host with `jax.distributed.initialize()` called
first (for example `python -c "import jax; jax.distributed.initialize(); from centralpath.cli
import main; raise SystemExit(main())" sweep cfg.toml --out runs/s`, so the exit status carries
through; or with the coordinator address, process
count and id given explicitly on clusters without auto-detection). `jax.devices()` then spans
all hosts, every process builds the same global inputs with `jax.make_array_from_callback`,
results are gathered with `multihost_utils.process_allgather`, and only process 0 writes files.

**Precision.** float64 is the default (the theory's identities hold to ~1e-12 only there).
`precision = "float32"` (or `--precision float32`) halves memory and is faster on
accelerators. Measured from the same initial states (experiments/bench_precision.py, simulate
defaults C = 4, N = 10, p = 8): the relative error of ω_j at t_end against float64 is ~2e-7 for
the closed form (t = 1e4) and for 14 GD steps of the renormalised flow, ~1e-4 for the worst ω_j
after 320 GD steps of the reduced UFM (NC1 there: ~2e-6); rounding grows with the step count
and with the conditioning of Σ_W. Once features collapse (NC1 below ~1e-6) float32 NC1 is
rounding noise. The metrics' pseudo-inverse cutoff is max(1e-10, 100·eps) (`metrics_rtol`):
at float32 the default 1e-10 keeps Σ_B's null space and NC1 comes out ~1e7. Use float64 for
anything compared at 1e-9 or tighter.

**Output** (`write_sweep`, `centralpath sweep`): a run directory with `config.toml` (the
resolved sweep file), `metadata.json` and one tidy table `results.csv` with a column per swept
key, then `time, quantity, index, value` (quantity = "<series>/<metric>", as `simulate`'s).
Groups are written to `groups/` atomically as they finish; `--resume DIR` skips finished groups
and gives the same final file as an uninterrupted run.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import SEED_MAX, InputError, NumericalError, require, require_seed
from ._resources import check_memory
from ._runtime import configure_cpu_runtime
from ._series import (
    CLOSED_FORM_QUANTITIES,
    Status,
    automatic_eta,
    check_stable,
    closed_form_series,
    gd_verdict,
    save_times,
    solver_tolerances,
    step_plan,
)
from .simulate import DEFAULTS, FLOW_NAMES, validate

configure_cpu_runtime()

BATCHABLE = ("seed", "lam", "lam_w", "lam_h", "lam_b", "mean_scale", "noise_scale", "eta")
FLOAT_PARAMS = ("lam", "lam_w", "lam_h", "lam_b", "mean_scale", "noise_scale")
NOT_SWEEPABLE = ("methods", "nc1_target")
OPTIONS: dict[str, Any] = {"precision": "float64", "record": "final", "quantities": "all"}
PRECISIONS = ("float64", "float32")
RECORDS = ("final", "all")
CLOSED_FORM_KEYS = CLOSED_FORM_QUANTITIES
MAX_CONFIGS = 10_000_000
CHUNK_BYTES = 1 << 19
SPREAD = 8
RENORMALISED = {"renormalised": "renormalised", "whitened": "whitened"}


# --------------------------------------------------------------------------- the sweep file


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep: the base configuration, the options, the table and its configurations.

    `swept` names the CSV columns (`seeds` becomes `seed`); `configs` are complete `simulate`
    configurations in the order of the Cartesian product (the first key varies slowest).
    """

    base: dict[str, Any]
    options: dict[str, Any]
    table: dict[str, Any]
    swept: tuple[str, ...]
    configs: list[dict[str, Any]] = field(repr=False)

    def to_config(self) -> dict[str, Any]:
        """The resolved sweep file (for config.toml; `parse_sweep` of it gives this spec)."""
        return {**self.base, **self.options, "sweep": dict(self.table)}


def _is_seed(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= SEED_MAX


def _metric_keys() -> tuple[str, ...]:
    from ._trajectory import METRIC_KEYS

    return METRIC_KEYS


def _coerce(key: str, value, default, source: str):
    from ._rundir import _coerce as coerce

    if isinstance(default, float) and isinstance(value, bool):
        raise InputError(f"{source}: {key!r} must be float, got bool {value!r}")
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, bool):
        raise InputError(f"{source}: {key!r} must be int, got bool {value!r}")
    return coerce(key, value, default, source)


def _parse_options(raw: dict[str, Any], source: str) -> dict[str, Any]:
    options = dict(OPTIONS)
    for key in OPTIONS:
        if key in raw:
            options[key] = raw[key]
    require(
        options["precision"] in PRECISIONS,
        f"{source}: precision must be one of {', '.join(PRECISIONS)}, got {options['precision']!r}",
    )
    require(
        options["record"] in RECORDS,
        f"{source}: record must be one of {', '.join(RECORDS)}, got {options['record']!r}",
    )
    q = options["quantities"]
    known = sorted(set(_metric_keys()) | set(CLOSED_FORM_KEYS))
    if q != "all":
        require(
            isinstance(q, list) and len(q) > 0 and all(isinstance(x, str) for x in q),
            f'{source}: quantities must be "all" or a non-empty list of names, got {q!r}',
        )
        bad = [x for x in q if x not in known]
        if bad:  # (not `require`: its message is built eagerly, and bad[0] needs a bad name)
            raise InputError(f"{source}: unknown quantity {bad[0]!r}; known: {', '.join(known)}")
    return options


def parse_sweep(raw: dict[str, Any], source: str = "sweep config") -> SweepSpec:
    """Validate a sweep file's contents (a dict as read from TOML) and expand the product.

    Raises `InputError` with one line for unknown keys, a missing or empty `[sweep]` table,
    empty lists, values of the wrong type and configurations `simulate` would refuse.
    """
    require(isinstance(raw, dict), f"{source}: expected a TOML table at top level")
    base = dict(DEFAULTS)
    for k, v in raw.items():
        key = k.replace("-", "_")
        if key == "sweep" or key in OPTIONS:
            continue
        require(
            key in DEFAULTS,
            f"{source}: unknown key {k!r}; known keys: {', '.join(sorted([*DEFAULTS, *OPTIONS]))} "
            "and the [sweep] table",
        )
        base[key] = _coerce(key, v, DEFAULTS[key], source)
    options = _parse_options({k.replace("-", "_"): v for k, v in raw.items()}, source)
    require("sweep" in raw, f"{source}: no [sweep] table; add one with the lists to sweep over")
    table_raw = raw["sweep"]
    require(
        isinstance(table_raw, dict),
        f"{source}: 'sweep' must be a table [sweep] of lists, got {type(table_raw).__name__}",
    )
    require(len(table_raw) > 0, f"{source}: the [sweep] table is empty; give at least one list")
    table: dict[str, Any] = {}
    axes: list[tuple[str, list]] = []
    for k, v in table_raw.items():
        key = k.replace("-", "_")
        where = f"{source} [sweep]"
        if key == "seeds":
            require(
                "seed" not in {x.replace("-", "_") for x in table_raw},
                f"{where}: give either seeds (a count) or seed (a list), not both",
            )
            if isinstance(v, list):
                key, v = "seed", v
            else:
                require(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                    f"{where}: seeds must be a count >= 1 (or a list), got {v!r}",
                )
                require(
                    v <= MAX_CONFIGS,
                    f"{where}: seeds = {v} is more than {MAX_CONFIGS} configurations; split it",
                )
                # Checked here, before the list of seeds is built: every seed is a 32-bit key.
                require(
                    _is_seed(base["seed"]) and base["seed"] + v - 1 <= SEED_MAX,
                    f"{where}: seeds = {v} from seed = {base['seed']!r} would pass {SEED_MAX} "
                    f"(seeds are 0..2**32-1, each a 32-bit PRNG key); lower seed or seeds",
                )
                table["seeds"] = v
                axes.append(("seed", [int(base["seed"]) + i for i in range(v)]))
                continue
        require(
            key in DEFAULTS,
            f"{where}: unknown key {k!r}; sweepable keys: "
            f"{', '.join(sorted(set(DEFAULTS) - set(NOT_SWEEPABLE)))} and seeds",
        )
        require(key not in NOT_SWEEPABLE, f"{where}: {key} cannot be swept; set it at top level")
        require(key not in dict(axes), f"{where}: {key} is given twice")
        require(
            isinstance(v, list),
            f"{where}: {k} must be a list like {k} = [{DEFAULTS[key]!r}, …], got {v!r}",
        )
        require(len(v) > 0, f"{where}: {k} is an empty list; give at least one value")
        values = [_coerce(key, x, DEFAULTS[key], where) for x in v]
        if key == "seed":  # the configurations' validation skips seeds (one check per rest)
            bad = [x for x in values if not _is_seed(x)]
            if bad:
                require_seed(bad[0], f"{where}: seed")
        table[key] = values
        axes.append((key, values))
    total = math.prod(len(vals) for _, vals in axes)
    require(
        total <= MAX_CONFIGS,
        f"{source}: the sweep has {total} configurations, more than {MAX_CONFIGS}; split it",
    )
    # One dict per configuration (~1.2 KiB with its keys shared), built next: refuse a product
    # that would not fit before building it.
    check_memory(
        total * (sys.getsizeof(base) + 64 * len(axes) + 256),
        f"{source}: expanding {total} configurations",
        "split the sweep into smaller files",
    )
    names = tuple(name for name, _ in axes)
    configs = [
        {**base, **dict(zip(names, combo, strict=True))}
        for combo in itertools.product(*(vals for _, vals in axes))
    ]
    _validate_configs(configs, names, source)
    if options["quantities"] != "all" and "nc4" in options["quantities"]:
        require(
            all(c["representation"] == "full" for c in configs),
            f'{source}: nc4 needs the samples, which representation = "reduced" does not keep; '
            'set representation = "full" or drop nc4 from quantities',
        )
    return SweepSpec(base, options, table, names, configs)


def _validate_configs(configs: list[dict], names: Sequence[str], source: str) -> None:
    seen = set()
    for c in configs:
        # Validity never depends on the seed: check each distinct rest once.
        sig = tuple((k, repr(c[k])) for k in names if k != "seed")
        if sig in seen:
            continue
        seen.add(sig)
        where = ", ".join(f"{k} = {c[k]!r}" for k in names if k != "seed") or "base"
        try:
            validate(c)
            require(c["nc1_target"] == 0, "nc1_target (an early stop) is not supported in sweeps")
        except InputError as e:
            raise InputError(f"{source}: configuration ({where}): {e}") from None


def load_sweep(path) -> SweepSpec:
    """Read and parse a sweep TOML file (`parse_sweep`)."""
    from ._rundir import load_config

    return parse_sweep(load_config(path), source=f"sweep file {path}")


# --------------------------------------------------------------------------- groups


def group_key(config: dict[str, Any]) -> tuple:
    """What configurations of one compiled call share: everything but the batchable keys."""
    return tuple(
        (k, tuple(v) if isinstance(v, list) else v)
        for k, v in sorted(config.items())
        if k in DEFAULTS and k not in BATCHABLE
    )


def groups(configs: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Indices of the configurations of each group, groups in order of first appearance."""
    out: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        out.setdefault(group_key(c), []).append(i)
    return list(out.values())


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


def _as_mesh(devices):
    from jax.sharding import Mesh

    return devices if isinstance(devices, Mesh) else make_mesh(devices)


def _put(mesh, host: np.ndarray):
    """A global array sharded over the batch axis, built from the same host array on every process."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    sharding = NamedSharding(mesh, P("batch", *([None] * (host.ndim - 1))))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _fetch(x) -> np.ndarray:
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


# --------------------------------------------------------------------------- batched compute


def _float_dtype():
    import jax.numpy as jnp

    return jnp.result_type(float)


def _int_dtype():
    import jax.numpy as jnp

    return jnp.result_type(int)


def _build(static: dict, seed, params: dict):
    import jax

    from .simulate import build

    return build({**static, **params}, key=jax.random.PRNGKey(seed))


def _max_norm(axis: str | None):
    import jax
    import jax.numpy as jnp

    def norm(tree):
        leaves = [jnp.max(jnp.abs(x)) for x in jax.tree_util.tree_leaves(tree) if x.size]
        value = jnp.max(jnp.stack(leaves))
        return jax.lax.pmax(value, axis) if axis else value

    return norm


def metrics_rtol(dtype) -> float:
    """The pseudo-inverse cutoff of the metrics: docs/theory.md §7½'s 1e-10, but at least 100 ulps.

    In float32 the zero eigenvalues of Σ_B (rank C − 1 < p) come out at ~1e-7 of the largest,
    above 1e-10: kept, they make NC1 ~1e7 (measured). 100·eps = 1.2e-5 drops them.
    """
    import numpy as np

    return max(1e-10, 100.0 * float(np.finfo(dtype).eps))


def _sanitise(snaps, fallback, lead: int):
    """Replace the snapshots of diverged states by `fallback` (and say which): LAPACK's
    eigensolvers can loop forever on Inf/NaN, and the metrics of a diverged run would hang a
    whole batch. A snapshot is sane when every entry is finite and below max^(1/4), so that the
    products the metrics form stay finite. `lead` leading axes index snapshots ([T] or [T, B])."""
    import jax
    import jax.numpy as jnp

    # nc4 is NaN by design for moment-reduced flows: judge the state, not that field.
    leaves = jax.tree_util.tree_leaves((snaps.stats, snaps.W, snaps.b, snaps.objective))
    ok = None
    for x in leaves:
        limit = jnp.finfo(x.dtype).max ** 0.25
        good = jnp.all(jnp.isfinite(x) & (jnp.abs(x) <= limit), axis=tuple(range(lead, x.ndim)))
        ok = good if ok is None else ok & good

    def pick(s, f):
        return jnp.where(ok.reshape(ok.shape + (1,) * (s.ndim - lead)), s, f)

    return jax.tree_util.tree_map(pick, snaps, fallback), ok


def _mask_metrics(metrics: dict, ok) -> dict:
    import jax.numpy as jnp

    return {
        k: jnp.where(ok.reshape(ok.shape + (1,) * (v.ndim - ok.ndim)), v, jnp.nan)
        for k, v in metrics.items()
    }


def _sequential(fn):
    """`fn` (whose arguments may hold `eqx.Module`s) batched as a loop of unbatched calls.

    jaxlib's batched LAPACK kernels (eigh, svd, LU, triangular solves under `vmap`) split their
    batch over XLA:CPU's intra-op thread pool and block until it is done; two of them running
    concurrently can take every thread of a small pool (2 cores) and deadlock (observed: dtrsm
    and dsyevd both parked in `ParallelBatchMap`). Code with independent LAPACK calls — the
    metrics, the initial states — therefore runs under `jax.custom_batching.sequential_vmap`:
    unbatched kernels, one configuration at a time. Its cost is small beside the GD loops.
    """
    import equinox as eqx
    from jax.custom_batching import sequential_vmap

    def wrapped(*args):
        dyn, static = eqx.partition(args, eqx.is_array)
        out_static = {}

        @sequential_vmap
        def inner(dyn):
            out = fn(*eqx.combine(dyn, static))
            out_dyn, out_static["value"] = eqx.partition(out, eqx.is_array)
            return out_dyn

        out_dyn = inner(dyn)
        return eqx.combine(out_dyn, out_static["value"])

    return wrapped


def _snapshot_metrics(rtol: float, accuracy: float = 0.0):
    """Every metric of `Trajectory.metrics` for one snapshot (as `_trajectory._metrics`, whose
    inner vmap over times would batch LAPACK calls), to be batched with `_sequential`."""
    from ._trajectory import metrics_of_snapshot

    def one(s, lam):
        return metrics_of_snapshot(s, lam, rtol=rtol, accuracy=accuracy)

    return _sequential(one)


def _chunk_size(static: dict, num_configs: int) -> int:
    """Configurations vectorised together in one chunk: a power of two whose states fit in
    `CHUNK_BYTES`, and small enough that the batch splits into `SPREAD` chunks (so up to that
    many devices get whole chunks without padding). It depends on the group and the batch size
    only, never on the device count: every chunk then runs the same compiled loop body whatever
    the sharding, so a configuration's numbers are bitwise the same on any device count above
    one, and its GD states on one device too."""
    import jax

    shapes = jax.eval_shape(lambda: _build(static, 0, {k: 0.0 for k in FLOAT_PARAMS})[1])
    per_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(shapes))
    cap = min(max(1, CHUNK_BYTES // max(per_bytes, 1)), max(1, -(-num_configs // SPREAD)))
    return 1 << (int(cap).bit_length() - 1)  # the largest power of two ≤ cap


def _map_chunks(f, xs, chunk: int, count):
    """`jax.lax.map(f, xs, batch_size=chunk)` (the leading axis a multiple of `chunk`), as a
    loop over `count` chunks, a number the program receives as data.

    XLA deletes a while loop that it can prove runs once and inlines its body, which it then
    fuses and simplifies with its surroundings. That is what made a device holding one
    configuration differ from one holding two (an ulp in NC3, 2 vs 4 devices): the loop that
    built the initial states was deleted, so every chunk now builds its own. The chunk loop
    itself gets a count known only at run time as a precaution of the same kind (at the sizes
    tested a static count gave the same bits). An `optimization_barrier` on a constant count
    would not hide it: XLA folds it.
    """
    import jax
    import jax.numpy as jnp

    tree = jax.tree_util
    n = tree.tree_leaves(xs)[0].shape[0]
    chunks = tree.tree_map(lambda x: x.reshape((n // chunk, chunk) + x.shape[1:]), xs)
    f_chunk = jax.vmap(f)
    shapes = jax.eval_shape(f_chunk, tree.tree_map(lambda x: x[0], chunks))
    out0 = tree.tree_map(lambda s: jnp.zeros((n // chunk,) + s.shape, s.dtype), shapes)

    def body(i, out):
        x = tree.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), chunks)
        y = f_chunk(x)
        return tree.tree_map(lambda o, v: jax.lax.dynamic_update_index_in_dim(o, v, i, 0), out, y)

    out = jax.lax.fori_loop(0, jnp.minimum(count, n // chunk), body, out0)
    return tree.tree_map(lambda o: o.reshape((n,) + o.shape[2:]), out)


@functools.lru_cache(maxsize=64)
def _group_program(
    static_items: tuple, mesh, parts: tuple[str, ...], rtol_metrics: float, chunk: int
):
    """The compiled call of one group: build, then GD / closed form / vector ODE, then metrics.

    `parts` ⊂ {"rho", "gd", "closed_form", "ode"}; "rho" (the spectral radius for automatic η)
    runs alone, before the step counts are known.
    """
    import diffrax
    import equinox as eqx
    import jax
    import jax.flatten_util
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    from ._discrete import _run, _spectral_radius

    static = {k: (list(v) if isinstance(v, tuple) else v) for k, v in static_items}
    C, N = int(static["classes"]), int(static["per_class"])
    kind = RENORMALISED.get(static["flow"])
    metrics_of = _snapshot_metrics(rtol_metrics)
    build = _sequential(lambda seed, p: _build(static, seed, p))
    # Every flow but the UFM solves for its least-squares classifier (LU, triangular solves) in
    # each step and snapshot: run those one configuration at a time (see `_sequential`); the
    # UFM's steps are matrix products only and are vectorised over the batch.
    lapack = static["flow"] != "ufm"
    loop = _sequential if lapack else (lambda f: f)

    def rho_one(flow, y0):
        flat, _ = jax.flatten_util.ravel_pytree(y0)
        v0 = jax.random.normal(jax.random.PRNGKey(0), flat.shape, flat.dtype)
        return _spectral_radius(flow, y0, v0, 50)

    def gd_one(flow, y0, eta_b, gaps_b):
        _, _, bad, snaps = _run(flow, y0, eta_b, gaps_b)
        return snaps, bad

    def per_config(flow, y0, omega0, eta_b, gaps_b, ts):
        res = {}
        if "rho" in parts:
            res["rho"] = loop(rho_one)(flow, y0)
        if "gd" in parts:
            snaps, bad = loop(gd_one)(flow, y0, eta_b, gaps_b)
            snap0 = flow.snapshot(0.0, y0)
            snaps, sane = _sanitise(snaps, snap0, 1)
            # The verdict simulate gives too: saves before the first non-finite step or a
            # tenfold growth of the objective keep their numbers.
            ok, _ = gd_verdict(snaps.objective, snap0.objective, bad, gaps_b)
            ok = ok & jnp.cumprod(sane.astype(jnp.int32)).astype(bool)
            bad = jnp.where((bad < 0) & ~jnp.all(ok), jnp.argmin(ok), bad)
            lam = jnp.asarray(flow.decomposition_lambda)
            metrics = jax.vmap(metrics_of, in_axes=(0, None))(snaps, lam)
            res["gd"] = _mask_metrics(metrics, ok)
            res["gd_bad"] = bad  # ≥ 0: diverged (the step, or the save index of the growth)
        if "closed_form" in parts:
            res["closed_form"] = closed_form_series(omega0, ts, C, N, kind)
        return res

    def local(seeds, params, eta, gaps, ts, count):
        """One device's shard of the batch."""
        out = {}
        if {"rho", "gd", "closed_form"} & set(parts):
            # Vectorised in chunks whose states fit in L2 (~512 KiB): a GD step over the whole
            # shard at once streams every state through memory several times per step and is
            # memory-bound; chunk by chunk, the loops run on cache-resident data. Each chunk
            # builds its own initial states, so nothing a chunk computes depends on the shard
            # length (see _map_chunks).
            def run(xs):
                seed, p, e, g = xs
                flow, y0, omega0 = build(seed, p)
                return per_config(flow, y0, omega0, e, g, ts)

            out.update(_map_chunks(run, (seeds, params, eta, gaps), chunk, count))
        if "ode" in parts:
            flows, y0s, _ = jax.vmap(build)(seeds, params)
            out.update(_vector_ode(flows, y0s, ts, count, seeds.shape))
        return out

    def _vector_ode(flows, y0s, ts, count, batch_shape):
        flows_dyn, flows_static = eqx.partition(flows, eqx.is_array)

        def each(fn, *args):
            """fn(flow, *args of one configuration) over the shard, chunk by chunk (as the GD
            loops, so that no number depends on the shard length)."""
            one = loop(lambda d, *a: fn(eqx.combine(d, flows_static), *a))
            return _map_chunks(lambda xs: one(*xs), (flows_dyn, *args), chunk, count)

        def vf(t, y, args):
            return each(lambda f, yb: f(t, yb, None), y)

        def snapshot(t, y, args):
            return each(lambda f, yb: f.snapshot(t, yb), y)

        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=snapshot)])
        rtol, atol = solver_tolerances(static["rtol"], static["atol"])
        # The solve knows each state to about its tolerances: that bounds the resolved ω_j.
        ode_metrics_of = _snapshot_metrics(rtol_metrics, max(rtol, atol))
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf),
            diffrax.Tsit5(),
            t0=0.0,
            t1=ts[-1],
            dt0=None,
            y0=y0s,
            saveat=saveat,
            stepsize_controller=diffrax.PIDController(
                rtol=rtol, atol=atol, norm=_max_norm("batch")
            ),
            max_steps=int(static["max_steps"]),
            throw=False,
        )
        snap0 = each(lambda f, yb: f.snapshot(0.0, yb), y0s)
        snaps, sane = _sanitise(sol.ys[0], snap0, 2)  # leaves [T, B, …]
        by_config = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), snaps)  # [B, T, …]
        metrics = each(
            lambda f, s: jax.vmap(ode_metrics_of, in_axes=(0, None))(
                s, jnp.asarray(f.decomposition_lambda)
            ),
            by_config,
        )
        metrics = _mask_metrics(metrics, sane.T)
        ok = sol.result == diffrax.RESULTS.successful
        steps = jnp.asarray(sol.stats["num_steps"])
        return {
            "ode": metrics,
            "ode_ok": jnp.broadcast_to(ok, batch_shape),
            "ode_steps": jnp.broadcast_to(steps, batch_shape),
        }

    batch = P("batch")
    program = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(batch, batch, batch, batch, P(), P()),
        out_specs=batch,
        check_vma=False,
    )
    return jax.jit(program)


def _check_group(configs: Sequence[dict]) -> dict:
    require(len(configs) >= 1, "batched_simulate needs at least one configuration")
    key = group_key(configs[0])
    for c in configs[1:]:
        if group_key(c) != key:
            diff = [k for (k, v), (_, w) in zip(key, group_key(c), strict=True) if v != w]
            raise InputError(
                f"configurations of one batched call must agree on {', '.join(diff)}; "
                "use run_sweep to split them into groups"
            )
    return dict(key)


def batched_simulate(
    configs: Sequence[dict[str, Any]],
    *,
    devices=None,
    record: str = "final",
    quantities: Sequence[str] | str = "all",
    log: Callable[[str], None] | None = None,
) -> list[dict[str, np.ndarray]]:
    """`simulate` for many configurations of one group, in one compiled call.

    **Arguments:**

    - `configs`: complete configurations (keys of `simulate.DEFAULTS`) that agree on every key
      except `seed`, `lam`, `lam_w`, `lam_h`, `lam_b`, `mean_scale`, `noise_scale`, `eta`.
    - `devices`: a device count, a list of devices, or a `Mesh` (default: all devices).
    - `record`: `"final"` (metrics at t_end only) or `"all"` (every save time).
    - `quantities`: `"all"` or the metric names to keep.

    **Returns:** one flat results dict per configuration, in the format of `simulate`
    (`"<series>/times"` and `"<series>/<metric>"`, series `gd`, `ode`, `closed_form`).
    A diverged GD run gets NaN metrics and a warning through `log`.
    """
    import jax
    import jax.numpy as jnp

    log = log or (lambda s: None)
    configs = [{**DEFAULTS, **c} for c in configs]
    static = _check_group(configs)
    for c in configs:
        validate(c)
    require(static["nc1_target"] == 0, "nc1_target (an early stop) is not supported in sweeps")
    require(record in RECORDS, f"record must be one of {', '.join(RECORDS)}, got {record!r}")
    mesh = _as_mesh(devices)
    B, D = len(configs), mesh.size
    ts_all = save_times(float(static["t_end"]), int(static["num_saves"]))
    ts = ts_all if record == "all" else ts_all[-1:]
    renormalised = static["flow"] in RENORMALISED
    methods = list(static["methods"])
    parts = []
    if "gd" in methods:
        parts.append("gd")
    if renormalised:
        parts.append("closed_form")
    elif "ode" in methods:
        parts.append("ode")
    # Every device gets whole chunks, so the chunks are the same for any device count.
    chunk = _chunk_size(static, B)
    Bp = -(-B // (D * chunk)) * (D * chunk)
    fdt, idt = _float_dtype(), _int_dtype()

    def padded(values, dtype) -> np.ndarray:
        a = np.asarray(values, dtype=dtype)
        return np.concatenate([a, np.repeat(a[:1], Bp - B, axis=0)]) if Bp > B else a

    seeds = padded([int(c["seed"]) for c in configs], idt)
    params = {k: padded([float(c[k]) for c in configs], fdt) for k in FLOAT_PARAMS}
    # Every input is [B, …] even where unused, so one program signature serves all parts.
    eta = np.asarray([float(c["eta"]) for c in configs])
    T = len(ts)
    gaps = np.zeros((B, T), dtype=np.int64)
    steps = None
    static_items = tuple(
        sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in static.items())
    )
    put = functools.partial(_put, mesh)
    ts_dev = jnp.asarray(ts, dtype=fdt)
    count = jnp.asarray(Bp // (D * chunk), jnp.int32)  # chunks per device (see _map_chunks)
    params_dev = {k: put(v) for k, v in params.items()}
    seeds_dev = put(seeds)
    if "gd" in parts:
        # The stable step of every configuration: automatic steps are half of it, and a given
        # step beyond it is refused as in simulate (the flow would not be followed).
        rho_prog = _group_program(static_items, mesh, ("rho",), 1e-10, chunk)
        out = rho_prog(
            seeds_dev, params_dev, put(padded(eta, fdt)), put(padded(gaps, idt)), ts_dev, count
        )
        rho = _fetch(out["rho"])[:B]
        stable = np.where(rho > 0, 2.0 / np.where(rho > 0, rho, 1.0), np.inf)
        eta = np.where(eta == 0, automatic_eta(stable, float(static["t_end"])), eta)
        check_stable(eta, stable)
        steps = step_plan(ts, eta, static["max_gd_steps"], static["t_end"])
        gaps = np.diff(np.concatenate([np.zeros((B, 1), np.int64), steps], axis=1), axis=1)
    program = _group_program(static_items, mesh, tuple(parts), metrics_rtol(fdt), chunk)
    out = program(
        seeds_dev, params_dev, put(padded(eta, fdt)), put(padded(gaps, idt)), ts_dev, count
    )
    out = jax.tree_util.tree_map(lambda x: _fetch(x)[:B], out)
    wanted = _quantity_filter(quantities)

    def keep(k: str) -> bool:  # NC4 needs the samples: reduced states have none to measure
        return wanted(k) and not (k == "nc4" and static["representation"] == "reduced")

    results: list[dict[str, np.ndarray]] = [{} for _ in range(B)]
    if "gd" in parts:
        bad = out["gd_bad"]
        if np.any(bad >= 0):
            which = [int(configs[i]["seed"]) for i in np.flatnonzero(bad >= 0)[:5]]
            log(
                f"warning: gradient descent diverged for {int(np.sum(bad >= 0))} configuration(s) "
                f"(seeds {which}…); their gd metrics from the divergence on are NaN — lower eta"
            )
        for i in range(B):
            # As simulate: a snapshot at every save time, t = round(t/η)·η (repeats kept).
            res = {"gd/times": np.asarray(steps[i] * eta[i], float)}
            for k, v in out["gd"].items():
                if keep(k):
                    res[f"gd/{k}"] = np.asarray(v[i])
            res["gd/eta"] = np.asarray(eta[i])
            res["gd/status"] = np.asarray(
                int(Status.gd_diverged if bad[i] >= 0 else Status.successful)
            )
            results[i].update(res)
    if "closed_form" in parts:
        for i in range(B):
            results[i]["closed_form/times"] = np.asarray(ts, float)
            for k, v in out["closed_form"].items():
                if keep(k):
                    results[i][f"closed_form/{k}"] = np.asarray(v[i])
    if "ode" in parts:
        if not np.all(out["ode_ok"]):
            raise NumericalError(
                f"the batched ODE solve failed before t = {static['t_end']}; raise max_steps above "
                f"{static['max_steps']}, loosen rtol/atol, or shorten t_end"
            )
        log(f"ode: {int(out['ode_steps'][0])} adaptive steps shared by {B} configurations")
        for i in range(B):
            results[i]["ode/times"] = np.asarray(ts, float)
            results[i]["ode/status"] = np.asarray(int(Status.successful))
            for k, v in out["ode"].items():
                if keep(k):
                    results[i][f"ode/{k}"] = np.asarray(v[i])
    return results


def _quantity_filter(quantities) -> Callable[[str], bool]:
    if quantities == "all":
        return lambda k: True
    wanted = set(quantities)
    return lambda k: k in wanted


# --------------------------------------------------------------------------- sweeps


def _cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def group_csv(spec: SweepSpec, indices: Sequence[int], results: Sequence[dict]) -> str:
    """The tidy rows of one group (no header): swept values, time, quantity, index, value."""
    from ._rundir import tidy_rows

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for i, res in zip(indices, results, strict=True):
        prefix = [_cell(spec.configs[i][k]) for k in spec.swept]
        for t, q, j, v in tidy_rows(res):
            w.writerow([*prefix, repr(t), q, j, repr(v)])
    return buf.getvalue()


def csv_header(spec: SweepSpec) -> str:
    return ",".join([*spec.swept, "time", "quantity", "index", "value"]) + "\n"


def run_sweep(
    spec: SweepSpec,
    *,
    devices=None,
    log: Callable[[str], None] | None = None,
    skip: Callable[[int], bool] | None = None,
    on_group: Callable[[int, list[int], list[dict]], None] | None = None,
) -> list[dict[str, np.ndarray] | None]:
    """Run every group of a sweep; return per-configuration results (None for skipped groups).

    `skip(g)` says a group is already done (resume); `on_group(g, indices, results)` is called
    as each group finishes (to write it).
    """
    log = log or (lambda s: None)
    devices = _as_mesh(devices)
    parts = groups(spec.configs)
    out: list[dict | None] = [None] * len(spec.configs)
    for g, indices in enumerate(parts):
        if skip is not None and skip(g):
            log(f"group {g + 1}/{len(parts)}: done already, skipped")
            continue
        start = time.perf_counter()
        configs = [spec.configs[i] for i in indices]
        res = batched_simulate(
            configs,
            devices=devices,
            record=spec.options["record"],
            quantities=spec.options["quantities"],
            log=log,
        )
        c = configs[0]
        log(
            f"group {g + 1}/{len(parts)}: {len(indices)} configurations of {c['flow']} "
            f"({c['representation']}, C={c['classes']}, N={c['per_class']}, p={c['dim']}) "
            f"in {time.perf_counter() - start:.2f} s"
        )
        for i, r in zip(indices, res, strict=True):
            out[i] = r
        if on_group is not None:
            on_group(g, indices, res)
    return out


def _group_path(partial: Path, g: int) -> Path:
    return partial / "groups" / f"group-{g:05d}.csv"


def _changed_keys(saved: dict, config: dict) -> list[str]:
    """The keys (`sweep.KEY` for the table) whose values differ between two sweep configs."""
    import tomllib

    from ._rundir import dumps_toml

    new = tomllib.loads(dumps_toml(config))  # the form config.toml holds, for a fair comparison
    changed = []
    for key in sorted(set(saved) | set(new)):
        a, b = saved.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            changed.append(key)
    return changed


def _start_run_dir(out, config: dict, *, resume: bool, overwrite: bool, inputs=()):
    """The sweep's run directory: reopened to resume (same configuration required, every group
    file verified against its recorded digest) or new."""
    from ._rundir import RunDir

    if resume:
        run, saved = RunDir.reopen(out, "sweep", inputs=inputs)
        with run.running():
            changed = _changed_keys(saved, config)
            require(
                not changed,
                f"--resume with changed flags is refused: the sweep configuration differs from "
                f"the one of the interrupted sweep at {out} in {', '.join(changed)}; resume with "
                "the same file (or without a file), or start a new --out",
            )
            # A group file without a recorded digest was not written by this sweep: trusting it
            # would put foreign rows in results.csv.
            foreign = [
                f
                for f in sorted(run.file("groups").glob("group-*.csv"))
                if not run.tracked(f"groups/{f.name}")
            ]
            require(
                not foreign,
                f"--resume refused: {foreign[0] if foreign else ''} was not written by this sweep "
                "(no recorded digest); remove it, or start afresh with --overwrite",
            )
        return run
    run = RunDir(
        out, "sweep", config, overwrite=overwrite, figures=False, resumable=True, inputs=inputs
    )
    with run.running():
        run.file("groups").mkdir()
    return run


def write_sweep(
    spec: SweepSpec,
    out,
    *,
    devices=None,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    inputs=(),
) -> Path:
    """Run a sweep into the run directory `out` (see the module docstring); return its path.

    The directory is built under a hidden `.NAME.partial` sibling; each finished group is
    written there atomically, and `resume=True` continues an interrupted sweep from it. A failure
    keeps the partial sweep. `inputs`: files the command read (the run must not hold them).
    """
    import jax

    from ._rundir import RunDir

    log = log or (lambda s: None)
    config = spec.to_config()
    # Multi-host: every process computes, the first checks and writes. Its verdict on the
    # directory is broadcast before anyone computes, so all processes fail alike (and none
    # trips over the .partial folder the first one has just made, on a shared file system).
    writer = jax.process_index() == 0
    multi = jax.process_count() > 1
    run, error = None, None
    if writer:
        try:
            run = _start_run_dir(out, config, resume=resume, overwrite=overwrite, inputs=inputs)
        except InputError as e:
            kept = getattr(e, "centralpath_kept", "")
            error = f"{e}; {kept}" if kept else str(e)
    if multi:
        from jax.experimental import multihost_utils

        failed = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
        if failed:
            raise InputError(error or f"process 0 could not start the sweep at {out}; see its log")
        if not writer:
            run = RunDir.attach(out, "sweep", config)
    elif error is not None:
        raise InputError(error)
    # Any failure from here on keeps the partial sweep and its finished groups (and says so).
    with run.running():
        return _run_groups(spec, run, devices, log, resume, writer, multi)


def _run_groups(spec, run, devices, log, resume: bool, writer: bool, multi: bool) -> Path:
    from ._io import write_text

    n_groups = len(groups(spec.configs))
    mesh = _as_mesh(devices)
    # Which groups are finished is decided once, before any group runs, the same on every
    # process (process 0 has verified every group file against its digest in `_start_run_dir`).
    finished = (
        {g for g in range(n_groups) if _group_path(run.partial, g).is_file()} if resume else set()
    )
    if multi:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("centralpath sweep: groups to skip read")

    def save(g: int, indices: list[int], results: list[dict]) -> None:
        if writer:
            write_text(_group_path(run.partial, g), group_csv(spec, indices, results))

    run_sweep(spec, devices=mesh, log=log, skip=finished.__contains__, on_group=save)
    if not writer:
        return run.path
    with open(run.file(".results.csv.tmp"), "w") as fh:
        fh.write(csv_header(spec))
        for g in range(n_groups):
            fh.write(_group_path(run.partial, g).read_text())
    os.replace(run.file(".results.csv.tmp"), run.file("results.csv"))
    return run.finish(
        dict(
            configurations=len(spec.configs),
            groups=n_groups,
            swept=list(spec.swept),
            precision=spec.options["precision"],
            resumed=resume,
            mesh_devices=int(mesh.size),
        )
    )


def read_results(run) -> list[dict[str, str]]:
    """The rows of a sweep's results.csv as dicts of strings (for quick inspection and tests)."""
    path = Path(run) / "results.csv"
    require(path.is_file(), f"{run} has no results.csv; it is not a finished sweep directory")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


__all__ = [
    "SweepSpec",
    "parse_sweep",
    "load_sweep",
    "groups",
    "batched_simulate",
    "run_sweep",
    "write_sweep",
    "make_mesh",
    "read_results",
    "FLOW_NAMES",
]
