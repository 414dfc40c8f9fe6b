"""Every benchmark in one run, one combined table (ratios measured within each benchmark).

    python experiments/bench_all.py [--profile full|small|gpu|tiny] [--only NAME,NAME] [--json OUT]
                                    [--markdown [OUT]]

`--markdown` writes the table as the documentation's performance table
(docs/reference/performance-table.md, included by docs/reference/performance.md): that page's
numbers come from a run of this script, never from an edit by hand.

Profiles (also `CENTRALPATH_BENCH_PROFILE`): `full` the sizes of the issue (the defaults of
each script), `small` a few minutes on 2 CPU cores, `gpu` the issue's sizes plus larger ones
for an accelerator (`bench_gpu.sh`), `tiny` the sizes of tests/test_benchmarks.py.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

import _bench

BENCHMARKS = (
    "reduced",
    "closed_form",
    "roofline",
    "ensemble",
    "sharding",
    "cold_start",
    "precision",
    "scale",
)

PROFILES: dict[str, dict[str, dict]] = {
    "full": {},
    "small": {
        "reduced": dict(per_class=500, dim=64, steps=10, repeats=3),
        "closed_form": dict(splits=((100_000, 1), (1_000, 100)), repeats=3),
        "roofline": dict(steps=20, repeats=5, matmul_n=1024, copy_mb=64),
        "ensemble": dict(seeds=200, loop_seeds=200, simulate_seeds=3, t_end=40.0),
        "sharding": dict(seeds=64, ode_seeds=16, repeats=3),
        "cold_start": dict(runs=3),
        "precision": dict(seeds=3),
        "scale": dict(
            n=10_000,
            p=128,
            k_small=2,
            k_large=6,
            rss_runs=1,
            time_repeats=2,
            sim_per_class=500,
            sim_dim=64,
        ),
    },
    "gpu": {
        "reduced": dict(per_class=10_000, dim=256, steps=50),
        "closed_form": dict(splits=((1_000_000, 1), (10_000, 100), (100, 10_000))),
        "roofline": dict(per_class=5000, dim=1024, steps=100, matmul_n=8192, copy_mb=1024),
        "ensemble": dict(seeds=10_000, loop_seeds=200, simulate_seeds=3),
        "sharding": dict(seeds=256, ode_seeds=64),
        "cold_start": dict(runs=3),
        "precision": dict(seeds=8),
        # The sizes, one run each: the whole suite must fit bench_gpu.sh's budget.
        "scale": dict(rss_runs=1, time_repeats=2),
    },
    "tiny": {
        "reduced": dict(
            classes=3, per_class=20, dim=6, steps=3, repeats=1, target_central_path=None
        ),
        "closed_form": dict(splits=((200, 1), (20, 10)), repeats=1, target=None),
        "roofline": dict(
            classes=3, per_class=20, dim=16, steps=2, block=20, repeats=1, matmul_n=64, copy_mb=1
        ),
        "ensemble": dict(
            seeds=4, loop_seeds=2, simulate_seeds=1, dim=4, t_end=4.0, repeats=1, target=None
        ),
        "sharding": dict(
            seeds=4, ode_seeds=2, dim=4, t_end=5.0, ode_t_end=2.0, repeats=1, target=None
        ),
        "cold_start": dict(runs=1, target_s=1e9),
        "precision": dict(seeds=1, t_end=1e4, ufm_t_end=10.0),
        "scale": dict(
            n=300,
            p=8,
            classes=3,
            k_small=2,
            k_large=3,
            rss_runs=1,
            time_repeats=1,
            simulate=False,
            sweep=False,
        ),
    },
}


def run(profile: str = "full", only: list[str] | None = None) -> list[dict]:
    """Run the benchmarks of a profile; return their results (each with its rows)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    results = []
    for name in only or BENCHMARKS:
        module = importlib.import_module(f"bench_{name}")
        start = time.perf_counter()
        result = module.main(PROFILES[profile].get(name, {}))
        result["wall_s"] = time.perf_counter() - start
        results.append(result)
        print(f"[{name}: {result['wall_s']:.0f} s]", file=sys.stderr, flush=True)
    return results


def combined_table(results: list[dict]) -> str:
    rows = [{**r, "name": f"{res['name']}: {r['name']}"} for res in results for r in res["rows"]]
    return _bench.table(rows)


MARKDOWN_TABLE = _bench.ROOT / "docs" / "reference" / "performance-table.md"
MARKDOWN_COLUMNS = ("name", "seconds", "compile_s", "ratio", "target", "met", "value", "note")


def markdown_table(results: list[dict], profile: str, argv: list[str]) -> str:
    """The combined table as Markdown, headed by how and where it was measured (the machine's
    load included: on a shared machine the ratios, measured in the same run, are what to read)."""
    import datetime
    import platform

    def cell(value) -> str:
        return _bench.fmt(value).replace("|", "\\|")

    rows = [{**r, "name": f"{res['name']}: {r['name']}"} for res in results for r in res["rows"]]
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    lines = [
        "<!-- Written by experiments/bench_all.py --markdown; do not edit by hand. -->",
        "",
        f"Measured {datetime.date.today().isoformat()} with "
        f"`python experiments/bench_all.py {' '.join(argv)}` (profile `{profile}`) on "
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores "
        f"(load average {load}), Python {platform.python_version()}.",
        "",
        "| " + " | ".join(MARKDOWN_COLUMNS) + " |",
        "|" + "---|" * len(MARKDOWN_COLUMNS),
        *("| " + " | ".join(cell(r.get(c)) for c in MARKDOWN_COLUMNS) + " |" for r in rows),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--profile",
        default=os.environ.get("CENTRALPATH_BENCH_PROFILE", "full"),
        choices=sorted(PROFILES),
    )
    p.add_argument(
        "--only",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        help=f"comma-separated subset of {', '.join(BENCHMARKS)}",
    )
    p.add_argument("--json", metavar="OUT", help="also write every row and check as JSON")
    p.add_argument(
        "--markdown",
        metavar="OUT",
        nargs="?",
        const=str(MARKDOWN_TABLE),
        help=f"also write the table as Markdown (default {MARKDOWN_TABLE.relative_to(_bench.ROOT)})",
    )
    args = p.parse_args(argv)
    unknown = set(args.only or ()) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(BENCHMARKS)}")
    _bench.enable_x64()
    results = run(args.profile, args.only)
    print(combined_table(results))
    for res in results:
        if res.get("checks"):
            print(f"{res['name']} checks: " + json.dumps(res["checks"], default=float))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=float)
    if args.markdown:
        text = markdown_table(results, args.profile, sys.argv[1:] if argv is None else argv)
        tmp = f"{args.markdown}.partial"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, args.markdown)  # a killed run never leaves half a table
    return 0


if __name__ == "__main__":
    sys.exit(main())
