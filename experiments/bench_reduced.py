"""Benchmark: moment-reduced flows (docs/theory.md §6 F4) against the same flows on every sample.

(1) the central-path flow F2 and (2) the UFM F1, at C = 10, p = 128, N = 2000 (n = 20 000),
float64: `steps` exact gradient-descent steps from the same initial state. The reduced state is
(M, Σ_W) (plus W, b for the UFM), so a step costs O(C p²) for the UFM and O(p³) for the central
path (the LS classifier solves with Σ_T), independent of N; the full step costs O(n p²) (class
statistics for the LS classifier) or O(n p C) (the UFM). Σ_W moves by a rank-C congruence. Checked: the
reduced final state equals the class statistics of the full final state to `tol` relative.

    python experiments/bench_reduced.py
"""

from __future__ import annotations

import _bench

DEFAULTS = dict(
    classes=10,
    per_class=2000,
    dim=128,
    steps=20,
    repeats=5,
    seed=0,
    lam_w=5e-3,
    lam_h=5e-3,
    tol=1e-9,
    target_central_path=50.0,
    target_ufm=50.0,
)


def _relative(a, b) -> float:
    import jax
    import jax.numpy as jnp

    # The worst leaf: ‖Δ‖_F / ‖reference‖_F for M, Σ_W (and W, b).
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(float(jnp.linalg.norm(x - y) / jnp.linalg.norm(y)) for x, y in pairs)


def _loop(flow, steps: int):
    import jax

    def run(y0, eta):
        return jax.lax.fori_loop(0, steps, lambda _, y: flow.gd_step(y, eta), y0)

    return jax.jit(run)


def _pair(full_flow, full_y0, red_flow, red_y0, eta, cfg, to_stats):
    full, t_full_c = _bench.compiled(_loop(full_flow, cfg["steps"]), full_y0, eta)
    red, t_red_c = _bench.compiled(_loop(red_flow, cfg["steps"]), red_y0, eta)
    y_full, y_red = full(full_y0, eta), red(red_y0, eta)
    err = _relative(y_red, to_stats(y_full))
    t_full = _bench.median_time(lambda: _bench.block(full(full_y0, eta)), repeats=cfg["repeats"])
    t_red = _bench.median_time(lambda: _bench.block(red(red_y0, eta)), repeats=cfg["repeats"])
    return t_full, t_full_c, t_red, t_red_c, err


def main(cfg: dict | None = None) -> dict:
    import jax

    from centralpath._discrete import stable_step_size
    from centralpath._stats import _class_stats
    from centralpath._ufm import init_ufm
    from centralpath.flows import (
        CentralPathFlow,
        ReducedCentralPathFlow,
        ReducedUFMFlow,
        ReducedUFMState,
        UFMFlow,
    )

    cfg = _bench.merged(DEFAULTS, cfg)
    C, N, p = cfg["classes"], cfg["per_class"], cfg["dim"]
    state, labels = init_ufm(jax.random.PRNGKey(cfg["seed"]), C, N, p, mean_scale=2.0)
    stats0 = _class_stats(state.H, labels, C)
    rows, checks = [], {}

    # (1) central-path flow F2: the state is H (full) or its class statistics (reduced).
    red_flow, full_flow = ReducedCentralPathFlow(), CentralPathFlow(labels, C)
    eta = 0.5 * stable_step_size(red_flow, stats0)
    t_full, c_full, t_red, c_red, err = _pair(
        full_flow,
        state.H,
        red_flow,
        stats0,
        eta,
        cfg,
        lambda H: _class_stats(H, labels, C),
    )
    checks["central_path_rel_err"] = err
    note = f"{cfg['steps']} GD steps, C={C} N={N} p={p}, rel diff {err:.1e}"
    rows.append(_bench.row("central-path full (F2)", t_full, compile_s=c_full, note=note))
    rows.append(
        _bench.row(
            "central-path reduced (F4)",
            t_red,
            compile_s=c_red,
            baseline=t_full,
            target=cfg["target_central_path"],
            note="ratio = full / reduced",
        )
    )

    # (2) UFM F1: (W, b, H) against (W, b, class statistics of H).
    kw = dict(lam_W=cfg["lam_w"], lam_H=cfg["lam_h"])
    red_flow, full_flow = ReducedUFMFlow(**kw), UFMFlow(labels, C, **kw)
    red_y0 = ReducedUFMState.from_state(state, labels, C)
    eta = 0.5 * stable_step_size(red_flow, red_y0)
    t_full, c_full, t_red, c_red, err_u = _pair(
        full_flow,
        state,
        red_flow,
        red_y0,
        eta,
        cfg,
        lambda s: ReducedUFMState.from_state(s, labels, C),
    )
    checks["ufm_rel_err"] = err_u
    note = f"{cfg['steps']} GD steps, rel diff {err_u:.1e}"
    rows.append(_bench.row("UFM full (F1)", t_full, compile_s=c_full, note=note))
    rows.append(
        _bench.row(
            "UFM reduced (F4)",
            t_red,
            compile_s=c_red,
            baseline=t_full,
            target=cfg["target_ufm"],
            note="ratio = full / reduced",
        )
    )
    assert err <= cfg["tol"], f"reduced central-path flow differs from the full one by {err:.2e}"
    assert err_u <= cfg["tol"], f"reduced UFM differs from the full one by {err_u:.2e}"
    return {"name": "reduced", "rows": rows, "checks": checks}


if __name__ == "__main__":
    _bench.standalone(__doc__)
    _bench.enable_x64()
    print(_bench.report(main()))
