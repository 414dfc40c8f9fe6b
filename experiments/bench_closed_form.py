"""Benchmark: the closed form ω(t) = F⁻¹(F(ω₀) + t) (docs/theory.md §6 F3) against Diffrax.

For each split (configurations, times) of 10⁶ (configuration, time) pairs: `configurations`
initial values ω₀ (log-uniform in [1e-2, 10]) × `times` save times (log-spaced up to t_max, with
t = 0 when times > 1). The closed form is one call of
`eigen_dynamics(ω₀, C, N)(ts)` (vectorised Newton in log ω); the Diffrax side integrates the
scalar ODEs dω_j/dt = ω_j / (N (C + ω_j²)²) as ONE vector ODE (they are separable) with Tsit5,
a PID controller at rtol = 1e-12 and `SaveAt(ts=…)`. Checked: the two agree to `tol` relative.

The ratio depends on the split. The closed form costs ~20 transcendental evaluations per pair
(~7 Newton iterations in log ω, two exp each, plus the start), whatever the horizon. The vector
ODE costs ~6 cheap rational evaluations per configuration per step (~350 shared steps here)
plus one interpolation per pair: with many configurations and few times (a sweep's final
values) the closed form wins by two orders of magnitude; with few configurations and many save
times the ODE amortises its steps over the time points and the gap closes.

    python experiments/bench_closed_form.py
"""

from __future__ import annotations

import _bench

DEFAULTS = dict(
    classes=10,
    per_class=500,
    splits=((1_000_000, 1), (10_000, 100)),
    t_max=1e6,
    seed=0,
    rtol=1e-12,
    atol=1e-14,
    repeats=3,
    tol=1e-9,
    target=20.0,
)


def main(cfg: dict | None = None) -> dict:
    import diffrax
    import jax
    import jax.numpy as jnp
    import numpy as np

    from centralpath import eigen_dynamics, omega_rate

    cfg = _bench.merged(DEFAULTS, cfg)
    C, N = cfg["classes"], cfg["per_class"]

    @jax.jit
    def closed(omega0, ts):
        return eigen_dynamics(omega0, C, N)(ts)  # [T, configs]

    def rate(t, y, args):
        return omega_rate(y, C, N)

    @jax.jit
    def ode(omega0, ts):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(rate),
            diffrax.Tsit5(),
            t0=0.0,
            t1=ts[-1],
            dt0=None,
            y0=omega0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=cfg["rtol"], atol=cfg["atol"]),
            max_steps=1_000_000,
        )
        return sol.ys, sol.stats["num_steps"]

    rows, checks = [], {}
    rng = np.random.default_rng(cfg["seed"])
    for configs, times in cfg["splits"]:
        omega0 = jnp.asarray(10.0 ** rng.uniform(-2, 1, configs))
        grid = np.geomspace(1e-2, cfg["t_max"], max(times - 1, 1))
        ts = jnp.asarray(np.concatenate([[0.0], grid]) if times > 1 else [cfg["t_max"]])
        closed_exe, c_closed = _bench.compiled(closed, omega0, ts)
        ode_exe, c_ode = _bench.compiled(ode, omega0, ts)
        w_closed = closed_exe(omega0, ts)
        w_ode, steps = ode_exe(omega0, ts)
        err = float(jnp.max(jnp.abs(w_ode - w_closed) / w_closed))
        # Both ran once above (the check), so no further warm-up.
        t_closed = _bench.median_time(
            lambda e=closed_exe, w=omega0, s=ts: _bench.block(e(w, s)),
            repeats=cfg["repeats"],
            warmup=0,
        )
        t_ode = _bench.median_time(
            lambda e=ode_exe, w=omega0, s=ts: _bench.block(e(w, s)),
            repeats=cfg["repeats"],
            warmup=0,
        )
        split = f"{configs:g} configs x {times:g} times"
        rows.append(
            _bench.row(
                f"Diffrax vector ODE, {split}",
                t_ode,
                compile_s=c_ode,
                note=f"{int(steps)} shared steps, rtol {cfg['rtol']:g}",
            )
        )
        rows.append(
            _bench.row(
                f"closed form, {split}",
                t_closed,
                compile_s=c_closed,
                baseline=t_ode,
                target=cfg["target"],
                note=f"max rel diff {err:.1e}",
            )
        )
        checks[f"max_rel_diff[{configs}x{times}]"] = err
        checks[f"ode_steps[{configs}x{times}]"] = int(steps)
        assert err <= cfg["tol"], f"closed form and Diffrax differ by {err:.2e} (> {cfg['tol']:g})"
    return {"name": "closed_form", "rows": rows, "checks": checks}


if __name__ == "__main__":
    _bench.standalone(__doc__)
    _bench.enable_x64()
    print(_bench.report(main()))
