"""What `simulate` and `sweep` share, in one copy: the names of series and quantities, the save
times and the gradient-descent step plan, the closed-form series, and the verdict on a
gradient-descent run (a status reported as data, raised on request).

Results are flat dictionaries {"<series>/<quantity>": array} with series `ode`, `gd` and
`closed_form`; every series has `<series>/times`. The same configuration gives the same keys and
the same numbers whichever command ran it.
"""

from __future__ import annotations

import enum

import numpy as np

from ._errors import InputError, NumericalError

SERIES = ("ode", "gd", "closed_form")

#: What the closed form of the renormalised flows determines: ω(t) and the functions of ω alone
#: (docs/theory.md §5). `objective` is L_LS, the objective those flows descend.
CLOSED_FORM_QUANTITIES = (
    "objective",
    "loss",
    "loss_nc1",
    "loss_nc23",
    "nc1",
    "etf_distance",
    "snr",
)

#: A gradient-descent run whose objective grows this many times over its start has diverged: on
#: a stable step the objective never grows.
DIVERGENCE_GROWTH = 10.0

#: With eta = 0, the automatic step is at most t_end / this, so a short horizon still takes enough
#: steps to show the discretisation converging to the flow.
MIN_AUTO_GD_STEPS = 100


class Status(enum.IntEnum):
    """How a series ended (Diffrax style: data in the results, raised on request)."""

    successful = 0
    gd_diverged = 1
    ode_failed = 2


def key(series: str, quantity: str) -> str:
    """The results key of a quantity of a series: "<series>/<quantity>"."""
    return f"{series}/{quantity}"


def series(prefix: str, times, metrics: dict) -> dict[str, np.ndarray]:
    """{"<prefix>/times": times, "<prefix>/<quantity>": value, …}."""
    out = {key(prefix, "times"): np.asarray(times, float)}
    out.update({key(prefix, k): np.asarray(v) for k, v in metrics.items()})
    return out


def save_times(t_end: float, num_saves: int) -> np.ndarray:
    """0 and num_saves − 1 log-spaced times from t_end·1e-4 to t_end (0 and t_end for 2)."""
    if num_saves == 2:  # geomspace with one point gives its start, t_end·1e-4, not t_end
        return np.asarray([0.0, t_end])
    return np.concatenate([[0.0], np.geomspace(t_end * 1e-4, t_end, num_saves - 1)])


def automatic_eta(stable_step, t_end):
    """The GD step for eta = 0: half the stable step 2/ρ at the initial state, but no more than
    t_end / `MIN_AUTO_GD_STEPS`, so that a short horizon still takes enough steps to show the
    discretisation converging to the flow (a step past t_end would take none). Elementwise."""
    return np.minimum(0.5 * np.asarray(stable_step, float), t_end / MIN_AUTO_GD_STEPS)


def solver_tolerances(rtol: float, atol: float) -> tuple[float, float]:
    """(rtol, atol) for Diffrax at the working precision: at least 100 ulp each.

    A tolerance below what the float type resolves can never be met: the step-size controller
    shrinks the step until `max_steps` runs out (float32 with rtol = 1e-10 took 92,841 steps for
    t = 50 on a 3-class problem, and failed on the UFM). In float64 the floor (2.2e-14) is below
    every sensible setting and changes nothing.
    """
    import jax.numpy as jnp

    floor = 100.0 * float(jnp.finfo(jnp.result_type(float)).eps)
    return max(float(rtol), floor), max(float(atol), floor)


def check_stable(eta, stable, label: str = "") -> None:
    """Warn (`CentralpathWarning`) about steps at or beyond 2/ρ at the initial state, where
    gradient descent need not follow the flow: some flows diverge (then the run says so), but
    the renormalised and central-path steps can stay bounded while going somewhere else
    entirely (ω = [3290, 131] against the closed form's [53.2, 53.1], silently). Not refused:
    the UFM's Hessian shrinks fast from a random start, and GD a little beyond its initial
    bound still tracks the flow there (the sweep example's η = 0.5 against 2/ρ = 0.33)."""
    import warnings

    from ._errors import CentralpathWarning

    eta, stable = np.atleast_1d(np.asarray(eta, float)), np.atleast_1d(np.asarray(stable, float))
    bad = np.flatnonzero(~(eta < stable))
    if bad.size:
        i = int(bad[0])
        many = f" ({bad.size} configurations; the first shown)" if eta.size > 1 else ""
        warnings.warn(
            f"eta = {eta[i]:.4g}{label} is beyond the largest stable step 2/rho = "
            f"{stable[i]:.4g} at the initial state{many}: gradient descent may not follow the "
            f"flow — compare with the ODE, or use --eta below {stable[i]:.4g} (0: half of it)",
            CentralpathWarning,
            stacklevel=3,
        )


def step_plan(ts, eta, max_gd_steps: int, t_end: float) -> np.ndarray:
    """Gradient-descent step counts at the save times: round(t/η), validated, as int64.

    `eta` is a scalar or one step per configuration ([B]); the result is [T] or [B, T]. The
    saved GD times are steps·η (so a save time below η/2 repeats the start).
    """
    eta = np.asarray(eta, float)
    steps = np.round(np.asarray(ts, float) / eta[..., None])  # floats: int64 would wrap
    last = steps[..., -1]
    worst = np.unravel_index(int(np.argmax(last)), np.shape(last)) if last.ndim else ()
    if not last[worst] <= max_gd_steps:
        raise InputError(
            f"gradient descent would take {last[worst]:.3g} steps of eta = {eta[worst]:.3g} to "
            f"reach t-end = {t_end}; raise --eta, lower --t-end, or raise max_gd_steps"
        )
    if np.any(last < 1):
        low = np.unravel_index(int(np.argmin(last)), np.shape(last)) if last.ndim else ()
        raise InputError(f"eta = {eta[low]:.3g} exceeds t-end; lower --eta")
    return steps.astype(np.int64)


def gd_verdict(objective, objective0, first_bad_step, gaps):
    """(ok [T], first bad save index or −1): which saves of a GD run still follow the flow.

    A save is kept while every step before it was finite (`first_bad_step` < 0, or the save
    comes before that step) and the objective stayed below `DIVERGENCE_GROWTH` times its start;
    after the first failure every save is dropped. Works under `jit` (jnp arrays) and on NumPy.
    """
    import jax.numpy as jnp

    ok = (first_bad_step < 0) | (jnp.cumsum(gaps) < first_bad_step)
    ok = ok & (objective <= DIVERGENCE_GROWTH * objective0)
    ok = jnp.cumprod(ok.astype(jnp.int32)).astype(bool)
    first = jnp.where(jnp.all(ok), -1, jnp.argmin(ok))
    return ok, first


def divergence_error(t, eta, growth, stable) -> NumericalError:
    """The one sentence a diverged run raises when asked to."""
    return NumericalError(
        f"gradient descent diverged by t = {t:.4g} with eta = {eta:.4g} (the objective grew "
        f"{growth:.3g}-fold); the largest stable step at the initial state is about "
        f"{stable:.4g} — use a smaller --eta"
    )


def closed_form_series(omega0, ts, num_classes: int, per_class: int, flow: str) -> dict:
    """ω(t) of the renormalised flows (`flow` = "renormalised" or "whitened") and what follows
    from ω alone (docs/theory.md §5, §6 F3/F3′): L_LS (= the objective), its two terms, NC1 and
    the ETF distance, which for M̄ = U diag(ω) Vᵀ with V spanning 1^⊥ is ‖ω²/‖ω²‖ − 1/√(C−1)‖.

    Vectorised over leading axes of `omega0` ([…, C−1]); values are [..., T, …].
    """
    import jax.numpy as jnp

    from ._eigen import central_path_loss_terms, eigen_dynamics, nc1_from_snr

    C = num_classes
    omega = eigen_dynamics(omega0, C, per_class, flow=flow)(jnp.asarray(ts))
    loss, loss_nc1, loss_nc23 = central_path_loss_terms(omega, C)
    w2 = omega**2
    shape = w2 / jnp.linalg.norm(w2, axis=-1, keepdims=True)
    etf = jnp.linalg.norm(shape - 1.0 / jnp.sqrt(C - 1.0), axis=-1)
    return dict(
        objective=loss,
        loss=loss,
        loss_nc1=loss_nc1,
        loss_nc23=loss_nc23,
        nc1=nc1_from_snr(omega),
        etf_distance=etf,
        snr=omega,
    )
