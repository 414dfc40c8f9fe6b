"""Shared plumbing of the benchmark scripts: timing (medians of repeats, compile time apart),
a plain table, and the configuration merge.

Every benchmark is a script with `main(cfg) -> dict` and a `__main__` that prints its table. The
dict holds `rows` (one per measurement: name, seconds, ratio, target, met) and `checks` (the
correctness numbers, asserted inside `main`). Ratios are measured in the same run, so they are
meaningful on a noisy shared machine even where the absolute times are not.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

# BLAS threads as the command line sets them, before NumPy loads (centralpath._run.runtime): one
# thread for everything (jax's CPU LAPACK kernels run in scipy's OpenBLAS, whose workers fight
# XLA's pool: a 128×128 triangular solve ran ~100× slower on 2 cores), the streamed SYRK on
# the threads the user allows (CENTRALPATH_BLAS_THREADS, OPENBLAS_NUM_THREADS, else the cores).
# A benchmark names the thread count of every row it times.
import centralpath_launch  # noqa: E402 - light: it imports neither NumPy nor the package

centralpath_launch._set_blas_environment()


def merged(defaults: dict, cfg: dict | None) -> dict:
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(defaults)
    if unknown:
        raise ValueError(f"unknown benchmark settings {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **cfg}


def block(x):
    import jax

    return jax.block_until_ready(x)


def median_time(
    fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1, budget_s: float = 20.0
) -> float:
    """Median wall time of `fn()` (which must block until its result is ready) over `repeats`
    runs after `warmup` untimed runs; stops repeating once `budget_s` is spent (≥ 1 run)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < budget_s):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved_medians(
    fns: dict[str, Callable[[], object]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    primed: tuple[str, ...] = (),
) -> dict[str, float]:
    """Median wall time of each `fns[name]()` (each must block until its result is ready), timed
    in rounds that call every function once, the order rotating from round to round. A ratio of
    two of these medians compares runs made seconds apart, not minutes: on a shared machine
    whose speed drifts, timing one function's repeats and then the other's does not. The
    functions named in `primed` also run once, untimed, right before each timed call, so they
    are timed with their data in cache rather than after the others have evicted it."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name in primed:
                fns[name]()
            t = time.perf_counter()
            fns[name]()
            if r >= warmup:
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def compiled(jitted, *args):
    """(the AOT-compiled executable, seconds to trace + lower + compile) of a jitted function."""
    t = time.perf_counter()
    exe = jitted.lower(*args).compile()
    return exe, time.perf_counter() - t


def row(
    name: str,
    seconds: float | None,
    *,
    baseline: float | None = None,
    target: float | None = None,
    note: str = "",
    compile_s: float | None = None,
    value: float | None = None,
) -> dict:
    """A table row; ratio = baseline / seconds (how many times faster than the baseline);
    `value` for a row that reports a number other than a time (an error)."""
    ratio = None if (baseline is None or seconds is None) else baseline / seconds
    met = None if (target is None or ratio is None) else bool(ratio >= target)
    return dict(
        name=name,
        seconds=seconds,
        compile_s=compile_s,
        ratio=ratio,
        target=target,
        met=met,
        value=value,
        note=note,
    )


def fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def table(
    rows: list[dict],
    columns=("name", "seconds", "compile_s", "ratio", "target", "met", "value", "note"),
) -> str:
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [
        max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(columns)
    ]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(x) for x in cells)])


def report(result: dict) -> str:
    lines = [table(result["rows"])]
    if result.get("checks"):
        lines.append("checks: " + json.dumps(result["checks"], default=float))
    return "\n".join(lines)


def run_child(script: str, args: list[str], *, what: str, timeout: float, env=None):
    """Run `script --child ARGS…` in a fresh Python (for settings that must precede jax's start,
    such as x64 off or a host device count) and return the JSON its last output line prints."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, str(Path(script).resolve()), "--child", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def enable_x64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def max_rel_diff(a: list[dict], b: list[dict], *, noise: float = 1e-10) -> float:
    """Largest normwise relative difference, quantity by quantity, between two lists of results
    dicts. Quantities whose largest magnitude is below `noise` are rounding noise by
    construction (L_perp and ‖W̃ − W̃_LS‖ on the central path are 0 in exact arithmetic) and are
    skipped; NaN entries must agree."""
    import numpy as np

    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        for key in ra:
            x, y = np.asarray(ra[key], float), np.asarray(rb[key], float)
            if x.shape != y.shape:
                return float("inf")
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                return float("inf")
            if not x.size or np.all(np.isnan(x)):
                continue
            scale = float(np.nanmax(np.abs(x)))
            if scale < noise:
                continue
            worst = max(worst, float(np.nanmax(np.abs(x - y))) / scale)
    return worst


def standalone(doc: str | None) -> None:
    """The command line of a benchmark run by itself: `--help` prints what it measures, and any
    argument is refused (sizes and profiles are `bench_all.py`'s), so that a mistyped option
    never starts a minute-long run."""
    import argparse

    argparse.ArgumentParser(
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="profiles, a subset and JSON output: python experiments/bench_all.py --help",
    ).parse_args()
