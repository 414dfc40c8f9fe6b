"""Simulate a flow of THEORY.md §6 from a configuration: ODE, gradient descent, closed form.

`simulate(config)` is the one entry point behind `centralpath simulate`, `demo` and `sweep`; it
returns flat results {"<series>/<quantity>": array}, with series `ode`, `gd` and, for the
renormalised flows, `closed_form`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import InputError, require

FLOW_NAMES = ("renormalised", "whitened", "central-path", "ufm")
REPRESENTATIONS = ("reduced", "full")

DEFAULTS: dict[str, Any] = {
    "flow": "renormalised",
    "classes": 4,
    "per_class": 10,
    "dim": 8,
    "lam": 0.0,
    "lam_w": 5e-3,
    "lam_h": 5e-3,
    "lam_b": 0.0,
    "bias": True,
    "t_end": 1e4,
    "num_saves": 40,
    "seed": 0,
    "methods": ["ode", "gd"],
    "eta": 0.0,
    "representation": "reduced",
    "mean_scale": 2.0,
    "noise_scale": 1.0,
    "rtol": 1e-10,
    "atol": 1e-12,
    "max_steps": 200_000,
    "max_gd_steps": 1_000_000,
    "nc1_target": 0.0,
}


def validate(config: dict[str, Any]) -> None:
    c = config
    require(c["flow"] in FLOW_NAMES, f"unknown flow {c['flow']!r}; choose one of {', '.join(FLOW_NAMES)}")
    require(
        c["representation"] in REPRESENTATIONS,
        f"unknown representation {c['representation']!r}; choose reduced or full",
    )
    for key in ("classes", "per_class", "dim", "num_saves", "max_steps", "max_gd_steps"):
        require(isinstance(c[key], int | np.integer) and not isinstance(c[key], bool), f"{key} must be an integer, got {c[key]!r}")
    require(c["classes"] >= 2, f"classes must be >= 2, got {c['classes']}")
    require(c["per_class"] >= 2, f"per-class must be >= 2 (Sigma_W needs two samples per class), got {c['per_class']}")
    require(
        c["dim"] >= c["classes"] - 1,
        f"dim p = {c['dim']} is below C-1 = {c['classes'] - 1}; the class means need C-1 dimensions — raise --dim",
    )
    require(c["classes"] * c["per_class"] <= 50_000_000, "classes × per-class is too large (> 5e7 samples)")
    require(c["dim"] <= 100_000, f"dim = {c['dim']} is too large; use at most 100000")
    for key in ("lam", "lam_w", "lam_h", "lam_b"):
        require(np.isfinite(c[key]) and c[key] >= 0, f"{key.replace('_', '-')} must be a finite number >= 0, got {c[key]}")
    require(np.isfinite(c["t_end"]) and c["t_end"] > 0, f"t-end must be a finite number > 0, got {c['t_end']}")
    require(c["num_saves"] >= 2, f"num-saves must be >= 2, got {c['num_saves']}")
    require(np.isfinite(c["eta"]) and c["eta"] >= 0, f"eta must be > 0 (or 0 for automatic), got {c['eta']}")
    require(c["rtol"] > 0 and c["atol"] > 0, "rtol and atol must be > 0")
    require(c["nc1_target"] >= 0, f"nc1-target must be >= 0 (0 = off), got {c['nc1_target']}")
    methods = list(c["methods"])
    require(
        methods and all(m in ("ode", "gd") for m in methods),
        f"methods must be a non-empty subset of ode, gd; got {methods}",
    )
    if c["flow"] in ("renormalised", "whitened"):
        require(c["lam"] == 0, "the renormalised flows are defined for lam = 0 only; drop --lam or use --flow central-path")
        require(c["bias"], "the renormalised flows need a classifier with bias; drop --no-bias")
    require(c["mean_scale"] > 0 and c["noise_scale"] > 0, "mean-scale and noise-scale must be > 0")


def build(config: dict[str, Any], key=None):
    """(flow, y0, omega0 or None) for a configuration; the initial state is drawn from the seed."""
    from . import flows as F
    from ._metrics import renormalised_features, snr_singular_values
    from ._stats import _class_stats
    from ._ufm import init_ufm

    c = config
    C, N, p = int(c["classes"]), int(c["per_class"]), int(c["dim"])
    key = jax.random.PRNGKey(int(c["seed"])) if key is None else key
    state, labels = init_ufm(key, C, N, p, mean_scale=c["mean_scale"], noise_scale=c["noise_scale"])
    reduced = c["representation"] == "reduced"
    omega0 = None
    if c["flow"] == "ufm":
        kw = dict(lam_W=c["lam_w"], lam_H=c["lam_h"], lam_b=c["lam_b"], bias=bool(c["bias"]))
        if reduced:
            return F.ReducedUFMFlow(**kw), F.ReducedUFMState.from_state(state, labels, C), None
        return F.UFMFlow(labels, C, **kw), state, None
    H = state.H
    if c["flow"] == "central-path":
        kw = dict(lam=c["lam"], lam_H=0.0, bias=bool(c["bias"]))
        if reduced:
            return F.ReducedCentralPathFlow(**kw), _class_stats(H, labels, C), None
        return F.CentralPathFlow(labels, C, **kw), H, None
    project = c["flow"] == "renormalised"
    X = renormalised_features(H, _class_stats(H, labels, C))
    stats = _class_stats(X, labels, C)
    # Σ_W(X) = I up to rounding; pin it so the reduced state is exactly on the manifold.
    stats = type(stats)(stats.counts, stats.class_means, jnp.eye(p, dtype=X.dtype))
    omega0 = snr_singular_values(stats)
    if reduced:
        return F.ReducedRenormalisedFlow(project=project), stats, omega0
    return F.RenormalisedFlow(labels, C, project=project), X, omega0


def save_times(t_end: float, num_saves: int) -> np.ndarray:
    """0 and num_saves − 1 log-spaced times from t_end·1e-4 to t_end."""
    return np.concatenate([[0.0], np.geomspace(t_end * 1e-4, t_end, num_saves - 1)])


def _series(prefix: str, times, metrics: dict) -> dict[str, np.ndarray]:
    out = {f"{prefix}/times": np.asarray(times, float)}
    out.update({f"{prefix}/{k}": np.asarray(v) for k, v in metrics.items()})
    return out


def simulate(
    config: dict[str, Any], *, progress: bool = False, log: Callable[[str], None] | None = None
) -> dict[str, np.ndarray]:
    """Run a configuration (keys of `DEFAULTS`); return the flat results dictionary."""
    from ._discrete import gradient_descent, stable_step_size
    from ._eigen import central_path_loss_terms, eigen_dynamics, nc1_from_snr
    from ._integrate import integrate

    config = {**DEFAULTS, **config}
    validate(config)
    log = log or (lambda s: None)
    flow, y0, omega0 = build(config)
    ts = save_times(float(config["t_end"]), int(config["num_saves"]))
    results: dict[str, np.ndarray] = {}
    if "ode" in config["methods"]:
        tr = integrate(
            flow, y0, float(config["t_end"]), ts=ts, rtol=config["rtol"], atol=config["atol"],
            max_steps=int(config["max_steps"]), progress=progress,
            nc1_target=config["nc1_target"] or None,
        )
        log(f"ode: {tr.num_steps} adaptive steps" + (" (stopped at the NC1 target)" if tr.stopped_early else ""))
        results.update(_series("ode", tr.times, tr.metrics()))
    if "gd" in config["methods"]:
        eta = float(config["eta"]) or 0.5 * stable_step_size(flow, y0)
        steps = np.unique(np.round(ts / eta).astype(np.int64))
        require(
            steps[-1] <= config["max_gd_steps"],
            f"gradient descent would take {steps[-1]} steps of eta = {eta:.3g} to reach t-end = "
            f"{config['t_end']}; raise --eta, lower --t-end, or raise max_gd_steps",
        )
        steps = np.maximum(steps, 0)
        if steps[-1] == 0:
            raise InputError(f"eta = {eta:.3g} exceeds t-end; lower --eta")
        tr = gradient_descent(flow, y0, eta, int(steps[-1]), save_steps=steps)
        log(f"gd: {int(steps[-1])} steps of eta = {eta:.4g}")
        results.update(_series("gd", tr.times, tr.metrics()))
        results["gd/eta"] = np.asarray(eta)
    if omega0 is not None:
        flow_kind = "renormalised" if config["flow"] == "renormalised" else "whitened"
        omega = np.asarray(eigen_dynamics(omega0, int(config["classes"]), int(config["per_class"]), flow=flow_kind)(ts))
        loss, loss_nc1, loss_nc23 = (np.asarray(x) for x in central_path_loss_terms(omega, int(config["classes"])))
        results.update(
            _series(
                "closed_form", ts,
                {"snr": omega, "nc1": np.asarray(nc1_from_snr(omega)), "loss": loss,
                 "loss_nc1": loss_nc1, "loss_nc23": loss_nc23},
            )
        )
    return results
