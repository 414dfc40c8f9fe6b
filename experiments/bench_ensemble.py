"""Benchmark: an ensemble of seeds in one compiled call against a Python loop over seeds.

1000 seeds of the full-feature UFM (C = 4, p = 16, N = 10, float64), `t_end / eta` steps of
gradient descent and every metric at t_end. The batched side is `sweep.batched_simulate` (one
compiled call: initial states drawn under vmap, GD under vmap, metrics under vmap). The loop
calls the SAME compiled program once per seed with a batch of one, so it pays no compilation
and no Python configuration handling either — only the per-call dispatch and the unbatched
small-matrix work. Checked: identical metrics (to `tol`) for the seeds both ran.

    python experiments/bench_ensemble.py
"""

from __future__ import annotations

import _bench

DEFAULTS = dict(
    seeds=1000,
    loop_seeds=1000,
    classes=4,
    per_class=10,
    dim=16,
    flow="ufm",
    representation="full",
    eta=0.5,
    t_end=250.0,
    repeats=3,
    tol=1e-12,
    target=20.0,
)


def main(cfg: dict | None = None) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from centralpath import sweep
    from centralpath.simulate import DEFAULTS as SIM

    cfg = _bench.merged(DEFAULTS, cfg)
    base = {
        **SIM,
        "flow": cfg["flow"],
        "representation": cfg["representation"],
        "classes": cfg["classes"],
        "per_class": cfg["per_class"],
        "dim": cfg["dim"],
        "methods": ["gd"],
        "eta": cfg["eta"],
        "t_end": cfg["t_end"],
    }
    configs = [{**base, "seed": s} for s in range(cfg["seeds"])]
    mesh = sweep.make_mesh(1)

    # Batched: the whole public path, compile included once (timed apart).
    t = __import__("time").perf_counter()
    batched = sweep.batched_simulate(configs, devices=mesh)
    first = __import__("time").perf_counter() - t
    t_batch = _bench.median_time(
        lambda: sweep.batched_simulate(configs, devices=mesh), repeats=cfg["repeats"], warmup=0
    )

    # Loop: the same compiled program, one seed per call.
    static = tuple(
        sorted(
            (k, tuple(v) if isinstance(v, list) else v)
            for k, v in sweep._check_group(configs[:1]).items()
        )
    )
    program = sweep._group_program(static, mesh, ("gd",), 1e-10)
    steps = int(round(cfg["t_end"] / cfg["eta"]))
    fdt = jnp.result_type(float)
    one = dict(
        params={k: jnp.asarray([float(base[k])], fdt) for k in sweep.FLOAT_PARAMS},
        eta=jnp.asarray([cfg["eta"]], fdt),
        gaps=jnp.asarray([[steps]]),
        ts=jnp.asarray([cfg["t_end"]], fdt),
    )
    seeds = [jnp.asarray([s]) for s in range(cfg["loop_seeds"])]

    def loop():
        outs = [program(s, one["params"], one["eta"], one["gaps"], one["ts"]) for s in seeds]
        return jax.block_until_ready(outs)

    outs = loop()
    t_loop = _bench.median_time(loop, repeats=cfg["repeats"], warmup=0)
    scale = cfg["seeds"] / cfg["loop_seeds"]
    err = 0.0
    for s, out in enumerate(outs):
        for k, v in out["gd"].items():
            ref = np.asarray(batched[s][f"gd/{k}"])
            got = np.asarray(v)[0]
            err = max(err, float(np.max(np.abs(got - ref) / (np.abs(ref) + 1e-300))))
    rows = [
        _bench.row(
            f"Python loop over {cfg['loop_seeds']} seeds (same program)",
            t_loop * scale,
            note=f"{steps} GD steps each" + (f"; x{scale:g} extrapolated" if scale != 1 else ""),
        ),
        _bench.row(
            f"{cfg['seeds']} seeds in one compiled call",
            t_batch,
            compile_s=first - t_batch,
            baseline=t_loop * scale,
            target=cfg["target"],
            note=f"max rel diff {err:.1e}",
        ),
    ]
    assert err <= cfg["tol"], f"batched and looped runs differ by {err:.2e}"
    return {"name": "ensemble", "rows": rows, "checks": {"max_rel_diff": err, "steps": steps}}


if __name__ == "__main__":
    _bench.enable_x64()
    print(_bench.report(main()))
