"""Simulate a flow of docs/theory.md §6 from a configuration: ODE, gradient descent, closed form.

`simulate(config)` is the one entry point behind `centralpath simulate`, `demo` and `sweep`; it
returns flat results {"<series>/<quantity>": array}, with series `ode`, `gd` and, for the
renormalised flows, `closed_form`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._errors import NumericalError, require, require_int, require_real, require_seed
from ._float64 import at_configured_precision
from ._run.config import Config, batched_fields, option
from ._series import (
    DIVERGENCE_GROWTH,
    MIN_AUTO_GD_STEPS as MIN_AUTO_GD_STEPS,
    Status,
    automatic_eta as automatic_eta,
    check_stable,
    closed_form_series,
    divergence_error,
    gd_verdict,
    save_times as save_times,
    series,
    solver_tolerances as solver_tolerances,
    step_plan,
)

FLOW_NAMES = ("renormalised", "whitened", "central-path", "ufm")
REPRESENTATIONS = ("reduced", "full")
PRECISIONS = ("float64", "float32")
INITIAL_DRAWS = ("auto", "features", "statistics")
#: `initial_draw = "auto"` draws every sample (then reduces them) up to this many numbers
#: C·N·p, and the class statistics directly above it: 2**27 float64 numbers are 1 GiB, and a
#: count, not the machine's memory, decides, so that a configuration draws the same state on
#: every machine. Every run below it keeps the numbers it had before the statistics draw existed.
FEATURE_DRAW_LIMIT = 2**27


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulationConfig(Config):
    """Everything `simulate` needs (and a sweep file's top level): one flow of the UFM from a
    random initial state, its ODE and/or gradient descent, and what to save. The keys are the
    TOML keys of `--config` files and of a run's `config.toml`; each is also a flag."""

    command: ClassVar[str] = "simulate"

    flow: str = option(
        "renormalised",
        "the flow: F3 the paper's (renormalised), F3' (whitened), F2 (central-path), F1 (ufm)",
        choices=FLOW_NAMES,
    )
    classes: int = option(4, "C, number of classes")
    per_class: int = option(10, "N, samples per class")
    dim: int = option(8, "p, feature dimension")
    lam: float = option(
        0.0, "ridge lambda of the least-squares classifier (central-path)", batch="parameter"
    )
    lam_w: float = option(5e-3, "UFM weight decay on W", batch="parameter")
    lam_h: float = option(5e-3, "UFM weight decay on H", batch="parameter")
    lam_b: float = option(0.0, "UFM weight decay on b", batch="parameter")
    bias: bool = option(True, "classifier with a bias (--no-bias: without)")
    t_end: float = option(1e4, "final time; t = k·eta after k GD steps")
    num_saves: int = option(40, "save times: 0 and log-spaced up to t-end")
    seed: int = option(0, "PRNG seed of the initial state, 0..2**32-1", batch="key")
    methods: list = option(["ode", "gd"], "comma-separated subset of ode,gd")
    eta: float = option(
        0.0, "GD step size; 0: half the stable step, at most t-end/100", batch="step"
    )
    representation: str = option(
        "reduced",
        "reduced (class statistics: exact, cost independent of N) or full (every sample; NC4)",
        choices=REPRESENTATIONS,
    )
    initial_draw: str = option(
        "auto",
        "how a reduced run draws its initial class statistics: features (every sample, then "
        "their statistics), statistics (class means and a Wishart Σ_W drawn directly: the same "
        "law, other numbers, O(p³) at any N), auto (features up to C·N·p = 2**27 numbers, "
        "statistics above; the reduced UFM: statistics)",
        choices=INITIAL_DRAWS,
    )
    mean_scale: float = option(2.0, "initial class means ~ N(0, mean_scale²/p)", batch="parameter")
    noise_scale: float = option(
        1.0, "initial within-class noise ~ N(0, noise_scale²/p)", batch="parameter"
    )
    rtol: float = option(1e-10, "ODE relative tolerance")
    atol: float = option(1e-12, "ODE absolute tolerance")
    max_steps: int = option(200_000, "ODE step limit per segment between save times")
    max_gd_steps: int = option(1_000_000, "gradient-descent step limit")
    nc1_target: float = option(0.0, "stop the ODE when NC1 falls below this (0: never)")
    precision: str = option(
        "float64", "float64, or float32 for speed on accelerators", choices=PRECISIONS
    )

    validator: ClassVar = staticmethod(lambda c: validate(c))


#: The defaults as a plain dict, for callers that merge dicts ({**DEFAULTS, "flow": "ufm"}).
#: `precision` is the process's (the command line sets JAX to it), not part of a run's maths.
DEFAULTS: dict[str, Any] = {
    k: v for k, v in SimulationConfig.defaults().items() if k != "precision"
}

#: The keys a sweep batches (declared with a `batch` role): configurations that differ in
#: these alone share their shapes and run as one compiled call.
BATCHABLE = batched_fields(SimulationConfig)
#: The batched real parameters of the initial state and the flow: `build` takes them as arrays
#: (`params`), which a sweep traces.
FLOAT_PARAMS = batched_fields(SimulationConfig, "parameter")


def as_config(config: SimulationConfig | Mapping[str, Any]) -> SimulationConfig:
    """The typed configuration of a `SimulationConfig` or of a dict of its keys (the defaults
    for those not given), validated on construction; an unknown key is refused, never ignored."""
    if isinstance(config, SimulationConfig):
        return config
    require(
        isinstance(config, Mapping),
        f"a configuration is a SimulationConfig or a dict of its keys, got {type(config).__name__}",
    )
    unknown = sorted(set(config) - set(SimulationConfig.defaults()))
    require(
        not unknown,
        f"unknown configuration key {unknown[0] if unknown else ''!r}; known keys: "
        f"{', '.join(SimulationConfig.defaults())}",
    )
    return SimulationConfig(**config)


MAX_SAVES = 10_000  # each save ends a checkpointed segment: more is a log, not a figure

#: Layout of `state/progress.npz`. 2: the ODE's carry is `SolverCarry` stored as leaves with its
#: described structure (1 stored Diffrax's PID state tuple by position: refused).
CHECKPOINT_FORMAT = 2


#: The most steps a segment may take (ODE) or a run (GD): Diffrax and the GD loop count steps
#: in a machine integer (1e30 overflowed inside the compiled solver), and 1e9 steps of the
#: smallest problem take hours.
MAX_STEPS = 10**9


def _check_save_grid(c: SimulationConfig) -> None:
    """The save grid (`_series.save_times`: 0, then t_end·1e-4 … t_end) must be distinct
    normal numbers of the working precision: t-end = 5e-324 made its first time 0."""
    from ._series import save_times

    dtype = np.float32 if c.precision == "float32" else np.float64
    info = np.finfo(dtype)
    name = np.dtype(dtype).name
    first = 1e-4 if c.num_saves > 2 else 1.0
    lo = float(info.tiny) / first
    require(
        c.t_end >= lo and c.t_end <= float(info.max),
        f"t-end = {c.t_end:g} puts the save times (t-end·{first:g} to t-end) outside "
        f"{name}'s normal range; use t-end in [{lo:.3g}, {float(info.max):.3g}]",
    )
    times = save_times(float(c.t_end), int(c.num_saves)).astype(dtype)
    require(
        bool(np.all(np.diff(times) > 0)),
        f"t-end = {c.t_end:g} with {c.num_saves} saves gives save times that coincide in "
        f"{name}; use fewer --num-saves or a larger t-end",
    )


def validate(config: SimulationConfig) -> None:
    """One-line `InputError` for a bad configuration (from flags, a TOML file or a library call),
    then the memory and work it would need checked against the limits (`check_resources`).
    `SimulationConfig` runs it on construction: an invalid configuration cannot exist."""
    c = config
    require(
        c.precision in PRECISIONS,
        f"precision must be float64 or float32, got {c.precision!r}",
    )
    require(
        isinstance(c.flow, str) and c.flow in FLOW_NAMES,
        f"unknown flow {c.flow!r}; choose one of {', '.join(FLOW_NAMES)}",
    )
    require(
        isinstance(c.representation, str) and c.representation in REPRESENTATIONS,
        f"unknown representation {c.representation!r}; choose reduced or full",
    )
    for key in ("classes", "per_class", "dim", "num_saves", "max_steps", "max_gd_steps"):
        require(
            isinstance(getattr(c, key), int | np.integer) and not isinstance(getattr(c, key), bool),
            f"{key} must be an integer, got {getattr(c, key)!r}",
        )
    require(c.classes >= 2, f"classes must be >= 2, got {c.classes}")
    require(
        c.per_class >= 2,
        f"per-class must be >= 2 (Sigma_W needs two samples per class), got {c.per_class}",
    )
    require(
        c.dim >= c.classes - 1,
        f"dim p = {c.dim} is below C-1 = {c.classes - 1}; the class means need C-1 dimensions — raise --dim",
    )
    require(
        c.classes * c.per_class <= 50_000_000,
        "classes × per-class is too large (> 5e7 samples)",
    )
    require(c.dim <= 100_000, f"dim = {c.dim} is too large; use at most 100000")
    require_seed(c.seed)
    for key in ("lam", "lam_w", "lam_h", "lam_b"):
        require_real(key.replace("_", "-"), getattr(c, key), 0)
    require_real("t-end", c.t_end, 0, lo_open=True)
    require_int(
        "num-saves",
        c.num_saves,
        2,
        MAX_SAVES,
        fix="each save is a checkpointed segment of the run",
    )
    _check_save_grid(c)
    require_real("eta", c.eta, 0, fix="give a step > 0, or 0 for automatic (half the stable step)")
    # Tolerances are relative and absolute errors per step: 1 or more accepts any answer.
    require_real("rtol", c.rtol, 0, 1, lo_open=True, hi_open=True)
    require_real("atol", c.atol, 0, 1, lo_open=True, hi_open=True)
    require_int(
        "max-steps",
        c.max_steps,
        1,
        MAX_STEPS,
        fix="the ODE needs at least one step per segment, and a segment of more steps would run "
        "for days (the solver counts them in a machine integer)",
    )
    require_int("max-gd-steps", c.max_gd_steps, 1, MAX_STEPS)
    require_real("nc1-target", c.nc1_target, 0, fix="0 turns the early stop off")
    require(isinstance(c.bias, bool), f"bias must be true or false, got {c.bias!r}")
    methods = c.methods
    require(
        isinstance(methods, list | tuple)
        and len(methods) > 0
        and all(isinstance(m, str) and m in ("ode", "gd") for m in methods),
        f"methods must be a non-empty subset of ode, gd; got {methods!r}",
    )
    if c.flow in ("renormalised", "whitened"):
        require(
            c.lam == 0,
            "the renormalised flows are defined for lam = 0 only; drop --lam or use --flow central-path",
        )
        require(c.bias, "the renormalised flows need a classifier with bias; drop --no-bias")
    require_real("mean-scale", c.mean_scale, 0, lo_open=True)
    require_real("noise-scale", c.noise_scale, 0, lo_open=True)
    require(
        isinstance(c.initial_draw, str) and c.initial_draw in INITIAL_DRAWS,
        f"unknown initial-draw {c.initial_draw!r}; choose one of {', '.join(INITIAL_DRAWS)}",
    )
    require(
        not (c.initial_draw == "statistics" and c.representation == "full"),
        "initial-draw = statistics needs --representation reduced: the full representation "
        "keeps every sample; drop --initial-draw or use the reduced representation",
    )
    check_resources(c)


def initial_draw(config: SimulationConfig) -> str:
    """How `build` draws the initial state of a configuration: "features" (every sample, then,
    for a reduced run, their class statistics) or "statistics" (`_ufm.draw_class_stats`: the
    class means and the within-class scatter drawn directly from their law). `auto`: the full
    representation draws features; the reduced UFM statistics (as it always has); the reduced
    central-path and renormalised flows features up to `FEATURE_DRAW_LIMIT` numbers C·N·p and
    statistics above, so that every run that fitted before keeps its numbers."""
    c = config
    if c.representation == "full":
        return "features"
    if c.initial_draw != "auto":
        return c.initial_draw
    if c.flow == "ufm":
        return "statistics"
    size = int(c.classes) * int(c.per_class) * int(c.dim)
    return "features" if size <= FEATURE_DRAW_LIMIT else "statistics"


# Working set of the solvers, in copies of the state: the Runge-Kutta stages, the error estimate,
# y0/y1 and the vector field's temporaries; and p×p matrices alive in the metrics (measured ~10
# for `analyze`, which does the same factorisations).
_SOLVER_STATE_COPIES = 20
_PP_MATRICES = 16
_FLOP_PER_P3 = 20  # one snapshot's metrics: several p×p eigendecompositions
_FLOP_PER_DRAWN = 100  # one normal number: threefry bits and the inverse-CDF transform


def resource_estimate(config: SimulationConfig) -> tuple[float, float]:
    """(bytes, flop) a validated configuration needs, at float64 (float32 needs less).

    Counted: the initial draw (all n×p features, or the p×p factor of the statistics draw and
    its product), the solver's copies of the state, one
    snapshot (class statistics with Σ_W p×p, W, b) per save and method, kept three times (the
    list, the stacked series, the checkpoint), and the metrics' p×p matrices; work is the O(p³)
    metrics of every snapshot plus the known gradient-descent steps.
    """
    c = config
    C, N, p = int(c.classes), int(c.per_class), int(c.dim)
    n, S, M = C * N, int(c.num_saves), len(c.methods)
    ufm = c.flow == "ufm"
    classifier = C * p + C if ufm else 0
    state = (p * p + p * C + C if c.representation == "reduced" else n * p) + classifier
    snapshot = p * p + 2 * p * C + 2 * C + 2
    features_drawn = initial_draw(c) == "features"
    words = (
        (3 * n * p if features_drawn else 3 * p * p)
        + 4 * p * p
        + _SOLVER_STATE_COPIES * state
        + _PP_MATRICES * p * p
        + 3 * S * M * snapshot
    )
    flop = _FLOP_PER_P3 * p**3 * (1 + S * M)
    if features_drawn:
        # The initial draw of every sample (a reduced run that draws features keeps only their
        # statistics): a normal number each, and the class statistics' n·p² products.
        flop += _FLOP_PER_DRAWN * n * p + 2 * n * p * p
    else:  # p²/2 normal numbers, p chi-square draws and the Bartlett factor's product
        flop += _FLOP_PER_DRAWN * p * p + 2 * p**3
    if "gd" in c.methods and c.eta > 0:
        steps = min(c.t_end / c.eta, c.max_gd_steps)
        per_step = 20 * C * p * p if c.representation == "reduced" else 20 * n * p * C
        flop += steps * per_step
    return 8.0 * words, flop


def check_resources(config: SimulationConfig) -> None:
    """Refuse a configuration whose memory or work exceeds the limits (`_resources`)."""
    from ._run.resources import check_memory, check_work

    c = config
    memory, flop = resource_estimate(c)
    what = f"simulating C = {c.classes}, N = {c.per_class}, p = {c.dim} with {c.num_saves} saves"
    fix = "lower --dim (p×p matrices), --num-saves or --per-class"
    draw_bytes = 8.0 * 3 * int(c.classes) * int(c.per_class) * int(c.dim)
    if c.representation == "reduced" and initial_draw(c) == "features" and draw_bytes > memory / 2:
        # The samples are most of it, and a reduced run keeps only their statistics.
        fix += ", or draw the class statistics directly (--initial-draw statistics)"
    check_memory(memory, what, fix)
    check_work(flop, what, fix)


def build(config: SimulationConfig, key=None, *, params: Mapping[str, Any] | None = None):
    """(flow, y0, omega0 or None) for a configuration; the initial state is drawn from the seed
    (or `key`). `params` overrides the real parameters of `FLOAT_PARAMS` with arrays: a sweep
    traces them, and one program serves every value."""
    from . import flows as F
    from ._metrics import renormalised_features, snr_singular_values
    from ._stats import _class_stats

    c = config
    C, N, p = int(c.classes), int(c.per_class), int(c.dim)
    key = jax.random.PRNGKey(int(c.seed)) if key is None else key
    reduced = c.representation == "reduced"
    v = {k: getattr(c, k) for k in FLOAT_PARAMS} | dict(params or {})
    # Arrays, not Python floats: a sweep traces them, and one program serves every scale.
    scales = (jnp.asarray(v["mean_scale"], float), jnp.asarray(v["noise_scale"], float))
    statistics = initial_draw(c) == "statistics"
    if c.flow == "ufm" and reduced:
        kw = dict(lam_W=v["lam_w"], lam_H=v["lam_h"], lam_b=v["lam_b"], bias=bool(c.bias))
        if statistics:
            return F.ReducedUFMFlow(**kw), _draw_reduced_ufm(key, C, N, p, *scales), None
        state, labels = _draw(key, C, N, p, *scales)
        return F.ReducedUFMFlow(**kw), F.ReducedUFMState.from_state(state, labels, C), None
    project = c.flow == "renormalised"
    if statistics:  # the reduced central-path and renormalised flows, at any N
        stats = _draw_stats(key, C, N, p, *scales)
        if c.flow == "central-path":
            kw = dict(lam=v["lam"], lam_H=0.0, bias=bool(c.bias))
            return F.ReducedCentralPathFlow(**kw), stats, None
        # The class means of X = Σ_W^{-1/2}(H − μ_G) are Σ_W^{-1/2}(μ_c − μ_G): the map is
        # linear, so renormalising the means renormalises every sample's class mean.
        means = renormalised_features(stats.class_means.T, stats).T
        stats = type(stats)(stats.counts, means, jnp.eye(p, dtype=means.dtype))
        return F.ReducedRenormalisedFlow(project=project), stats, snr_singular_values(stats)
    state, labels = _draw(key, C, N, p, *scales)
    omega0 = None
    if c.flow == "ufm":
        kw = dict(lam_W=v["lam_w"], lam_H=v["lam_h"], lam_b=v["lam_b"], bias=bool(c.bias))
        return F.UFMFlow(labels, C, **kw), state, None
    H = state.H
    if c.flow == "central-path":
        kw = dict(lam=v["lam"], lam_H=0.0, bias=bool(c.bias))
        if reduced:
            return F.ReducedCentralPathFlow(**kw), _class_stats(H, labels, C), None
        return F.CentralPathFlow(labels, C, **kw), H, None
    X = renormalised_features(H, _class_stats(H, labels, C))
    stats = _class_stats(X, labels, C)
    # Σ_W(X) = I up to rounding; pin it so the reduced state is exactly on the manifold.
    stats = type(stats)(stats.counts, stats.class_means, jnp.eye(p, dtype=X.dtype))
    omega0 = snr_singular_values(stats)
    if reduced:
        return F.ReducedRenormalisedFlow(project=project), stats, omega0
    return F.RenormalisedFlow(labels, C, project=project), X, omega0


@eqx.filter_jit
def _draw(key, C: int, N: int, p: int, mean_scale, noise_scale):
    """`init_ufm` as one compiled program: called op by op it compiled a dozen small programs
    (~2 s of a run's start-up at C = 10, N = 5,000, p = 512)."""
    from ._ufm import init_ufm

    return init_ufm(key, C, N, p, mean_scale=mean_scale, noise_scale=noise_scale)


@eqx.filter_jit
def _draw_stats(key, C: int, N: int, p: int, mean_scale, noise_scale):
    """The class statistics of `_draw`'s features drawn directly (`draw_class_stats`), in
    O(p³) at any N, as one compiled program. The key is split as `init_ufm` splits it: the true
    class centres are those of `_draw` for the same key."""
    from ._ufm import draw_class_stats

    k_h, _ = jax.random.split(key)
    return draw_class_stats(k_h, C, N, p, mean_scale=mean_scale, noise_scale=noise_scale)


@eqx.filter_jit
def _draw_reduced_ufm(key, C: int, N: int, p: int, mean_scale, noise_scale):
    """The reduced UFM's initial state: its class statistics drawn directly from their
    distribution (`ReducedUFMState.draw`), in O(p³) at any N, as one compiled program."""
    from .flows import ReducedUFMState

    return ReducedUFMState.draw(key, C, N, p, mean_scale=mean_scale, noise_scale=noise_scale)


class _CompileAhead:
    """Compile the ODE's segment programs on another thread, from the shapes of the initial
    state, while this one draws it: ~5 s and ~3.5 s at C = 10, N = 5,000, p = 512, which then
    overlap on two cores. `join()` (before the first segment) waits for it and re-raises what
    failed there: the real segment is the same program, so a failure is never a head start lost
    in silence."""

    def __init__(self, config: SimulationConfig, rtol: float, atol: float):
        import threading

        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._work, args=(config, rtol, atol), name="centralpath-compile", daemon=True
        )
        self._thread.start()

    def _work(self, config, rtol, atol):
        from ._integrate import compile_segment

        try:
            shapes = eqx.filter_eval_shape(build, config)[:2]
            flow, y0 = jax.tree_util.tree_map(
                lambda s: jnp.zeros(s.shape, s.dtype) if isinstance(s, jax.ShapeDtypeStruct) else s,
                shapes,
            )
            compile_segment(
                flow,
                y0,
                rtol=rtol,
                atol=atol,
                max_steps=int(config.max_steps),
                nc1_target=config.nc1_target or None,
            )
        except BaseException as e:  # handed to the caller at join()
            self._error = e

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _carry_template(flow, y0, rtol, atol):
    """The structure of the ODE's carry for this flow and state (shapes only, nothing solved)."""
    from ._integrate import first_carry

    return eqx.filter_eval_shape(first_carry, flow, y0, jnp.asarray(1.0), rtol, atol)


class _Checkpoint:
    """The progress of `simulate` after every segment, so that a killed run can resume.

    `state_dir/progress.npz` holds the finished series, the current method, the segment index,
    the state's leaves and the ODE's step history (`StepCarry`) — written atomically, loaded
    without pickle. Each snapshot is written once, to its own `snapshot-<method>-<k>.npz`:
    rewriting all snapshots so far after every segment cost O(saves²) (80 MB per write by the
    40th save at p = 512). The run is cut into segments between consecutive save times whether
    or not it is resumed, so a resumed run takes exactly the same steps as an uninterrupted
    one: bit-identical.

    Between segments it writes at most every `interval_s` seconds (a killed run redoes at most
    that much): at p = 512 each write is ~4 MB, and writing after each of 39 short segments
    took ~0.6 s of a 10 s run. The end of each method is always written (`final`).
    """

    interval_s: float = 1.0

    def __init__(self, state_dir):
        from pathlib import Path

        self.dir = None if state_dir is None else Path(state_dir)
        self.path = None if state_dir is None else self.dir / "progress.npz"
        self.written: dict[str, int] = {}  # snapshots on disk, per method
        self._last_write = -float("inf")

    def snapshot_path(self, method: str, k: int):
        return self.dir / f"snapshot-{method}-{k}.npz"

    def load(self):
        from .measurement._io import load_npz

        if self.path is None or not self.path.is_file():
            return None
        return load_npz(self.path, "checkpoint")

    def save(
        self,
        done: dict,
        method: str,
        segment: int,
        y,
        snapshots: list,
        stop_time: float,
        carry=None,
        *,
        final: bool = False,
    ) -> None:
        import time

        from .measurement._io import save_npz

        if self.path is None:
            return
        if not final and time.monotonic() - self._last_write < self.interval_s:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for k in range(self.written.get(method, 0), len(snapshots)):
            leaves = jax.tree_util.tree_leaves(snapshots[k])
            save_npz(
                self.snapshot_path(method, k),
                **{str(i): np.asarray(a) for i, a in enumerate(leaves)},
            )
        self.written[method] = len(snapshots)
        arrays = {f"done/{k}": v for k, v in done.items()}
        arrays["current/method"] = np.asarray(method)
        arrays["current/segment"] = np.asarray(segment)
        arrays["current/stop_time"] = np.asarray(stop_time, float)
        arrays["current/snapshots"] = np.asarray(len(snapshots))
        for i, leaf in enumerate(jax.tree_util.tree_leaves(y)):
            arrays[f"state/{i}"] = np.asarray(leaf)
        arrays["format/version"] = np.asarray(CHECKPOINT_FORMAT)
        if carry is not None:
            from ._solver import carry_description

            # The solver's and controller's states as leaves, with their described structure:
            # a carry of another layout (another Diffrax release) is refused, never misread.
            for i, c in enumerate(jax.tree_util.tree_leaves(carry)):
                arrays[f"carry/{i}"] = np.asarray(c)
            arrays["carry/description"] = np.asarray(carry_description(carry))
        save_npz(self.path, **arrays)
        self._last_write = time.monotonic()

    def restore(self, saved: dict, y0, snapshot0, carry_template=None):
        """(method, segment, y, snapshots, stop_time, carry) from a checkpoint, with the pytree
        shapes of y0 and snapshot0 and, for the ODE's carry, of `carry_template()` (the carry
        this release would start with); carry is None where none was saved (gradient descent).
        A checkpoint of another format, or whose carry has another layout, is refused."""
        from .measurement._io import load_npz

        version = int(saved["format/version"]) if "format/version" in saved else 1
        restart = (
            f"start the run again: drop --resume, or simulate into {self.dir.parent} with "
            "--overwrite"
        )
        require(
            version == CHECKPOINT_FORMAT,
            f"the checkpoint in {self.dir} has format {version}, this centralpath reads format "
            f"{CHECKPOINT_FORMAT} (it was written by another release); {restart}",
        )

        n_state = len(jax.tree_util.tree_leaves(y0))
        y = jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(y0),
            [jnp.asarray(saved[f"state/{i}"]) for i in range(n_state)],
        )
        method = str(saved["current/method"])
        count = int(saved["current/snapshots"])
        treedef = jax.tree_util.tree_structure(snapshot0)
        snapshots = []
        for k in range(count):
            arrays = load_npz(self.snapshot_path(method, k), "checkpoint")
            snapshots.append(
                jax.tree_util.tree_unflatten(
                    treedef, [jnp.asarray(arrays[str(i)]) for i in range(treedef.num_leaves)]
                )
            )
        self.written[method] = count
        carry = None
        if "carry/description" in saved:
            from ._solver import carry_description

            template = carry_template()
            require(
                str(saved["carry/description"]) == carry_description(template),
                f"the checkpoint in {self.dir} holds the ODE solver's state in another layout "
                f"(written with another Diffrax or centralpath release); {restart}",
            )
            leaves, treedef = jax.tree_util.tree_flatten(template)
            carry = jax.tree_util.tree_unflatten(
                treedef,
                [jnp.asarray(saved[f"carry/{i}"], t.dtype) for i, t in enumerate(leaves)],
            )
        return (
            method,
            int(saved["current/segment"]),
            y,
            snapshots,
            float(saved["current/stop_time"]),
            carry,
        )


def distinct_gd_saves(results: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`results` with gradient descent's saves kept once per step count.

    GD saves at round(t/η) steps, so a save time below η/2 is step 0 again, and neighbouring
    log-spaced times can round to one count: with the defaults (t_end = 1e4, η = t_end/100 =
    100, saves log-spaced from 1) 18 of the 40 saves repeat the initial state at t = 0. A run directory keeps
    each GD time once, so that its tidy table has one row per (time, quantity, index) and pivots
    (the sweep's table does the same); `simulate()` itself keeps a snapshot per save time.
    """
    t = results.get("gd/times")
    if t is None:
        return results
    t = np.asarray(t)
    keep = np.sort(np.unique(t, return_index=True)[1])
    if keep.size == t.size:
        return results
    out = dict(results)
    for k, v in results.items():
        v = np.asarray(v)
        if k.startswith("gd/") and v.ndim >= 1 and v.shape[0] == t.size:
            out[k] = v[keep]
    return out


@at_configured_precision
def simulate(
    config: SimulationConfig | dict[str, Any],
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    state_dir=None,
    throw: bool = True,
    background: bool = True,
) -> dict[str, np.ndarray]:
    """Simulate one flow from a random initial state: what `centralpath simulate` runs, from
    Python.

    **Arguments:**

    - `config`: a `SimulationConfig` (keyword arguments are the command line's flags:
      `flow`, `classes` = C, `per_class` = N, `dim` = p, `t_end`, `num_saves`, `methods`, …),
      or a dict of its keys (missing keys take the defaults). A bad value is a `ValueError`
      with the command line's one-line message.
    - `progress`: draw a progress bar.
    - `log`: called with each line the command line would print (e.g. raised tolerances).
    - `state_dir`: checkpoint progress there after every segment; a later call with the same
      `state_dir` continues where the last one stopped.
    - `throw`: raise `NumericalError` when gradient descent diverges (else NaN from there on).

    **Returns:** a dict of NumPy arrays keyed `SERIES/QUANTITY`: series `ode` (the Diffrax
    solve), `gd` (gradient descent) and, for F3/F3′, `closed_form`; quantities `times`, `nc1`,
    `snr` (ω_1 ≥ … ≥ ω_{C−1}, [T, C−1]), `loss`, `loss_nc1`, `loss_nc23`, `loss_perp`, … — the
    arrays of the command line's `results.npz`. Computed at the configuration's `precision`
    (float64 unless it says float32) whatever `jax_enable_x64`: the flag is switched for the
    call, process-wide, and restored after.

    ```python
    import centralpath as cp

    config = cp.SimulationConfig(flow="renormalised", classes=4, per_class=10, dim=8,
                                 t_end=1e4, num_saves=20, methods=["ode"])
    results = cp.simulate(config)
    print(results["ode/nc1"][-1], results["closed_form/snr"][-1])
    ```

    The ODE and gradient descent advance segment by segment between consecutive save times (the
    flows are autonomous, so a segment is a solve from 0 to the gap). With `state_dir`, progress
    is checkpointed after every segment and a later call with the same `state_dir` continues
    where the last one stopped, with bit-identical results.

    A gradient-descent run that diverges (a non-finite step, or an objective grown tenfold)
    raises `NumericalError` when `throw` (the command line's choice); otherwise its metrics from
    the divergence on are NaN and `gd/status` says `Status.gd_diverged`, as in a sweep.

    `background` (default): compile the ODE's program on a second thread while the initial state
    is drawn, and compute each snapshot's metrics on a second thread while the run goes on; the
    numbers are the same bits either way, and a failure there is raised, not swallowed. False
    runs everything on the calling thread.
    """
    from ._discrete import stable_step_size

    config = as_config(config)
    log = log or (lambda s: None)
    rtol, atol = solver_tolerances(config.rtol, config.atol)
    ahead = background and "ode" in config.methods
    compiling = _CompileAhead(config, rtol, atol) if ahead else None
    flow, y0, omega0 = build(config)
    ts = save_times(float(config.t_end), int(config.num_saves))
    if "ode" in config.methods and (rtol, atol) != (config.rtol, config.atol):
        log(
            f"rtol/atol raised to {rtol:.2g}/{atol:.2g}: {config.rtol:.2g}/{config.atol:.2g} "
            "is below what this precision resolves"
        )
    eta = steps = stable = None
    if "gd" in config.methods:
        stable = float(stable_step_size(flow, y0))
        eta = float(config.eta) or float(automatic_eta(stable, float(config.t_end)))
        check_stable(eta, stable)
        steps = step_plan(ts, eta, config.max_gd_steps, config.t_end)
    checkpoint = _Checkpoint(state_dir)
    from .flows._base import take_snapshot

    snapshot0 = take_snapshot(flow, y0)  # compiled: op by op it compiled ~20 small programs
    saved = checkpoint.load()
    done: dict[str, np.ndarray] = {}
    resume = None
    if saved is not None:
        done = {k[len("done/") :]: v for k, v in saved.items() if k.startswith("done/")}
        resume = checkpoint.restore(
            saved, y0, snapshot0, lambda: _carry_template(flow, y0, rtol, atol)
        )
        log(f"resuming {resume[0]} at segment {resume[1]} of {len(ts) - 1}")

    from ._run.progress import progress as progress_bar

    methods = [m for m in ("ode", "gd") if m in config.methods]
    # A tqdm bar on a terminal; plain lines in a log (tqdm's frames would fill it).
    bar = progress_bar(
        len(methods) * (len(ts) - 1), enabled=progress, desc="simulate", unit="segment"
    )
    common = (flow, y0, snapshot0, ts, checkpoint, bar, log)
    for method in methods:
        if f"{method}/times" in done:
            bar.update(len(ts) - 1)
            continue
        start = resume if resume is not None and resume[0] == method else None
        if method == "ode":
            run = _ODESeries(
                *common,
                background=background,
                rtol=rtol,
                atol=atol,
                max_steps=int(config.max_steps),
                nc1_target=config.nc1_target or None,
                compiling=compiling,
            )
        else:
            run = _GDSeries(
                *common, background=background, eta=eta, steps=steps, stable=stable, throw=throw
            )
        done.update(run.run(done, start))
    bar.close()
    results = dict(done)
    if omega0 is not None:
        flow_kind = "renormalised" if config.flow == "renormalised" else "whitened"
        closed = closed_form_series(
            omega0, ts, int(config.classes), int(config.per_class), flow_kind
        )
        results.update(series("closed_form", ts, {k: np.asarray(v) for k, v in closed.items()}))
    return results


class _SnapshotMetrics:
    """Every quantity of `METRIC_KEYS` for each snapshot of a series; with `background`, computed
    on a second thread while the run goes on (a failure there is raised by `stacked`).

    The metrics take several p×p eigendecompositions per save (~150 ms of CPU each at p = 512,
    and ~4 s to compile); computed together after the ODE they added to its time, while the
    solver's loop keeps only one core busy. One snapshot at a time, one thread: LAPACK calls
    stay unbatched and never run two at once (see `_run.runtime`). Each snapshot's numbers come
    from the same compiled program whenever and wherever they are computed, so a resumed run
    stays bit-identical, in the background or not.
    """

    def __init__(self, lam, accuracy: float, background: bool):
        from concurrent.futures import Future, ThreadPoolExecutor

        self._pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="centralpath-metrics")
            if background
            else None
        )
        self._Future = Future
        self._lam, self._accuracy = jnp.asarray(lam, float), jnp.asarray(accuracy, float)
        self._snapshots: list = []
        self._futures: list = []

    def _submit(self, snapshot):
        from ._linalg import DEFAULT_RTOL
        from ._trajectory import one_snapshot_metrics

        def metrics():
            return jax.device_get(
                one_snapshot_metrics(snapshot, self._lam, DEFAULT_RTOL, self._accuracy)
            )

        if self._pool is not None:
            return self._pool.submit(metrics)
        future = self._Future()
        future.set_result(metrics())
        return future

    def catch_up(self, snapshots: list) -> None:
        """Start the metrics of the snapshots not seen yet (a repeated snapshot is reused)."""
        for s in snapshots[len(self._futures) :]:
            if self._snapshots and s is self._snapshots[-1]:
                future = self._futures[-1]
            else:
                future = self._submit(s)
            self._snapshots.append(s)
            self._futures.append(future)

    def stacked(self, count: int) -> dict[str, np.ndarray]:
        """The metrics of the first `count` snapshots, [count, …] (the last repeated past the
        snapshots seen: a diverged GD run holds its last state)."""
        from ._trajectory import METRIC_KEYS

        rows = [f.result() for f in self._futures]
        rows = (rows + [rows[-1]] * count)[:count]
        return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in METRIC_KEYS}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _Series:
    """One method's series of a configuration, advanced segment by segment between the save
    times (see `simulate`): `run()` resumes or starts, advances, and returns the flat series.
    The ODE and gradient descent each subclass it with their own `advance` loop."""

    method: str

    def __init__(self, flow, y0, snapshot0, ts, checkpoint, bar, log, background: bool):
        self.flow, self.y0, self.snapshot0, self.ts = flow, y0, snapshot0, ts
        self.checkpoint, self.bar, self.log, self.background = checkpoint, bar, log, background
        self.last = (y0, [snapshot0], float("nan"), None)

    def run(self, done: dict, start) -> dict[str, np.ndarray]:
        """The series (`start`: a checkpoint's position in it, or None), then its final
        checkpoint."""
        if start is not None:
            _, k0, y, snapshots, stop_time, carry = start
        else:
            k0, y, snapshots, stop_time, carry = 0, self.y0, [self.snapshot0], float("nan"), None
        self.bar.update(k0)
        pending = _SnapshotMetrics(self.flow.decomposition_lambda, self.accuracy, self.background)
        try:
            y, snapshots, stop_time, carry, num_steps = self.advance(
                done, pending, k0, y, snapshots, stop_time, carry
            )
            self.last = (y, snapshots, stop_time, carry)
            pending.catch_up(snapshots)
            out = self.series(snapshots, stop_time, num_steps, pending)
        finally:
            pending.close()
        self.checkpoint.save({**done, **out}, self.method, len(self.ts) - 1, *self.last, final=True)
        return out

    def _saved(self, done, k, y, snapshots, stop_time, carry=None) -> None:
        self.checkpoint.save(done, self.method, k + 1, y, snapshots, stop_time, carry)
        self.bar.update(1)


class _ODESeries(_Series):
    """The ODE, one `integrate_segment` per gap between save times, the solver's carry handed
    on (segmenting costs about no steps over one solve)."""

    method = "ode"

    def __init__(self, *args, rtol, atol, max_steps, nc1_target, compiling, **kw):
        super().__init__(*args, **kw)
        self.rtol, self.atol, self.max_steps, self.nc1_target = rtol, atol, max_steps, nc1_target
        self.compiling = compiling
        # A state the solver knows to about its tolerances: that bounds the ω_j it resolves.
        self.accuracy = max(rtol, atol)

    def advance(self, done, pending, k0, y, snapshots, stop_time, carry):
        from .flows._base import take_snapshot

        num_steps = 0
        for k in range(k0, len(self.ts) - 1):
            pending.catch_up(snapshots)
            if np.isfinite(stop_time):
                break
            segment = self._segment(y, k, carry)
            y, carry = segment.final_state, segment.carry
            num_steps += segment.num_steps
            if segment.stopped_early:
                stop_time = float(self.ts[k] + segment.final_time)
            snapshots.append(take_snapshot(self.flow, y))  # at the segment's end or the stop
            self._saved(done, k, y, snapshots, stop_time, carry)
        return y, snapshots, stop_time, carry, num_steps

    def _segment(self, y, k, carry):
        from ._integrate import ODEFailure, integrate_segment

        ts = self.ts
        if self.compiling is not None:  # compiling the same program here too would waste it
            compiling, self.compiling = self.compiling, None
            compiling.join()
        try:
            return integrate_segment(
                self.flow,
                y,
                float(ts[k + 1] - ts[k]),
                carry,
                rtol=self.rtol,
                atol=self.atol,
                max_steps=self.max_steps,
                nc1_target=self.nc1_target,
            )
        except ODEFailure as e:  # each segment starts its clock at 0: report run time
            raise NumericalError(
                f"the ODE solve stopped at t = {ts[k] + e.t_reached:.4g}, between the save times "
                f"{ts[k]:.4g} and {ts[k + 1]:.4g} (max_steps counts per segment): {e.reason}; "
                f"{e.hint}"
            ) from None

    def series(self, snapshots, stop_time, num_steps, pending) -> dict[str, np.ndarray]:
        times = self.ts[: len(snapshots)].copy()
        if np.isfinite(stop_time):
            times[-1] = stop_time
            self.log(f"ode: stopped at the NC1 target at t = {times[-1]:.4g}")
        metrics = pending.stacked(len(snapshots))
        if self.flow.reduced:
            del metrics["nc4"]  # NC4 needs the samples: not a column of NaN in the results
        self.log(f"ode: {num_steps} adaptive steps in this call")
        out = series("ode", times, metrics)
        out["ode/status"] = np.asarray(int(Status.successful))
        return out


class _GDSeries(_Series):
    """Gradient descent with step η, `steps[k]` steps by the k-th save time; a divergence (a
    non-finite step or a tenfold growth of the objective) raises with `throw`, or ends the
    series with its later saves masked and a status."""

    method = "gd"
    accuracy = 0.0  # known to rounding

    def __init__(self, *args, eta, steps, stable, throw, **kw):
        super().__init__(*args, **kw)
        self.eta, self.steps, self.stable, self.throw = eta, steps, stable, throw

    def advance(self, done, pending, k0, y, snapshots, stop_time, carry):
        num_steps, ts = 0, self.ts
        for k in range(k0, len(ts) - 1):
            pending.catch_up(snapshots)
            gap = int(self.steps[k + 1] - self.steps[k])
            if gap == 0:  # round(t/η) repeats: the same state again
                snapshots.append(snapshots[-1])
                self._saved(done, k, y, snapshots, stop_time)
                continue
            trajectory = self._segment(y, gap)
            diverged = self._diverged(trajectory, k)
            if trajectory is None:  # no finite state to keep: the verdict masks this save
                snapshots.append(snapshots[-1])
                break
            num_steps += gap
            y = trajectory.final_state
            snapshots.append(jax.tree_util.tree_map(lambda a: a[-1], trajectory.snapshots))
            self._saved(done, k, y, snapshots, stop_time)
            if diverged:  # kept, and masked by the verdict from here on
                break
        return y, snapshots, stop_time, None, num_steps

    def _segment(self, y, gap):
        """The segment's trajectory, or None when a step went non-finite."""
        from ._discrete import gradient_descent

        try:
            return gradient_descent(self.flow, y, self.eta, gap)
        except NumericalError:
            return None

    def _diverged(self, trajectory, k) -> bool:
        objective0 = float(self.snapshot0.objective)
        if trajectory is not None:
            last = float(trajectory.snapshots.objective[-1])
            if last <= DIVERGENCE_GROWTH * objective0:
                return False
        growth = float("inf") if trajectory is None else last / objective0
        if self.throw:
            raise divergence_error(float(self.ts[k + 1]), self.eta, growth, self.stable)
        return True

    def series(self, snapshots, stop_time, num_steps, pending) -> dict[str, np.ndarray]:
        ts = self.ts
        # A diverged run stops early: hold its last state, masked below.
        snapshots = snapshots + [snapshots[-1]] * (len(ts) - len(snapshots))
        metrics = pending.stacked(len(snapshots))
        if self.flow.reduced:
            del metrics["nc4"]
        gaps = np.diff(np.concatenate([[0], self.steps]))
        objective = np.stack([np.asarray(s.objective) for s in snapshots])
        ok, first = gd_verdict(
            jnp.asarray(objective), self.snapshot0.objective, -1, jnp.asarray(gaps)
        )
        ok = np.asarray(ok)
        metrics = {
            k: np.where(ok.reshape(ok.shape + (1,) * (v.ndim - 1)), v, np.nan)
            for k, v in metrics.items()
        }
        self.log(f"gd: {int(self.steps[len(snapshots) - 1])} steps of eta = {self.eta:.4g}")
        out = series("gd", self.steps * self.eta, metrics)
        out["gd/eta"] = np.asarray(self.eta)
        out["gd/status"] = np.asarray(
            int(Status.successful if int(first) < 0 else Status.gd_diverged)
        )
        return out
