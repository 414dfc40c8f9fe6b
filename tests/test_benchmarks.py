"""Each benchmark's `main(cfg)` at the `tiny` sizes of bench_all.py: it runs, and its
correctness assertions (same answers on both sides of every ratio) hold. Wall times are never
checked. The benchmarks that start subprocesses (sharding over host devices, the cold start,
float32 in a fresh process) are in the slow tier; tests/test_sweep.py covers sharding fast."""

import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import bench_all  # noqa: E402

TINY = bench_all.PROFILES["tiny"]
SUBPROCESS = {"sharding", "cold_start", "precision"}


def _params():
    for name in bench_all.BENCHMARKS:
        marks = [pytest.mark.slow] if name in SUBPROCESS else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params()))
def test_benchmark_runs_and_its_checks_hold(name):
    (result,) = bench_all.run("tiny", [name])
    assert result["rows"], name
    for row in result["rows"]:
        assert row["seconds"] is None or row["seconds"] > 0
        assert row["value"] is None or row["value"] >= 0
    assert "rows" in result and isinstance(result["checks"], dict)
    table = bench_all.combined_table([result])
    assert all(r["name"] in table for r in result["rows"])


def test_reduced_flows_agree_with_the_full_ones():
    import bench_reduced

    checks = bench_reduced.main(TINY["reduced"])["checks"]
    assert checks["central_path_rel_err"] < 1e-9 and checks["ufm_rel_err"] < 1e-9


def test_bench_all_rejects_an_unknown_benchmark(capsys):
    with pytest.raises(SystemExit) as e:
        bench_all.main(["--only", "nope"])
    assert e.value.code == 2
