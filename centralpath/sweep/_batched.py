"""`batched_simulate`: many configurations of one group in one compiled call, returned in the
format of `simulate`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._errors import InputError, NumericalError, require
from .._series import (
    Status,
    automatic_eta,
    check_stable,
    save_times,
    step_plan,
)
from ..simulate import DEFAULTS, FLOAT_PARAMS, as_config
from ._devices import as_mesh, fetch, put_batch
from ._program import chunk_size, float_dtype, group_program, int_dtype, metrics_rtol
from ._spec import RECORDS, RENORMALISED, group_key


def check_group(configs: Sequence[dict]) -> dict:
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
    static = check_group(configs)
    for c in configs:
        as_config(c)  # validated on construction
    require(static["nc1_target"] == 0, "nc1_target (an early stop) is not supported in sweeps")
    require(record in RECORDS, f"record must be one of {', '.join(RECORDS)}, got {record!r}")
    mesh = as_mesh(devices)
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
    chunk = chunk_size(static, B)
    Bp = -(-B // (D * chunk)) * (D * chunk)
    fdt, idt = float_dtype(), int_dtype()

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
    put = functools.partial(put_batch, mesh)
    ts_dev = jnp.asarray(ts, dtype=fdt)
    count = jnp.asarray(Bp // (D * chunk), jnp.int32)  # chunks per device (see map_chunks)
    params_dev = {k: put(v) for k, v in params.items()}
    seeds_dev = put(seeds)
    if "gd" in parts:
        # The stable step of every configuration: automatic steps are half of it, and a given
        # step beyond it is refused as in simulate (the flow would not be followed).
        rho_prog = group_program(static_items, mesh, ("rho",), 1e-10, chunk)
        out = rho_prog(
            seeds_dev, params_dev, put(padded(eta, fdt)), put(padded(gaps, idt)), ts_dev, count
        )
        rho = fetch(out["rho"])[:B]
        stable = np.where(rho > 0, 2.0 / np.where(rho > 0, rho, 1.0), np.inf)
        eta = np.where(eta == 0, automatic_eta(stable, float(static["t_end"])), eta)
        check_stable(eta, stable)
        steps = step_plan(ts, eta, static["max_gd_steps"], static["t_end"])
        gaps = np.diff(np.concatenate([np.zeros((B, 1), np.int64), steps], axis=1), axis=1)
    program = group_program(static_items, mesh, tuple(parts), metrics_rtol(fdt), chunk)
    out = program(
        seeds_dev, params_dev, put(padded(eta, fdt)), put(padded(gaps, idt)), ts_dev, count
    )
    out = jax.tree_util.tree_map(lambda x: fetch(x)[:B], out)
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
