"""The compiled program of one group: initial states, gradient descent, the closed form or the
vector ODE, then the metrics, all in chunk loops sharded over the batch axis."""

from __future__ import annotations

import functools

from .._series import (
    closed_form_series,
    gd_verdict,
    save_times,
    solver_tolerances,
)
from ._spec import CHUNK_BYTES, FLOAT_PARAMS, RENORMALISED, SPREAD

# --------------------------------------------------------------------------- batched compute


def float_dtype():
    import jax.numpy as jnp

    return jnp.result_type(float)


def int_dtype():
    import jax.numpy as jnp

    return jnp.result_type(int)


def _build(static: dict, seed, params: dict):
    """The initial state of one configuration of a group: its shared keys (`static`) with the
    batched real parameters as arrays (`params`, traced) and the key of its seed."""
    import jax

    from ..simulate import SimulationConfig, build

    return build(SimulationConfig(**static), key=jax.random.PRNGKey(seed), params=params)


def _batch_rms_norm(each, axis: str | None):
    """The step-size controller's norm for a batch: the largest of the configurations' RMS norms
    (the PID controller's default norm, each configuration's leaves together), over every
    device. One configuration alone gets the norm `simulate` uses. Each configuration's norm is
    taken by `each` (chunk by chunk, as the vector field): a sum's rounding then never depends
    on how many configurations a device holds, and the maximum is exact, so the shared steps are
    the same bits on any device count."""
    import diffrax
    import jax
    import jax.numpy as jnp

    rms = diffrax.PIDController(rtol=1.0, atol=1.0).norm  # the default `norm` field

    def norm(tree):
        value = jnp.max(each(lambda _, e: rms(e), tree))
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
    from .._trajectory import metrics_of_snapshot

    def one(s, lam):
        return metrics_of_snapshot(s, lam, rtol=rtol, accuracy=accuracy)

    return _sequential(one)


def chunk_size(static: dict, num_configs: int) -> int:
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


def map_chunks(f, xs, chunk: int, count, *, two_chunks: bool = True):
    """`jax.lax.map(f, xs, batch_size=chunk)` (the leading axis a multiple of `chunk`), as a
    loop over `count` chunks, a number the program receives as data.

    XLA deletes a while loop that it can prove runs once and inlines its body, which it then
    fuses and simplifies with its surroundings. That is what made a device holding one
    configuration differ from one holding two (an ulp in NC3, 2 vs 4 devices): the loop that
    built the initial states was deleted, so every chunk now builds its own. The chunk loop
    itself gets a count known only at run time as a precaution of the same kind (at the sizes
    tested a static count gave the same bits). An `optimization_barrier` on a constant count
    would not hide it: XLA folds it.

    A shard of a single chunk (one configuration per device, say) is the other way the loop's
    context changes: its slices span whole arrays, XLA folds them away and fuses the body with
    what surrounds it. Under the command line's quick compile (elemental fusion emitters, LLVM
    -O1) the metrics then rounded differently from a device holding two chunks (NC1, NC3, SNR:
    up to 2e-15 relative, 2 vs 4 devices; the states themselves agreed). `two_chunks` makes
    such a shard a loop over two, the second never visited: a copy of `xs` per call, cheap for
    GD's seeds and for the ODE's metrics (once per solve). The ODE's vector field and snapshots,
    whose numbers were the same either way, leave it out: copying the state at every stage
    cost 7-10% of the ODE's CPU time (central path, p = 16, one configuration per device).
    """
    import jax
    import jax.numpy as jnp

    tree = jax.tree_util
    n = tree.tree_leaves(xs)[0].shape[0]
    m = n // chunk
    chunks = tree.tree_map(lambda x: x.reshape((m, chunk) + x.shape[1:]), xs)
    rows = max(m, 2) if two_chunks else m
    if rows > m:
        chunks = tree.tree_map(lambda c: jnp.concatenate([c, c]), chunks)
    f_chunk = jax.vmap(f)
    shapes = jax.eval_shape(f_chunk, tree.tree_map(lambda x: x[0], chunks))
    out0 = tree.tree_map(lambda s: jnp.zeros((rows,) + s.shape, s.dtype), shapes)

    def body(i, out):
        x = tree.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), chunks)
        y = f_chunk(x)
        return tree.tree_map(lambda o, v: jax.lax.dynamic_update_index_in_dim(o, v, i, 0), out, y)

    out = jax.lax.fori_loop(0, jnp.minimum(count, m), body, out0)
    return tree.tree_map(lambda o: o[:m].reshape((n,) + o.shape[2:]), out)


@functools.lru_cache(maxsize=64)
def group_program(
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

    from .._discrete import _run, _spectral_radius

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
        # The start of stable_step_size's power iteration, so both commands find the same ρ.
        flat, unravel = jax.flatten_util.ravel_pytree(y0)
        v0 = unravel(jax.random.normal(jax.random.PRNGKey(0), flat.shape, flat.dtype))
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
            # length (see map_chunks).
            def run(xs):
                seed, p, e, g = xs
                flow, y0, omega0 = build(seed, p)
                return per_config(flow, y0, omega0, e, g, ts)

            out.update(map_chunks(run, (seeds, params, eta, gaps), chunk, count))
        if "ode" in parts:
            flows, y0s, _ = jax.vmap(build)(seeds, params)
            out.update(_vector_ode(flows, y0s, ts, count, seeds.shape))
        return out

    def _vector_ode(flows, y0s, ts, count, batch_shape):
        """The batch's ODE as `simulate` runs it: segment by segment between the save times,
        with the solver (`default_solver`: the factored Tsit5 for the reduced UFM) and the
        carried controller of `integrate_segment`, through the same solve. The step size is
        shared: the controller's norm is the largest configuration's RMS error norm, so a
        one-point batch takes `simulate`'s steps."""
        from .._integrate import solve_segment
        from .._solver import SegmentController, default_solver, start_carry

        flows_dyn, flows_static = eqx.partition(flows, eqx.is_array)

        def each(fn, *args, two_chunks=True):
            """fn(flow, *args of one configuration) over the shard, chunk by chunk (as the GD
            loops, so that no number depends on the shard length)."""
            one = loop(lambda d, *a: fn(eqx.combine(d, flows_static), *a))
            return map_chunks(
                lambda xs: one(*xs), (flows_dyn, *args), chunk, count, two_chunks=two_chunks
            )

        def in_loop(fn, *args):
            """`each` inside the solver's loop (stages, norm, snapshots): without the second
            chunk, whose copy of the state at every stage cost 7-10% of the ODE (see
            `map_chunks`); the states agree bitwise either way."""
            return each(fn, *args, two_chunks=False)

        def vf(t, y, args):
            return in_loop(lambda f, yb: f(t, yb, None), y)

        rtol, atol = solver_tolerances(static["rtol"], static["atol"])
        solver = default_solver(flows, map=in_loop)
        norm = _batch_rms_norm(in_loop, "batch")

        def controller(end):
            pid = diffrax.PIDController(rtol=rtol, atol=atol, norm=norm)
            return SegmentController(pid, jnp.asarray(end, ts.dtype))

        # The segments are simulate's, between all of its save times, whichever of them the
        # sweep records (`record = "final"` keeps the last): the same steps, the same numbers.
        grid = jnp.asarray(save_times(float(static["t_end"]), int(static["num_saves"])), ts.dtype)
        gaps = grid[1:] - grid[:-1]
        carry0 = start_carry(vf, solver, controller(gaps[0]), y0s, gaps[0])

        def segment(state, gap):
            y, carry, steps, ok = state
            y, _, result, num_steps, carry = solve_segment(
                vf, y, gap, carry, controller(gap), int(static["max_steps"]), solver=solver
            )
            ok = ok & (result == diffrax.RESULTS.successful)
            snapshot = in_loop(lambda f, yb: f.snapshot(0.0, yb), y)
            return (y, carry, steps + num_steps, ok), snapshot

        (_, _, steps, ok), snaps = jax.lax.scan(
            segment, (y0s, carry0, jnp.zeros((), int_dtype()), jnp.asarray(True)), gaps
        )
        snap0 = in_loop(lambda f, yb: f.snapshot(0.0, yb), y0s)
        snaps = jax.tree_util.tree_map(
            lambda first, rest: jnp.concatenate([first[None], rest])[-ts.shape[0] :], snap0, snaps
        )
        # The solve knows each state to about its tolerances: that bounds the resolved ω_j.
        ode_metrics_of = _snapshot_metrics(rtol_metrics, max(rtol, atol))
        snaps, sane = _sanitise(snaps, snap0, 2)  # leaves [T, B, …]
        by_config = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), snaps)  # [B, T, …]
        metrics = each(
            lambda f, s: jax.vmap(ode_metrics_of, in_axes=(0, None))(
                s, jnp.asarray(f.decomposition_lambda)
            ),
            by_config,
        )
        metrics = _mask_metrics(metrics, sane.T)
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
