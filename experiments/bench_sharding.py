"""Benchmark: a sweep sharded over 4 host devices against the same sweep on 1 device.

XLA_FLAGS=--xla_force_host_platform_device_count=4 must be set before jax starts, so the
measurement runs in a fresh subprocess (this script with `--child`); inside it both runs use
`sweep.batched_simulate` on the same configurations, with a `Mesh` of 1 and of 4 devices.
Workloads: gradient descent of the full-feature UFM (`seeds` seeds) and one shared vector ODE of
the reduced central-path flow (`ode_seeds` seeds; its step-size control takes a `pmax` over
the devices, so the steps are the same as unsharded). Checked: every number bitwise equal on
D devices and (an untimed run) on 2, and equal to `tol` on 1 device (bitwise in most runs; an
ulp can remain where XLA compiles the unpartitioned 1-device program differently — see the Devices
notes of `centralpath.sweep`).

On a 2-core machine 4 host devices are 4 threads on 2 cores: the gain comes from running
the shards' (small, otherwise single-threaded) loops concurrently.

    python experiments/bench_sharding.py
"""

from __future__ import annotations

import json
import os
import sys

import _bench

DEFAULTS = dict(
    devices=4,
    seeds=256,
    ode_seeds=64,
    classes=4,
    per_class=10,
    dim=16,
    eta=0.1,
    t_end=50.0,
    ode_t_end=20.0,
    repeats=5,
    tol=1e-12,
    target=1.0,
    timeout_s=900,
)


def _child(cfg: dict) -> dict:

    from centralpath import sweep
    from centralpath.simulate import DEFAULTS as SIM

    shape = dict(classes=cfg["classes"], per_class=cfg["per_class"], dim=cfg["dim"])
    workloads = {
        "GD, full UFM": [
            {
                **SIM,
                **shape,
                "flow": "ufm",
                "representation": "full",
                "methods": ["gd"],
                "eta": cfg["eta"],
                "t_end": cfg["t_end"],
                "seed": s,
            }
            for s in range(cfg["seeds"])
        ],
        "vector ODE, reduced central path": [
            {
                **SIM,
                **shape,
                "flow": "central-path",
                "methods": ["ode"],
                "t_end": cfg["ode_t_end"],
                "num_saves": 4,
                "seed": s,
            }
            for s in range(cfg["ode_seeds"])
        ],
    }
    out = {}
    for name, configs in workloads.items():
        res, times, compile_s = {}, {}, {}
        for d in (1, cfg["devices"]):
            mesh = sweep.make_mesh(d)
            t0 = _bench.time.perf_counter()
            res[d] = sweep.batched_simulate(configs, devices=mesh)
            first = _bench.time.perf_counter() - t0
            times[d] = _bench.median_time(
                lambda m=mesh, c=configs: sweep.batched_simulate(c, devices=m),
                repeats=cfg["repeats"],
                warmup=0,
            )
            compile_s[d] = first - times[d]
        diff = _bench.max_rel_diff(res[1], res[cfg["devices"]])
        # Every device count above one compiles the same partitioned program: untimed, a run
        # on 2 devices must match the D-device one bit for bit.
        diff2 = None
        if cfg["devices"] > 2:
            res2 = sweep.batched_simulate(configs, devices=sweep.make_mesh(2))
            diff2 = _bench.max_rel_diff(res2, res[cfg["devices"]])
        out[name] = dict(
            t1=times[1],
            tD=times[cfg["devices"]],
            c1=compile_s[1],
            cD=compile_s[cfg["devices"]],
            diff=diff,
            diff2=diff2,
            configs=len(configs),
        )
    return out


def main(cfg: dict | None = None) -> dict:
    cfg = _bench.merged(DEFAULTS, cfg)
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"  # host devices, also on a machine with an accelerator
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={cfg['devices']}"
    ).strip()
    out = _bench.run_child(
        __file__, [json.dumps(cfg)], what="sharding", env=env, timeout=cfg["timeout_s"]
    )
    rows, checks = [], {}
    D = cfg["devices"]
    for name, r in out.items():
        rows.append(
            _bench.row(
                f"{name}, 1 device",
                r["t1"],
                compile_s=r["c1"],
                note=f"{r['configs']} configurations",
            )
        )
        rows.append(
            _bench.row(
                f"{name}, {D} devices",
                r["tD"],
                compile_s=r["cD"],
                baseline=r["t1"],
                target=cfg["target"],
                note=f"max rel diff {r['diff']:.1e} vs 1 device"
                + ("" if r["diff2"] is None else f", {r['diff2']:.1e} vs 2"),
            )
        )
        checks[f"{name} max_rel_diff"] = r["diff"]
        assert r["diff"] <= cfg["tol"], f"{name}: 1 and {D} devices differ by {r['diff']:.2e}"
        if r["diff2"] is not None:
            checks[f"{name} max_rel_diff_vs_2_devices"] = r["diff2"]
            assert r["diff2"] == 0.0, f"{name}: 2 and {D} devices differ by {r['diff2']:.2e}"
    return {"name": "sharding", "rows": rows, "checks": checks}


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child_cfg = json.loads(sys.argv[2])
        import jax

        jax.config.update("jax_enable_x64", True)
        print(json.dumps(_child(child_cfg)))
    else:
        _bench.standalone(__doc__)
        print(_bench.report(main()))
