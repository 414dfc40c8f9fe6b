"""Benchmark: analysis at scale (streamed class statistics) and simulation start-up.

In one run, on features files of n samples, p units, C classes and K float32 checkpoints
(written chunk by chunk into stored `.npz` files in a temporary folder):

- peak memory of `centralpath analyze` against K: fresh processes (its own
  `resource.getrusage` maxrss), K small and large interleaved, medians; targets: the peak at
  the large K and its growth from the small one;
- per-checkpoint time of `analyze` (streamed: statistics, NC4 and every metric) against a
  same-run NumPy float64 within-class covariance of the same checkpoint (the floor: read,
  convert, centre, one Σ_W product) and against a full-batch float64 PyTorch computation of the
  same metrics (when torch is installed): interleaved rounds, medians;
- statistics file vs features file: the records of `analyze` on each (`--save-stats`), every
  key but none per sample (NC4 comes from the stored count: compared too);
- 4 host devices vs 1: `sharded_stats` of one checkpoint over a 4-device mesh in a fresh
  process (XLA_FLAGS=--xla_force_host_platform_device_count=4);
- `centralpath simulate` of the reduced UFM at C = 10, N = 5,000, p = 512 to NC1 < 1e-3, with an
  empty compilation cache: total wall time, and its start-up (the same command stopped after
  its first segment) — plus the full representation's time to its first GD step;
- a `centralpath sweep` of that configuration over `sweep_seeds` seeds (the ODE to t_end, no
  early stop, which sweeps do not have) against `simulate` of one of them with the same
  settings, interleaved, medians: the sweep's cost per configuration over simulate's.

    python experiments/bench_scale.py [--profile full|small|gpu|tiny] [--json OUT]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import _bench
import numpy as np

DEFAULTS = dict(
    n=50_000,
    p=512,
    classes=10,
    k_small=2,
    k_large=10,
    rss_runs=3,
    time_repeats=3,
    simulate=True,
    sim_per_class=5000,
    sim_dim=512,
    sim_t_end=2000.0,
    sim_runs=1,
    full_startup=True,
    torch=True,
    target_rss_mb=800.0,
    target_growth=0.05,
    target_ratio=1.5,
    target_sim_s=10.0,
    sweep=True,
    sweep_seeds=4,
    sweep_runs=3,
    target_sweep_ratio=1.2,
    timeout_s=1800,
)

# ------------------------------------------------------------------ files


def write_features(path: Path, K: int, n: int, p: int, C: int, seed: int = 0) -> None:
    """A stored features file written checkpoint by checkpoint (never K·n·p in memory):
    imbalanced classes whose means separate more at every checkpoint, float32 features,
    float64 W and b, epochs, weight decay."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n)
    labels[:C] = np.arange(C)
    centres = rng.standard_normal((C, p)).astype(np.float32)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("features.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_2_0(
                fh, {"descr": "<f4", "fortran_order": False, "shape": (K, n, p)}
            )
            for k in range(K):
                H = rng.standard_normal((n, p), dtype=np.float32)
                H += np.float32(0.5 * (k + 1)) * centres[labels]
                fh.write(H.tobytes())
        small = {
            "labels": labels.astype(np.int64),
            "W": rng.standard_normal((K, C, p)) * 0.1,
            "b": rng.standard_normal((K, C)) * 0.1,
            "epochs": np.arange(K, dtype=np.float64) * 10,
            "weight_decay": np.float64(5e-4),
            "num_classes": np.int64(C),
        }
        for key, value in small.items():
            with zf.open(f"{key}.npy", "w") as fh:
                np.lib.format.write_array(fh, value, allow_pickle=False)


# ------------------------------------------------------------------ children

RSS_CHILD = """
import resource, sys
from centralpath.cli import main
code = main(["analyze", sys.argv[1], "--quiet"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
raise SystemExit(code)
"""

DEVICES_CHILD = """
import json, sys
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
from jax.sharding import Mesh
import centralpath as cp
src = cp.open_source(sys.argv[1])
H = np.asarray(src.features.rows(0, 0, src.num_samples), np.float64)
W = src.W.block(0)
b = src.meta.b[0]
out = {}
for d in (1, 4):
    mesh = Mesh(np.asarray(jax.devices()[:d]), ("samples",))
    acc = cp.sharded_stats(H, src.meta.labels, src.num_classes, mesh=mesh, W=W, b=b).to_numpy()
    out[d] = acc
diff = max(
    float(np.max(np.abs(a - c)) / np.max(np.abs(c)))
    for a, c in ((out[4].means, out[1].means), (out[4].sigma_w(), out[1].sigma_w()))
)
print(json.dumps({"devices": len(jax.devices()), "rel_diff": diff,
                  "nc4_equal": bool(out[4].nc4() == out[1].nc4())}))
"""


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_bench.ROOT), env.get("PYTHONPATH", "")]).strip(
        os.pathsep
    )
    env.update(extra)
    return env


def _run(cmd, env, timeout) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )
    return elapsed, proc.stdout


# ------------------------------------------------------------------ baselines


def numpy_within_class_covariance(src, k: int, labels: np.ndarray, C: int) -> np.ndarray:
    """What a user writes in NumPy: the checkpoint as float64, class means, Σ_W."""
    X = np.asarray(src.features.rows(k, 0, src.num_samples), dtype=np.float64)
    one_hot = np.zeros((X.shape[0], C))
    one_hot[np.arange(X.shape[0]), labels] = 1.0
    M = (one_hot.T @ X) / one_hot.sum(0)[:, None]
    D = X - M[labels]
    return D.T @ D / X.shape[0]


def torch_metrics(src, k: int, labels: np.ndarray, C: int, lam: float) -> dict:
    """The same metrics, full batch, float64 PyTorch: Σ_W, NC1 (paper), NC2, NC3, NC4, ω_j on
    the live directions of Σ_T, the ridge least-squares classifier and the loss terms."""
    import torch

    # Loaded into memory, as a user's script holds it (torch refuses read-only maps).
    H = torch.from_numpy(np.array(src.features.rows(k, 0, src.num_samples))).double()
    y = torch.from_numpy(labels)
    W = torch.from_numpy(src.W.block(k))
    b = torch.from_numpy(np.asarray(src.meta.b[k], np.float64))
    n, p = H.shape
    counts = torch.bincount(y, minlength=C).double()
    pi = counts / n
    M = torch.zeros(C, p, dtype=torch.float64).index_add_(0, y, H) / counts[:, None]
    D = H - M[y]
    Sw = D.T @ D / n
    mu = pi @ M
    Mbar = (M - mu).T
    Sb = Mbar @ Mbar.T / C
    s, V = torch.linalg.eigh(Sb)
    keep = s > 1e-10 * s.max()
    nc1 = (torch.einsum("pk,pq,qk->k", V, Sw, V)[keep] / s[keep]).sum() / C
    norms = Mbar.norm(dim=0)
    unit = Mbar / norms
    off = ~torch.eye(C, dtype=torch.bool)
    nc2 = norms.std() / norms.mean()
    angle = ((unit.T @ unit) + 1.0 / (C - 1)).abs()[off].mean()
    nc3 = ((W.T / W.norm() - Mbar / Mbar.norm()) ** 2).sum()
    logits = H @ W.T + b
    nearest = (-2.0 * H @ M.T + (M**2).sum(1)).argmin(1)
    nc4 = (logits.argmax(1) != nearest).double().mean()
    St = Sw + (Mbar * pi) @ Mbar.T
    t, U = torch.linalg.eigh(St)
    live = t > 1e-10 * t.max()
    T = U[:, live] / t[live].sqrt()
    w, Q = torch.linalg.eigh(T.T @ Sw @ T)
    omega = torch.linalg.svdvals((Q / w.sqrt()).T @ (T.T @ Mbar))[: C - 1]
    shrink = 1.0 / (1.0 + lam)
    K = St + lam * shrink * torch.outer(mu, mu) + lam * torch.eye(p, dtype=torch.float64)
    R = pi[:, None] * M - shrink * torch.outer(pi, mu)
    W_ls = torch.linalg.solve(K, R.T).T
    b_ls = shrink * (pi - W_ls @ mu)
    Y = torch.nn.functional.one_hot(y, C).double()
    loss = 0.5 * ((logits - Y) ** 2).sum(1).mean() + 0.5 * lam * (W.pow(2).sum() + b.pow(2).sum())
    loss_nc1 = 0.5 * torch.trace(W_ls @ (Sw + lam * torch.eye(p, dtype=torch.float64)) @ W_ls.T)
    loss_nc1 = loss_nc1 + 0.5 * lam * b_ls.pow(2).sum()
    residual = W_ls @ M.T + b_ls[:, None] - torch.eye(C, dtype=torch.float64)
    loss_nc23 = 0.5 * (residual.pow(2).sum(0) * pi).sum()
    return {
        "nc1": float(nc1),
        "nc2": float(nc2),
        "angle": float(angle),
        "nc3": float(nc3),
        "nc4": float(nc4),
        "snr": omega.numpy(),
        "loss": float(loss),
        "loss_nc1": float(loss_nc1),
        "loss_nc23": float(loss_nc23),
    }


def _worst(a: list[dict], b: list[dict]) -> float:
    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        for key, x in ra.items():
            y = rb[key]
            if x is None or isinstance(x, bool):
                if x != y:
                    return float("inf")
                continue
            x, y = np.asarray(x, float), np.asarray(y, float)
            worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(np.abs(x), 1e-300))))
    return worst


# ------------------------------------------------------------------ simulation


def _simulate_cmd(out: Path, cfg: dict, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "centralpath.cli",
        "simulate",
        "--flow",
        "ufm",
        "--classes",
        "10",
        "--per-class",
        str(cfg["sim_per_class"]),
        "--dim",
        str(cfg["sim_dim"]),
        "--out",
        str(out),
        "--overwrite",
        "--no-figures",
        "--quiet",
        *args,
    ]


def simulation_rows(cfg: dict, work: Path) -> tuple[list[dict], dict]:
    reduced = ["--methods", "ode", "--nc1-target", "1e-3", "--t-end", str(cfg["sim_t_end"])]
    first = [*reduced, "--num-saves", "2", "--t-end", "1e-3"]  # start-up: one tiny segment
    times: dict[str, list[float]] = {"total": [], "startup": [], "full": []}
    for _ in range(cfg["sim_runs"]):
        for name, args in (("startup", first), ("total", reduced)):
            with tempfile.TemporaryDirectory() as cache:  # an empty compilation cache
                env = _env(XDG_CACHE_HOME=cache)
                t, _ = _run(_simulate_cmd(work / f"sim-{name}", cfg, *args), env, cfg["timeout_s"])
            times[name].append(t)
        if cfg["full_startup"]:
            full = ["--representation", "full", "--methods", "gd", "--eta", "0.05"]
            full += ["--t-end", "0.05", "--num-saves", "2"]  # one step
            with tempfile.TemporaryDirectory() as cache:
                env = _env(XDG_CACHE_HOME=cache)
                t, _ = _run(_simulate_cmd(work / "sim-full", cfg, *full), env, cfg["timeout_s"])
            times["full"].append(t)
    results = json.loads((work / "sim-total" / "metadata.json").read_text())
    nc1 = np.load(work / "sim-total" / "results.npz")["ode/nc1"]
    med = {k: statistics.median(v) for k, v in times.items() if v}
    target = cfg["target_sim_s"]
    size = f"C = 10, N = {cfg['sim_per_class']}, p = {cfg['sim_dim']}"
    rows = [
        _bench.row(
            f"simulate reduced UFM to NC1 < 1e-3, {size}, empty cache (total)",
            med["total"],
            baseline=target,
            target=1.0,
            note=f"ratio = {target:g} s target / time",
        ),
        _bench.row("  of which start-up (the same command, one tiny segment)", med["startup"]),
    ]
    if "full" in med:
        rows.append(
            _bench.row(
                f"simulate full UFM, {size}: start-up and one GD step",
                med["full"],
                baseline=60.0,
                target=1.0,
                note="ratio = 60 s / time",
            )
        )
    checks = {
        "sim_final_nc1": float(nc1[-1]),
        "sim_wall_recorded_s": results.get("wall_time_s"),
        **{f"sim_{k}_s": v for k, v in med.items()},
    }
    assert nc1[-1] < 1e-3, f"the simulation stopped at NC1 = {nc1[-1]}"
    return rows, checks


def _sweep_file(path: Path, cfg: dict) -> Path:
    path.write_text(
        "\n".join(
            [
                'flow = "ufm"',
                "classes = 10",
                f"per_class = {cfg['sim_per_class']}",
                f"dim = {cfg['sim_dim']}",
                'methods = ["ode"]',
                f"t_end = {cfg['sim_t_end']}",
                'record = "all"',
                "[sweep]",
                f"seeds = {cfg['sweep_seeds']}",
            ]
        )
        + "\n"
    )
    return path


def sweep_rows(cfg: dict, work: Path) -> tuple[list[dict], dict]:
    """The sweep's cost per configuration against simulate of one configuration (the same
    solver and segments: one solve path), interleaved in fresh processes with empty caches."""
    seeds = int(cfg["sweep_seeds"])
    spec = _sweep_file(work / "sweep.toml", cfg)
    sim = ["--methods", "ode", "--t-end", str(cfg["sim_t_end"])]
    sweep = [sys.executable, "-m", "centralpath.cli", "sweep", str(spec), "--overwrite"]
    times: dict[str, list[float]] = {"simulate": [], "sweep": []}
    for _ in range(cfg["sweep_runs"]):
        for name in ("simulate", "sweep"):
            with tempfile.TemporaryDirectory() as cache:
                env = _env(XDG_CACHE_HOME=cache)
                if name == "simulate":
                    cmd = _simulate_cmd(work / "sweep-sim", cfg, *sim)
                else:
                    cmd = [*sweep, "--out", str(work / "sweep-run")]
                t, _ = _run(cmd, env, cfg["timeout_s"])
            times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_config = med["sweep"] / seeds
    size = f"C = 10, N = {cfg['sim_per_class']}, p = {cfg['sim_dim']}, t_end = {cfg['sim_t_end']:g}"
    rows = [
        _bench.row(f"simulate reduced UFM ODE, {size}, one seed", med["simulate"]),
        _bench.row(
            f"sweep of it over {seeds} seeds, per configuration",
            per_config,
            baseline=med["simulate"] * cfg["target_sweep_ratio"],
            target=1.0,
            note=f"ratio = {cfg['target_sweep_ratio']:g} x simulate / sweep per configuration; "
            f"sweep / simulate = {per_config / med['simulate']:.2f}",
        ),
    ]
    checks = {
        "sweep_per_config_over_simulate": per_config / med["simulate"],
        "sweep_times_s": times["sweep"],
        "sweep_simulate_times_s": times["simulate"],
    }
    return rows, checks


# ------------------------------------------------------------------ main


def main(cfg: dict | None = None) -> dict:
    cfg = _bench.merged(DEFAULTS, cfg)
    _bench.enable_x64()
    import centralpath as cp
    from centralpath.analysis import analyze

    n, p, C = cfg["n"], cfg["p"], cfg["classes"]
    rows: list[dict] = []
    checks: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = {K: work / f"features-{K}.npz" for K in (cfg["k_small"], cfg["k_large"])}
        for K, path in files.items():
            write_features(path, K, n, p, C)
        gib = files[cfg["k_large"]].stat().st_size / 2**30

        # Peak memory against K: fresh processes, interleaved.
        rss: dict[int, list[float]] = {K: [] for K in files}
        for _ in range(cfg["rss_runs"]):
            for K, path in files.items():
                _, out = _run(
                    [sys.executable, "-c", RSS_CHILD, str(path)], _env(), cfg["timeout_s"]
                )
                rss[K].append(int(out.strip().splitlines()[-1]) / 1024)  # KiB -> MiB
        small, large = (statistics.median(rss[K]) for K in (cfg["k_small"], cfg["k_large"]))
        growth = large / small - 1
        rows += [
            _bench.row(f"analyze peak RSS, K = {cfg['k_small']} (MiB)", None, value=small),
            _bench.row(
                f"analyze peak RSS, K = {cfg['k_large']} ({gib:.2f} GiB file; MiB)",
                None,
                value=large,
                note=f"target <= {cfg['target_rss_mb']:g}: {'met' if large <= cfg['target_rss_mb'] else 'NOT met'}",
            ),
            _bench.row(
                f"analyze peak RSS growth K = {cfg['k_small']} -> {cfg['k_large']}",
                None,
                value=max(growth, 0.0),
                note=f"{100 * growth:+.1f}%; target <= {100 * cfg['target_growth']:g}%: "
                f"{'met' if growth <= cfg['target_growth'] else 'NOT met'}",
            ),
        ]
        checks.update(rss_small_mib=small, rss_large_mib=large, rss_growth=growth)

        # Per-checkpoint time: analyze vs NumPy Σ_W vs PyTorch metrics, interleaved.
        path = files[cfg["k_small"]]
        K = cfg["k_small"]
        src = cp.open_source(path)
        labels = src.meta.labels
        lam = src.weight_decay
        fns = {
            "analyze": lambda: analyze(cp.open_source(path)),
            "numpy": lambda: [numpy_within_class_covariance(src, k, labels, C) for k in range(K)],
        }
        have_torch = False
        if cfg["torch"]:
            try:
                import torch

                have_torch = True
                fns["torch"] = lambda: [torch_metrics(src, k, labels, C, lam) for k in range(K)]
            except ImportError:
                pass
        med = _bench.interleaved_medians(fns, repeats=cfg["time_repeats"], warmup=1)
        per = {name: t / K for name, t in med.items()}
        rows += [
            _bench.row(f"numpy float64 Sigma_W per checkpoint (n = {n}, p = {p})", per["numpy"]),
            _bench.row(
                "analyze per checkpoint (streamed; all metrics, NC4) vs the numpy Sigma_W",
                per["analyze"],
                baseline=per["numpy"],
                target=1 / cfg["target_ratio"],
                note=f"ratio = numpy / analyze; target >= 1/{cfg['target_ratio']:g}",
            ),
        ]
        if have_torch:
            rows.append(
                _bench.row(
                    "analyze per checkpoint vs full-batch float64 torch metrics",
                    per["analyze"],
                    baseline=per["torch"],
                    target=1.0,
                    note=f"torch {per['torch']:.3g} s ({torch.get_num_threads()} threads)",
                )
            )
        checks.update({f"per_checkpoint_{k}_s": v for k, v in per.items()})

        # Correctness on both sides of every ratio.
        records = []
        stats_path = work / "stats.npz"
        from centralpath._stream import StatsWriter

        with StatsWriter(stats_path, C, p, K) as writer:
            records = analyze(cp.open_source(path), on_checkpoint=writer.add)
            writer.close(weight_decay=lam)
        from_stats = analyze(cp.open_source(stats_path))
        agreement = _worst(records, from_stats)
        sigma = numpy_within_class_covariance(src, 0, labels, C)
        ours = cp.open_source(path).checkpoint(0).acc.sigma_w()
        sigma_diff = float(np.max(np.abs(ours - sigma)) / np.max(np.abs(sigma)))
        rows.append(
            _bench.row(
                "statistics file vs features file, every record key (max rel diff)",
                None,
                value=agreement,
                note=f"target <= 1e-12; stats file {stats_path.stat().st_size / 2**20:.1f} MiB "
                f"vs {path.stat().st_size / 2**20:.0f} MiB of features",
            )
        )
        checks.update(stats_vs_features=agreement, sigma_w_vs_numpy=sigma_diff)
        assert agreement <= 1e-12, agreement
        assert sigma_diff <= 1e-12, sigma_diff
        if have_torch:
            t = torch_metrics(src, 0, labels, C, lam)
            r = records[0]
            torch_diff = max(
                abs(t[key] - r[key]) / abs(r[key])
                for key in ("nc1", "nc3", "nc4", "loss", "loss_nc1")
            )
            torch_diff = max(torch_diff, float(np.max(np.abs(t["snr"] - r["snr"]) / r["snr"])))
            checks["torch_vs_analyze"] = torch_diff
            assert torch_diff <= 1e-8, torch_diff

        # 4 host devices vs 1.
        _, out = _run(
            [sys.executable, "-c", DEVICES_CHILD, str(path)],
            _env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
            cfg["timeout_s"],
        )
        devices = json.loads(out.strip().splitlines()[-1])
        assert devices["devices"] == 4 and devices["nc4_equal"], devices
        assert devices["rel_diff"] <= 1e-12, devices
        rows.append(
            _bench.row(
                "4 host devices vs 1: sharded statistics (max rel diff)",
                None,
                value=devices["rel_diff"],
                note="target <= 1e-12; NC4 count equal",
            )
        )
        checks["devices_4_vs_1"] = devices["rel_diff"]

        if cfg["simulate"]:
            sim_rows, sim_checks = simulation_rows(cfg, work)
            rows += sim_rows
            checks.update(sim_checks)
        if cfg["sweep"]:
            sweep_rows_, sweep_checks = sweep_rows(cfg, work)
            rows += sweep_rows_
            checks.update(sweep_checks)
    return {"name": "scale", "rows": rows, "checks": checks}


if __name__ == "__main__":
    import argparse

    import bench_all

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full", choices=sorted(bench_all.PROFILES))
    parser.add_argument("--json", metavar="OUT", help="also write the rows and checks as JSON")
    args = parser.parse_args()
    result = main(bench_all.PROFILES[args.profile].get("scale", {}))
    print(_bench.report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float) + "\n")
