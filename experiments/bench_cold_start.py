"""Benchmark: cold start of `centralpath predict` (import + compile + answer) in a fresh process.

Median wall time of `runs` fresh subprocesses of `python -m centralpath.cli predict …`:

- cold, no cache: an empty persistent compilation cache (XDG_CACHE_HOME in a new temporary
  directory every run) — the true first-run number;
- repeat: the same command again with the cache directory of a previous run. `predict` does
  not enable the persistent cache: after its one `jax.jit` (~0.4 s to compile) there is
  nothing worth caching below `enable_compilation_cache`'s 0.5 s threshold, so this row
  measures run-to-run noise, and cold is the number to quote;
- floors measured the same way: `python -c "import jax"` and `python -c "import jax; jax.numpy
  .ones(1)"` (jax's own import and backend start, which no change here can remove).

Checked: every run prints the same ω table. The target is ≤ 3 s (2 cores).

    python experiments/bench_cold_start.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import _bench

DEFAULTS = dict(
    runs=5,
    target_s=3.0,
    timeout_s=120,
    args=["--classes", "10", "--per-class", "500", "--omega0", "0.5,1,2", "--times", "0,1e3,1e6"],
)


def _time(cmd: list[str], env: dict, timeout: float) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(_bench.ROOT)
    )
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-1000:]}")
    return elapsed, proc.stdout


def main(cfg: dict | None = None) -> dict:
    cfg = _bench.merged(DEFAULTS, cfg)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_bench.ROOT), env.get("PYTHONPATH", "")]).strip(
        os.pathsep
    )
    predict = [sys.executable, "-m", "centralpath.cli", "predict", *cfg["args"]]
    times: dict[str, list[float]] = {"cold": [], "warm": [], "import": [], "backend": []}
    outputs = set()
    with tempfile.TemporaryDirectory() as warm_dir:
        warm_env = {**env, "XDG_CACHE_HOME": warm_dir}
        _time(predict, warm_env, cfg["timeout_s"])  # fills the warm cache
        for _ in range(cfg["runs"]):
            with tempfile.TemporaryDirectory() as cold_dir:
                t, out = _time(predict, {**env, "XDG_CACHE_HOME": cold_dir}, cfg["timeout_s"])
            times["cold"].append(t)
            outputs.add(out)
            t, out = _time(predict, warm_env, cfg["timeout_s"])
            times["warm"].append(t)
            outputs.add(out)
            times["import"].append(
                _time([sys.executable, "-c", "import jax"], env, cfg["timeout_s"])[0]
            )
            times["backend"].append(
                _time(
                    [sys.executable, "-c", "import jax; jax.numpy.ones(1)"], env, cfg["timeout_s"]
                )[0]
            )
    med = {k: statistics.median(v) for k, v in times.items()}
    target = cfg["target_s"]
    rows = [
        _bench.row("python -c 'import jax' (floor)", med["import"]),
        _bench.row("import jax + backend start (floor)", med["backend"]),
        _bench.row(
            "centralpath predict, cold (empty cache)",
            med["cold"],
            baseline=target,
            target=1.0,
            note=f"ratio = {target:g} s target / time",
        ),
        _bench.row(
            "centralpath predict, repeat (same cache dir)",
            med["warm"],
            baseline=target,
            target=1.0,
            note=f"ratio = {target:g} s target / time",
        ),
    ]
    assert len(outputs) == 1, "predict printed different tables in different runs"
    return {
        "name": "cold_start",
        "rows": rows,
        "checks": {"runs": cfg["runs"], **{f"median_{k}_s": v for k, v in med.items()}},
    }


if __name__ == "__main__":
    _bench.standalone(__doc__)
    print(_bench.report(main()))
