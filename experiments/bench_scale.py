"""Benchmark: analysis at scale (streamed class statistics) and simulation start-up.

In one run, on features files of n samples, p units, C classes and K float32 checkpoints
(written chunk by chunk into stored `.npz` files in a temporary folder):

- peak memory of `centralpath analyze` against K: fresh processes (its own
  `resource.getrusage` maxrss), K small and large interleaved, medians; targets: the peak at
  the large K and its growth from the small one;
- per-checkpoint time of `analyze` (streamed: statistics, NC4 and every metric) at 1 thread
  and at the thread count the user allows, side by side with, in the same interleaved rounds
  (medians): the floor of one pass — read the checkpoint, convert it to float64 and one SYRK,
  at the same thread count; the physical limit from the measured GEMM rate and memory
  bandwidth; a full-batch float64 PyTorch computation of the same metrics at 1 thread and at
  its default thread count (when torch is installed); and the accumulation pattern of
  rhubarbwu/neural-collapse in float64 (per-class running sums of the features over batches,
  then a second pass of outer products of the deviations and the nearest-mean decisions).
  Per checkpoint = the in-process time of analysing the K-checkpoint file / K, after a warm-up
  call (imports and compilation happen once per process, as in a whole run; opening the file
  and grouping its labels are charged to its checkpoints). The whole-process difference
  (t(K large) − t(K small)) / (K large − K small) of the memory runs is printed beside it;
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

    python experiments/bench_scale.py [--profile full|small|gpu|tiny] [--scale S] [--json OUT]

`--scale S` multiplies the number of samples n (0.1 for a quick look at the paper's p and C).
The machine's load (os.getloadavg) is printed with the table: on a shared machine, compare the
ratios of one run, not times across runs.
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
    target_ratio=1.3,
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
    """Σ_W as a user writes it in NumPy (the correctness check of the streamed one)."""
    X = np.asarray(src.features.rows(k, 0, src.num_samples), dtype=np.float64)
    one_hot = np.zeros((X.shape[0], C))
    one_hot[np.arange(X.shape[0]), labels] = 1.0
    M = (one_hot.T @ X) / one_hot.sum(0)[:, None]
    D = X - M[labels]
    return D.T @ D / X.shape[0]


def syrk_floor(src, k: int, rows: int, threads: int) -> np.ndarray:
    """The floor of one pass over a checkpoint: read each chunk, convert it to float64 and add
    its Xᵀ X by one SYRK on `threads` threads (no centring, no class sums, no metrics)."""
    from scipy.linalg.blas import dsyrk

    from centralpath._run.runtime import large_products, single_threaded_blas

    n, p = src.num_samples, src.dim
    X = np.empty((min(rows, n), p))
    gram = np.zeros((p, p), order="F")
    with single_threaded_blas(), large_products(threads):
        for start in range(0, n, rows):
            chunk = src.features.rows(k, start, start + rows)
            x = X[: chunk.shape[0]]
            np.copyto(x, chunk, casting="unsafe")
            gram = dsyrk(1.0, x.T, beta=1.0, c=gram, trans=0, lower=0, overwrite_c=1)
    return gram


def rhubarbwu_pattern(src, k: int, labels: np.ndarray, C: int, rows: int) -> dict:
    """The accumulation pattern of rhubarbwu/neural-collapse, written here in float64 PyTorch:
    a first pass of per-class running sums (one-hot product per batch), then a second pass
    adding each batch's (h − μ_y)ᵀ(h − μ_y) to a running p×p sum and counting where the
    classifier and the nearest class mean disagree."""
    import torch

    n, p = src.num_samples, src.dim
    W = torch.from_numpy(src.W.block(k))
    b = torch.from_numpy(np.asarray(src.meta.b[k], np.float64))
    y_all = torch.from_numpy(labels)
    totals = torch.zeros(C, p, dtype=torch.float64)
    counts = torch.zeros(C, dtype=torch.float64)

    def batches():
        for start in range(0, n, rows):
            h = torch.from_numpy(np.array(src.features.rows(k, start, start + rows))).double()
            yield h, y_all[start : start + rows]

    for h, y in batches():
        one_hot = torch.nn.functional.one_hot(y, C).double()
        totals += one_hot.T @ h
        counts += one_hot.sum(0)
    M = totals / counts[:, None]
    scatter = torch.zeros(p, p, dtype=torch.float64)
    mismatched = 0
    for h, y in batches():
        diff = h - M[y]
        scatter += diff.T @ diff
        nearest = ((h * h).sum(1)[:, None] + (M * M).sum(1)[None, :] - 2 * h @ M.T).argmin(1)
        mismatched += int(((h @ W.T + b).argmax(1) != nearest).sum())
    return {"sigma_w": scatter / n, "means": M, "nc4": mismatched / n}


def machine_rates(n: int, p: int, budget_s: float = 3.0) -> dict:
    """The single-thread GEMM rate (a square float64 product of the checkpoint's width, flop/s)
    and the memory bandwidth (reading a float32 array larger than the caches, bytes/s): what
    the physical limit of one checkpoint is made of."""
    from centralpath._run.runtime import single_threaded_blas

    size = max(256, min(1024, p))
    A = np.random.default_rng(0).standard_normal((size, size))
    big = np.ones(max(1, min(n * p, 64 << 20)), np.float32)  # ≥ 256 MiB at paper scale
    with single_threaded_blas():
        gemm = _bench.median_time(lambda: A @ A, repeats=5, budget_s=budget_s)
    read = _bench.median_time(lambda: big.sum(dtype=np.float64), repeats=5, budget_s=budget_s)
    return {"gemm_flops": 2 * size**3 / gemm, "read_bytes": big.nbytes / read}


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


def per_checkpoint_rows(cfg: dict, path: Path, src, K: int, proc_times: dict):
    """The side-by-side table of one checkpoint's cost (module docstring)."""
    import centralpath as cp
    from centralpath._run.runtime import THREADS_ENV, blas_threads
    from centralpath.measurement._stream import chunk_rows
    from centralpath.measurement.analysis import analyze

    n, p, C = src.num_samples, src.dim, src.num_classes
    labels, lam = src.meta.labels, src.weight_decay
    rows = chunk_rows(p)
    allowed = blas_threads()  # the user's (CENTRALPATH_BLAS_THREADS, OPENBLAS_NUM_THREADS, cores)

    def analyze_at(threads):
        def run():
            os.environ[THREADS_ENV] = str(threads)
            try:
                return analyze(cp.open_source(path))
            finally:
                os.environ[THREADS_ENV] = str(allowed)

        return run

    fns = {
        "analyze_1": analyze_at(1),
        "floor_1": lambda: [syrk_floor(src, k, rows, 1) for k in range(K)],
    }
    if allowed > 1:
        fns["analyze_n"] = analyze_at(allowed)
        fns["floor_n"] = lambda: [syrk_floor(src, k, rows, allowed) for k in range(K)]
    torch_threads = None
    if cfg["torch"]:
        try:
            import torch

            torch_threads = torch.get_num_threads()  # its default (OMP_NUM_THREADS or cores)

            def torch_at(threads):
                def run():
                    torch.set_num_threads(threads)
                    try:
                        return [torch_metrics(src, k, labels, C, lam) for k in range(K)]
                    finally:
                        torch.set_num_threads(torch_threads)

                return run

            fns["torch_1"] = torch_at(1)
            if torch_threads > 1:
                fns["torch_n"] = torch_at(torch_threads)

            def rhubarbwu():
                torch.set_num_threads(1)
                try:
                    return [rhubarbwu_pattern(src, k, labels, C, rows) for k in range(K)]
                finally:
                    torch.set_num_threads(torch_threads)

            fns["rhubarbwu_1"] = rhubarbwu
        except ImportError:
            pass
    # CPU seconds of the process beside the wall time: on a machine whose other work leaves
    # the threads unscheduled, CPU time per checkpoint says what they cost, and what an idle
    # machine's wall time would approach.
    cpu: dict[str, list[float]] = {name: [] for name in fns}

    def with_cpu(name, fn):
        def run():
            t = time.process_time()
            out = fn()
            cpu[name].append(time.process_time() - t)
            return out

        return run

    load_before = os.getloadavg()
    med = _bench.interleaved_medians(
        {name: with_cpu(name, fn) for name, fn in fns.items()},
        repeats=cfg["time_repeats"],
        warmup=1,
    )
    load_after = os.getloadavg()
    per = {name: t / K for name, t in med.items()}
    per_cpu = {name: statistics.median(ts[1:] or ts) / K for name, ts in cpu.items()}
    rates = machine_rates(n, p)
    syrk_flops, nc4_flops, read_bytes = n * p * p, 2 * n * p * 2 * C, 4 * n * p
    physical = (syrk_flops + nc4_flops) / rates["gemm_flops"] + read_bytes / rates["read_bytes"]
    floor = per["floor_1"]
    size = f"n = {n}, p = {p}, C = {C}"
    out = [
        _bench.row(
            f"physical limit per checkpoint, 1 thread ({size}): SYRK + NC4 flops, float32 read",
            physical,
            note=f"at the measured GEMM {rates['gemm_flops'] / 1e9:.1f} GFLOP/s and read "
            f"{rates['read_bytes'] / 1e9:.1f} GB/s",
        ),
        _bench.row(
            "floor per checkpoint, 1 thread: one read + float64 + one SYRK",
            floor,
            note="the floor every ratio below is taken against",
        ),
        _bench.row(
            "analyze per checkpoint, 1 thread (statistics, NC4, every metric)",
            per["analyze_1"],
            baseline=floor,
            target=1 / cfg["target_ratio"],
            note=f"ratio = floor / analyze; target: analyze <= {cfg['target_ratio']:g}x the "
            f"floor; {per['analyze_1'] / physical:.2f}x the physical limit",
        ),
    ]
    checks = {f"per_checkpoint_{k}_s": v for k, v in per.items()}
    checks.update({f"cpu_per_checkpoint_{k}_s": v for k, v in per_cpu.items()})
    checks.update(
        physical_limit_s=physical,
        gemm_gflops=rates["gemm_flops"] / 1e9,
        read_gbytes_s=rates["read_bytes"] / 1e9,
        analyze_vs_floor=per["analyze_1"] / floor,
        load_before=list(load_before),
        load_after=list(load_after),
        blas_threads_allowed=allowed,
    )
    if allowed > 1:
        out += [
            _bench.row(
                f"floor per checkpoint, {allowed} BLAS threads in the SYRK",
                per["floor_n"],
                baseline=floor,
                note="ratio = its 1-thread time / this",
            ),
            _bench.row(
                f"analyze per checkpoint, {allowed} threads (chunks spread over them)",
                per["analyze_n"],
                baseline=per["analyze_1"],
                target=1 / 0.6,
                note=f"ratio = analyze 1 thread / this; target >= {1 / 0.6:.3g} on an idle "
                f"machine; {per['analyze_n'] / per['floor_n']:.2f}x the {allowed}-thread floor",
            ),
            _bench.row(
                f"analyze CPU seconds per checkpoint, 1 / {allowed} threads",
                per_cpu["analyze_n"],
                value=per_cpu["analyze_1"],
                note=f"value = 1 thread, seconds = {allowed} threads: their ratio "
                f"{per_cpu['analyze_n'] / per_cpu['analyze_1']:.2f} is what the threads add in "
                "work; wall 1 thread / CPU 1 thread = "
                f"{per['analyze_1'] / per_cpu['analyze_1']:.2f} (1 on an idle machine)",
            ),
        ]
        checks["analyze_threads_ratio"] = per["analyze_n"] / per["analyze_1"]
    if "torch_1" in per:
        out.append(
            _bench.row(
                "torch full-batch float64, same metrics, 1 thread",
                per["torch_1"],
                baseline=per["analyze_1"],
                target=None,
                note=f"ratio = analyze / torch (< 1: analyze faster); "
                f"{per['torch_1'] / floor:.2f}x the floor",
            )
        )
        if "torch_n" in per:
            out.append(
                _bench.row(
                    f"torch full-batch float64, {torch_threads} threads (its default)",
                    per["torch_n"],
                    baseline=per.get("analyze_n", per["analyze_1"]),
                    note=f"ratio = analyze at {allowed} thread(s) / torch",
                )
            )
        out.append(
            _bench.row(
                "rhubarbwu/neural-collapse pattern, float64 torch, 1 thread (no metrics)",
                per["rhubarbwu_1"],
                baseline=per["analyze_1"],
                note=f"ratio = analyze / this; {per['rhubarbwu_1'] / floor:.2f}x the floor",
            )
        )
        checks["analyze_vs_torch_1"] = per["analyze_1"] / per["torch_1"]
    (k_small, small_t), (k_large, large_t) = sorted(proc_times.items())
    if k_large > k_small and small_t and large_t:
        whole = (statistics.median(large_t) - statistics.median(small_t)) / (k_large - k_small)
        out.append(
            _bench.row(
                f"analyze per checkpoint, whole processes (t(K={k_large}) - t(K={k_small}))"
                f" / {k_large - k_small}, 1 thread",
                whole if whole > 0 else None,  # a tiny file: the difference is noise
                baseline=floor,
                note=f"ratio = floor / this; medians of {len(small_t)} interleaved runs (the "
                "memory runs)" + ("" if whole > 0 else f"; {whole:.2g} s: within the noise"),
            )
        )
        checks["per_checkpoint_whole_process_s"] = whole
    return out, checks


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
    from centralpath.measurement.analysis import analyze

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
        proc_times: dict[int, list[float]] = {K: [] for K in files}
        for _ in range(cfg["rss_runs"]):
            for K, path in files.items():
                # One BLAS thread: the whole-process time is compared with the in-process one.
                elapsed, out = _run(
                    [sys.executable, "-c", RSS_CHILD, str(path)],
                    _env(CENTRALPATH_BLAS_THREADS="1"),
                    cfg["timeout_s"],
                )
                rss[K].append(int(out.strip().splitlines()[-1]) / 1024)  # KiB -> MiB
                proc_times[K].append(elapsed)
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

        # Per-checkpoint time: analyze vs the floors and the other ways, interleaved.
        path = files[cfg["k_small"]]
        K = cfg["k_small"]
        src = cp.open_source(path)
        labels = src.meta.labels
        lam = src.weight_decay
        timing_rows, timing_checks = per_checkpoint_rows(cfg, path, src, K, proc_times)
        rows += timing_rows
        checks.update(timing_checks)

        # Correctness on both sides of every ratio.
        records = []
        stats_path = work / "stats.npz"
        from centralpath.measurement._stream import StatsWriter

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
        have_torch = "per_checkpoint_torch_1_s" in checks
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
            from centralpath.measurement._stream import chunk_rows

            rb = rhubarbwu_pattern(src, 0, labels, C, chunk_rows(p))
            rb_diff = float(np.max(np.abs(rb["sigma_w"].numpy() - sigma)) / np.max(np.abs(sigma)))
            checks["rhubarbwu_vs_numpy_sigma_w"] = rb_diff
            assert rb_diff <= 1e-12 and rb["nc4"] == r["nc4"], (rb_diff, rb["nc4"], r["nc4"])

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
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the number of samples n (default 1)"
    )
    parser.add_argument("--no-simulate", action="store_true", help="leave out the simulation rows")
    args = parser.parse_args()
    cfg = dict(bench_all.PROFILES[args.profile].get("scale", {}))
    cfg["n"] = max(cfg.get("n", DEFAULTS["n"]) * args.scale, 4 * cfg.get("classes", 10))
    cfg["n"] = int(cfg["n"])
    if args.no_simulate:
        cfg["simulate"] = False
    result = main(cfg)
    print(_bench.report(result))
    before, after = result["checks"]["load_before"], result["checks"]["load_after"]
    print(
        f"machine load (1, 5, 15 min) before the timed rounds {before[0]:.2f} {before[1]:.2f} "
        f"{before[2]:.2f}, after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} on "
        f"{os.cpu_count()} cores"
        + (
            ": above the core count, other work shared them"
            if max(before + after) > (os.cpu_count() or 1)
            else ""
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float) + "\n")
