"""The sweep file: the `[sweep]` table, its options and validation, and the shape groups
that each run as one compiled call."""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import SEED_MAX, InputError, require, require_seed
from .._run.config import coerce
from .._run.resources import check_memory
from .._series import (
    CLOSED_FORM_QUANTITIES,
)
from ..simulate import (
    BATCHABLE as BATCHABLE,
    DEFAULTS,
    FLOAT_PARAMS as FLOAT_PARAMS,
    PRECISIONS as PRECISIONS,
    as_config,
)

NOT_SWEEPABLE = ("methods", "nc1_target")
OPTIONS: dict[str, Any] = {"precision": "float64", "record": "final", "quantities": "all"}
RECORDS = ("final", "all")
CLOSED_FORM_KEYS = CLOSED_FORM_QUANTITIES
MAX_CONFIGS = 10_000_000
#: Tracing and compiling one shape group's program: 8.6 s per added group on 2 loaded CPU cores
#: (a central-path sweep of dim = [3..7] against dim = [3]), counted as work at the ~1.4e10
#: flop/s the analysis runs at, so that a sweep of 1,000 shapes is estimated, not only its
#: arithmetic.
GROUP_COMPILE_SECONDS = 8.6
GROUP_COMPILE_FLOP = GROUP_COMPILE_SECONDS * 1.4e10
#: The share of the work limit a sweep may spend compiling: 5% of the default 1e15 is ~1 h of
#: compilation (~420 shape groups). Compiling is pure overhead (the groups' programs differ
#: only in their shapes), and hours of it are nearly always a table that sweeps a shape key
#: (dim = [3, 4, …, 1002]) where a batchable one was meant; the arithmetic keeps the whole limit.
COMPILE_WORK_FRACTION = 0.05
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
    #: (floating-point operations, shape groups) estimated before any work (`sweep_cost`).
    cost: tuple[float, int] = (0.0, 0)

    def cost_line(self) -> str:
        """The one-line estimate a sweep prints before it starts."""
        flop, n_groups = self.cost
        return (
            f"{len(self.configs)} configurations over {', '.join(self.swept)} in {n_groups} shape "
            f"group(s): about {flop:.1e} floating-point operations, of which {n_groups} "
            f"compilation(s) (~{n_groups * GROUP_COMPILE_SECONDS / 60:.1f} min at "
            f"~{GROUP_COMPILE_SECONDS:g} s each)"
        )

    def to_config(self) -> dict[str, Any]:
        """The resolved sweep file (for config.toml; `parse_sweep` of it gives this spec)."""
        return {**self.base, **self.options, "sweep": dict(self.table)}


def _is_seed(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= SEED_MAX


def _metric_keys() -> tuple[str, ...]:
    from .._quantities import METRIC_KEYS

    return METRIC_KEYS


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
        base[key] = coerce(key, v, DEFAULTS[key], source)
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
        values = [coerce(key, x, DEFAULTS[key], where) for x in v]
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
    # Validity and cost never depend on the seed: each distinct rest is checked once, and the
    # sweep's cost refused, before the product is built (10**6 configurations take seconds).
    rest_axes = [(name, vals) for name, vals in axes if name != "seed"]
    seeds = math.prod(len(vals) for name, vals in axes if name == "seed")
    rests = [
        {**base, **dict(zip((n for n, _ in rest_axes), combo, strict=True))}
        for combo in itertools.product(*(vals for _, vals in rest_axes))
    ]
    flop, n_groups = _validate_configs(rests, names, source)
    cost = check_sweep_cost(flop * seeds, n_groups, total, source)
    configs = [
        {**base, **dict(zip(names, combo, strict=True))}
        for combo in itertools.product(*(vals for _, vals in axes))
    ]
    if options["quantities"] != "all" and "nc4" in options["quantities"]:
        require(
            all(c["representation"] == "full" for c in configs),
            f'{source}: nc4 needs the samples, which representation = "reduced" does not keep; '
            'set representation = "full" or drop nc4 from quantities',
        )
    return SweepSpec(base, options, table, names, configs, cost)


def _validate_configs(configs: list[dict], names: Sequence[str], source: str):
    """Validate each distinct configuration but its seed; return the (floating-point
    operations, shape groups) of all of them (`simulate.resource_estimate`, `group_key`)."""
    from ..simulate import resource_estimate

    seen: dict[tuple, float] = {}
    keys = set()
    total = 0.0
    for c in configs:
        # Validity never depends on the seed: check each distinct rest once.
        sig = tuple((k, repr(c[k])) for k in names if k != "seed")
        if sig not in seen:
            where = ", ".join(f"{k} = {c[k]!r}" for k in names if k != "seed") or "base"
            try:
                as_config(c)  # validated on construction
                require(
                    c["nc1_target"] == 0, "nc1_target (an early stop) is not supported in sweeps"
                )
            except InputError as e:
                raise InputError(f"{source}: configuration ({where}): {e}") from None
            seen[sig] = resource_estimate(as_config(c))[1]
            keys.add(group_key(c))  # the seed is batchable: one key per distinct rest
        total += seen[sig]
    return total, len(keys)


def check_sweep_cost(flop: float, n_groups: int, n_configs: int, source: str):
    """Refuse a sweep whose configurations' work plus its shape groups' compilations pass the
    work limit (`CENTRALPATH_WORK_LIMIT`, as `simulate`), or whose compilations alone pass
    their share of it (`check_compile_cost`); return (work, groups)."""
    from .._run.resources import check_work

    compile_flop = n_groups * GROUP_COMPILE_FLOP
    work = flop + compile_flop
    check_work(
        work,
        f"{source}: {n_configs} configurations in {n_groups} shape group(s) (each compiled "
        f"once, ~{GROUP_COMPILE_SECONDS:g} s)",
        "split the sweep, or sweep fewer shapes (classes, per_class, dim, num_saves, "
        "representation and flow make the groups)",
    )
    check_compile_cost(compile_flop, n_groups, source)
    return work, n_groups


def check_compile_cost(compile_flop: float, n_groups: int, source: str) -> None:
    """Refuse a sweep of several shape groups whose compilations alone pass
    `COMPILE_WORK_FRACTION` of the work limit (`CENTRALPATH_WORK_LIMIT`), in one line naming the estimate, the limit and
    the fixes: fewer shape groups, or a higher limit."""
    from .._run.resources import WORK_ENV, _power_of_ten, _sci, work_limit

    limit = work_limit()
    if n_groups <= 1 or compile_flop <= COMPILE_WORK_FRACTION * limit:
        return  # one group is one program: there are no fewer to compile
    hours = n_groups * GROUP_COMPILE_SECONDS / 3600
    raise InputError(
        f"{source}: {n_groups} shape groups need {n_groups} compilations, about {hours:.1f} h "
        f"(~{GROUP_COMPILE_SECONDS:g} s each, counted as {_sci(compile_flop)} floating-point "
        f"operations), more than the {_sci(COMPILE_WORK_FRACTION * limit)} a sweep may spend "
        f"compiling ({COMPILE_WORK_FRACTION:.0%} of the work limit {_sci(limit)}); sweep fewer "
        "shape groups (classes, per_class, dim, num_saves, representation and flow make them; "
        "seeds and the batchable keys share one), or raise the limit with "
        f"{WORK_ENV}={_power_of_ten(compile_flop / COMPILE_WORK_FRACTION)}"
    )


def load_sweep(path) -> SweepSpec:
    """Read and parse a sweep TOML file (`parse_sweep`)."""
    from .._run.rundir import load_config

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
