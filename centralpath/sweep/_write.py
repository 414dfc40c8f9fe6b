"""Running a whole sweep and writing it: tidy tables, the run directory, resume."""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .._errors import InputError, require
from ..simulate import FLOW_NAMES
from ._batched import batched_simulate
from ._devices import as_mesh, make_mesh
from ._spec import SweepSpec, groups, load_sweep, parse_sweep

# --------------------------------------------------------------------------- sweeps


def cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def group_csv(spec: SweepSpec, indices: Sequence[int], results: Sequence[dict]) -> str:
    """The tidy rows of one group (no header): swept values, time, quantity, index, value."""
    from .._run.rundir import tidy_rows

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for i, res in zip(indices, results, strict=True):
        prefix = [cell(spec.configs[i][k]) for k in spec.swept]
        for t, q, j, v in tidy_rows(res):
            w.writerow([*prefix, repr(t), q, j, repr(v)])
    return buf.getvalue()


def csv_header(spec: SweepSpec) -> str:
    return ",".join([*spec.swept, "time", "quantity", "index", "value"]) + "\n"


def run_sweep(
    spec: SweepSpec,
    *,
    devices=None,
    log: Callable[[str], None] | None = None,
    skip: Callable[[int], bool] | None = None,
    on_group: Callable[[int, list[int], list[dict]], None] | None = None,
) -> list[dict[str, np.ndarray] | None]:
    """Run every group of a sweep; return per-configuration results (None for skipped groups).

    `skip(g)` says a group is already done (resume); `on_group(g, indices, results)` is called
    as each group finishes (to write it).
    """
    log = log or (lambda s: None)
    devices = as_mesh(devices)
    parts = groups(spec.configs)
    out: list[dict | None] = [None] * len(spec.configs)
    for g, indices in enumerate(parts):
        if skip is not None and skip(g):
            log(f"group {g + 1}/{len(parts)}: done already, skipped")
            continue
        start = time.perf_counter()
        configs = [spec.configs[i] for i in indices]
        res = batched_simulate(
            configs,
            devices=devices,
            record=spec.options["record"],
            quantities=spec.options["quantities"],
            log=log,
        )
        c = configs[0]
        log(
            f"group {g + 1}/{len(parts)}: {len(indices)} configurations of {c['flow']} "
            f"({c['representation']}, C={c['classes']}, N={c['per_class']}, p={c['dim']}) "
            f"in {time.perf_counter() - start:.2f} s"
        )
        for i, r in zip(indices, res, strict=True):
            out[i] = r
        if on_group is not None:
            on_group(g, indices, res)
    return out


def _group_path(partial: Path, g: int) -> Path:
    return partial / "groups" / f"group-{g:05d}.csv"


def _changed_keys(saved: dict, config: dict) -> list[str]:
    """The keys (`sweep.KEY` for the table) whose values differ between two sweep configs."""
    import tomllib

    from .._run.rundir import dumps_toml

    new = tomllib.loads(dumps_toml(config))  # the form config.toml holds, for a fair comparison
    changed = []
    for key in sorted(set(saved) | set(new)):
        a, b = saved.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            changed.append(key)
    return changed


def _start_run_dir(out, config: dict, *, resume: bool, overwrite: bool, inputs=()):
    """The sweep's run directory: reopened to resume (same configuration required, every group
    file verified against its recorded digest) or new."""
    from .._run.rundir import RunDir

    if resume:
        run, saved = RunDir.reopen(out, "sweep", inputs=inputs)
        with run.running():
            changed = _changed_keys(saved, config)
            require(
                not changed,
                f"--resume with changed flags is refused: the sweep configuration differs from "
                f"the one of the interrupted sweep at {out} in {', '.join(changed)}; resume with "
                "the same file (or without a file), or start a new --out",
            )
            # A group file without a recorded digest was not written by this sweep: trusting it
            # would put foreign rows in results.csv.
            foreign = [
                f
                for f in sorted(run.file("groups").glob("group-*.csv"))
                if not run.tracked(f"groups/{f.name}")
            ]
            require(
                not foreign,
                f"--resume refused: {foreign[0] if foreign else ''} was not written by this sweep "
                "(no recorded digest); remove it, or start afresh with --overwrite",
            )
        return run
    run = RunDir(
        out, "sweep", config, overwrite=overwrite, figures=False, resumable=True, inputs=inputs
    )
    with run.running():
        run.file("groups").mkdir()
    return run


def write_sweep(
    spec: SweepSpec,
    out,
    *,
    devices=None,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    inputs=(),
) -> Path:
    """Run a sweep into the run directory `out` (see the module docstring); return its path.

    The directory is built under a hidden `.NAME.partial` sibling; each finished group is
    written there atomically, and `resume=True` continues an interrupted sweep from it. A failure
    keeps the partial sweep. `inputs`: files the command read (the run must not hold them).
    """
    import jax

    from .._run.rundir import RunDir

    log = log or (lambda s: None)
    config = spec.to_config()
    # Multi-host: every process computes, the first checks and writes. Its verdict on the
    # directory is broadcast before anyone computes, so all processes fail alike (and none
    # trips over the .partial folder the first one has just made, on a shared file system).
    writer = jax.process_index() == 0
    multi = jax.process_count() > 1
    run, error = None, None
    if writer:
        try:
            run = _start_run_dir(out, config, resume=resume, overwrite=overwrite, inputs=inputs)
        except InputError as e:
            kept = getattr(e, "centralpath_kept", "")
            error = f"{e}; {kept}" if kept else str(e)
    if multi:
        from jax.experimental import multihost_utils

        failed = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
        if failed:
            raise InputError(error or f"process 0 could not start the sweep at {out}; see its log")
        if not writer:
            run = RunDir.attach(out, "sweep", config)
    elif error is not None:
        raise InputError(error)
    # Any failure from here on keeps the partial sweep and its finished groups (and says so).
    with run.running():
        return _run_groups(spec, run, devices, log, resume, writer, multi)


def _run_groups(spec, run, devices, log, resume: bool, writer: bool, multi: bool) -> Path:
    from ..measurement._io import write_text

    n_groups = len(groups(spec.configs))
    mesh = as_mesh(devices)
    # Which groups are finished is decided once, before any group runs, the same on every
    # process (process 0 has verified every group file against its digest in `_start_run_dir`).
    finished = (
        {g for g in range(n_groups) if _group_path(run.partial, g).is_file()} if resume else set()
    )
    if multi:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("centralpath sweep: groups to skip read")

    def save(g: int, indices: list[int], results: list[dict]) -> None:
        if writer:
            write_text(_group_path(run.partial, g), group_csv(spec, indices, results))

    run_sweep(spec, devices=mesh, log=log, skip=finished.__contains__, on_group=save)
    if not writer:
        return run.path
    with open(run.file(".results.csv.tmp"), "w") as fh:
        fh.write(csv_header(spec))
        for g in range(n_groups):
            fh.write(_group_path(run.partial, g).read_text())
    os.replace(run.file(".results.csv.tmp"), run.file("results.csv"))
    return run.finish(
        dict(
            configurations=len(spec.configs),
            initial_draw=_initial_draws(spec),
            groups=n_groups,
            swept=list(spec.swept),
            precision=spec.options["precision"],
            resumed=resume,
            mesh_devices=int(mesh.size),
        )
    )


def read_results(run) -> list[dict[str, str]]:
    """The rows of a sweep's results.csv as dicts of strings (for quick inspection and tests)."""
    path = Path(run) / "results.csv"
    require(path.is_file(), f"{run} has no results.csv; it is not a finished sweep directory")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


__all__ = [
    "SweepSpec",
    "parse_sweep",
    "load_sweep",
    "groups",
    "batched_simulate",
    "run_sweep",
    "write_sweep",
    "make_mesh",
    "read_results",
    "FLOW_NAMES",
]


def _initial_draws(spec: SweepSpec) -> dict[str, int]:
    """{"features" | "statistics": configurations} (`simulate.initial_draw`): how the initial
    states were drawn. Every configuration of a shape group draws the same way."""
    from ..simulate import as_config, initial_draw

    counts: dict[str, int] = {}
    for group in groups(spec.configs):
        draw = initial_draw(as_config(spec.configs[group[0]]))
        counts[draw] = counts.get(draw, 0) + len(group)
    return counts
