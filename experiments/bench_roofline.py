"""Benchmark: one full-feature UFM gradient-descent step against its roofline floor.

C = 10, p = 512, N = 500 (n = 5000), float32; `steps` steps inside one compiled loop, so the
time per step excludes dispatch. One step of L_UFM (docs/theory.md §6 F1) is

    R = H Wᵀ + 1 bᵀ − Y                      2npC flops, reads H
    W ← W − η (Rᵀ H / n + λ_W W)             2npC flops, reads H
    b ← b − η (Rᵀ 1 / n + λ_b b)
    H ← (1 − ηλ_H) H − (η/n) R W             2npC + 3np flops, reads and writes H

FLOPs = 6npC + 3np (+ O(nC + pC)); compulsory bytes = read H once + write H once (+ W, b, Y)
= 2·4np + 4(nC + 2pC + 2C). The floor is max(FLOPs / F, bytes / B) with F the FLOP/s of a large
float32 matmul and B the bandwidth of a large float32 copy (read + write), both timed in the same
interleaved rounds as the steps (so a drift in the machine's speed moves floor and steps
together). Four implementations:

- `autodiff`: `UFMFlow.gd_step` (jax.grad of the loss). XLA runs the three products as separate
  passes and materialises R W: about three reads of H, one [n, p] temporary and one write.
- `fused`: the gradient written by hand, H updated as one expression (one fewer [n, p] pass).
- `blocked`: the same step as a `lax.scan` over blocks of `block` rows (the largest divisor of n up to it): each block of H is read
  once while it sits in L2, gives its logits, its share of Rᵀ H and its new rows, so H crosses
  the memory bus once each way (the compulsory traffic). Same numbers as the others up to
  float32 summation order (checked).
- `kernel`: the one pass written by hand (experiments/kernels/ufm_gd_step.cc), an XLA FFI custom
  call that the benchmark compiles with the host's C++ compiler (`CXX`, else clang++, else
  `c++`; -O3 -march=native) and caches in the temporary directory. Each block of 12 rows gives its
  logits, its share of Rᵀ H and its new rows from cache, with the accumulators in registers;
  the blocks are shared among XLA's intra-op threads.
  CPU only, float32, C ≤ 16; skipped (with the reason in its row) without a compiler or off CPU.
  It shows how close to the floor the step can get; the package's steps stay portable XLA.

    python experiments/bench_roofline.py
"""

from __future__ import annotations

import _bench

DEFAULTS = dict(
    classes=10,
    per_class=500,
    dim=512,
    steps=50,
    block=250,
    repeats=7,
    seed=0,
    lam_w=5e-3,
    lam_h=5e-3,
    eta=0.5,
    matmul_n=2048,
    copy_mb=256,
    target=1.5,
    tol=1e-4,
)


def _ceiling_timers(cfg) -> tuple[dict, dict]:
    """Timers for the two ceilings (a large float32 matmul; a float32 copy, large and at the size
    of H) and the work each does: ({name: blocking callable}, {name: flops or bytes per call})."""
    import jax
    import jax.numpy as jnp

    m = cfg["matmul_n"]
    a = jax.random.normal(jax.random.PRNGKey(1), (m, m), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    timers = {"matmul": lambda: _bench.block(mm(a, a))}
    work = {"matmul": 2.0 * m**3}

    def copy(nbytes, sweeps=10):
        # x ← a x + c in place, `sweeps` times in one call: each sweep reads and writes the array
        # (a fresh output array per call would time the page faults of new memory instead).
        x = jnp.ones(nbytes // 4, jnp.float32)
        loop = jax.jit(lambda x: jax.lax.fori_loop(0, sweeps, lambda _, y: 0.999 * y + 1e-3, x))
        return (lambda: _bench.block(loop(x))), 2.0 * x.size * 4 * sweeps

    n, p = cfg["classes"] * cfg["per_class"], cfg["dim"]
    timers["copy"], work["copy"] = copy(cfg["copy_mb"] << 20)
    timers["copy_H"], work["copy_H"] = copy(4 * n * p)
    return timers, work


def _product_timers(H, W, R) -> dict:
    """Timers (name: blocking callable) for the step's three matrix products at their own shapes
    (H Wᵀ, Rᵀ H, R W), each a separate compiled call: what the same matmul library reaches on
    C-wide operands, which bounds any step built from library products (these shapes run far
    below the square-matmul FLOP/s of the floor)."""
    import jax

    calls = {
        "product_HWt": (jax.jit(lambda h, w: h @ w.T), (H, W)),
        "product_RtH": (jax.jit(lambda r, h: r.T @ h), (R, H)),
        "product_RW": (jax.jit(lambda r, w: r @ w), (R, W)),
    }
    return {name: (lambda f=f, a=a: _bench.block(f(*a))) for name, (f, a) in calls.items()}


def fused_step(W, b, H, Y, eta, lam_w, lam_h, lam_b=0.0):
    """One GD step of L_UFM with the gradient written out (no autodiff)."""
    n = H.shape[0]
    R = H @ W.T + b - Y
    W_new = W - eta * ((R.T @ H) / n + lam_w * W)
    b_new = b - eta * (jnp_sum0(R) / n + lam_b * b)
    H_new = (1.0 - eta * lam_h) * H - (eta / n) * (R @ W)
    return W_new, b_new, H_new


def jnp_sum0(x):
    import jax.numpy as jnp

    return jnp.sum(x, axis=0)


def blocked_step(W, b, H, Y, eta, lam_w, lam_h, lam_b=0.0, *, block: int = 256):
    """The same step, one pass over H: a scan over row blocks (n must divide into blocks)."""
    import jax
    import jax.numpy as jnp

    n, p = H.shape
    C = W.shape[0]
    nb = n // block
    Hb, Yb = H.reshape(nb, block, p), Y.reshape(nb, block, C)
    decay, scale = 1.0 - eta * lam_h, eta / n

    def body(carry, xs):
        gW, gb = carry
        h, y = xs
        r = h @ W.T + b - y
        return (gW + r.T @ h, gb + jnp.sum(r, axis=0)), decay * h - scale * (r @ W)

    zero = (jnp.zeros_like(W), jnp.zeros_like(b))
    (gW, gb), H_new = jax.lax.scan(body, zero, (Hb, Yb))
    W_new = W - eta * (gW / n + lam_w * W)
    b_new = b - eta * (gb / n + lam_b * b)
    return W_new, b_new, H_new.reshape(n, p)


KERNEL_SOURCE = _bench.ROOT / "experiments" / "kernels" / "ufm_gd_step.cc"
KERNEL_TARGET = "centralpath_ufm_gd_step"
_kernel_library = None  # the loaded library, kept alive: XLA calls into it


class KernelUnavailable(RuntimeError):
    """The one-pass kernel cannot run here (no compiler, a failed build, not on CPU)."""


def _build_kernel():
    """Compile the kernel into a shared library, cached by source, flags, compiler and jaxlib;
    written to a temporary name and renamed, so a killed build leaves no half-written library."""
    import hashlib
    import os
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    import jax
    import jaxlib

    # clang++ first: its code for this kernel ran ~10% faster than g++ 12's, same bits (measured).
    cxx = os.environ.get("CXX") or next(
        (c for c in ("clang++", "c++", "g++") if shutil.which(c)), None
    )
    if not cxx:
        raise KernelUnavailable("no C++ compiler found (install g++ or set CXX)")
    flags = ["-O3", "-march=native", "-shared", "-fPIC", "-std=c++17"]
    flags += ["-isystem", jax.ffi.include_dir()]
    key = hashlib.sha256(
        KERNEL_SOURCE.read_bytes() + "\0".join([cxx, *flags, jaxlib.__version__]).encode()
    ).hexdigest()[:16]
    lib = Path(tempfile.gettempdir()) / "centralpath-kernels" / f"ufm_gd_step-{key}.so"
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_name(f"{lib.name}.{os.getpid()}.tmp")
        proc = subprocess.run(
            [cxx, *flags, str(KERNEL_SOURCE), "-o", str(tmp)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise KernelUnavailable(f"{Path(cxx).name} could not build the kernel: {last}")
        os.replace(tmp, lib)
    return lib


def load_kernel() -> None:
    """Build (once per source and toolchain) and register the kernel as an XLA:CPU FFI target."""
    global _kernel_library
    import ctypes

    import jax

    if _kernel_library is not None:
        return
    if jax.default_backend() != "cpu":
        raise KernelUnavailable(f"the kernel is CPU-only (backend: {jax.default_backend()})")
    if not hasattr(jax, "ffi"):
        raise KernelUnavailable(
            f"the kernel needs jax.ffi (jax >= 0.4.38; this is {jax.__version__})"
        )
    library = ctypes.cdll.LoadLibrary(str(_build_kernel()))
    jax.ffi.register_ffi_target(KERNEL_TARGET, jax.ffi.pycapsule(library.UfmGdStep), platform="cpu")
    _kernel_library = library


def kernel_step(W, b, H, Y, eta, lam_w, lam_h, lam_b=0.0):
    """The same step as `fused_step`, by the one-pass kernel (float32; call `load_kernel` first).
    H's buffer is reused for the new H."""
    import jax
    import jax.numpy as jnp

    shapes = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (W, b, H))
    call = jax.ffi.ffi_call(KERNEL_TARGET, shapes, input_output_aliases={6: 2})
    scalars = (jnp.asarray(x, jnp.float32) for x in (eta, lam_w, lam_h, lam_b))
    return call(*scalars, W, b, H, Y)


def _as_tuple(s):
    return s.W, s.b, s.H


def main(cfg: dict | None = None) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from centralpath._ufm import init_ufm
    from centralpath.flows import UFMFlow

    cfg = _bench.merged(DEFAULTS, cfg)
    C, N, p, K = cfg["classes"], cfg["per_class"], cfg["dim"], cfg["steps"]
    n = C * N
    block = max(d for d in range(1, min(cfg["block"], n) + 1) if n % d == 0)
    state, labels = init_ufm(
        jax.random.PRNGKey(cfg["seed"]), C, N, p, mean_scale=2.0, dtype=jnp.float32
    )
    Y = jax.nn.one_hot(labels, C, dtype=jnp.float32)
    eta, lw, lh = (jnp.float32(cfg[k]) for k in ("eta", "lam_w", "lam_h"))
    flow = UFMFlow(labels, C, lam_W=cfg["lam_w"], lam_H=cfg["lam_h"])

    def looped(step):
        def run(W, b, H):
            return jax.lax.fori_loop(0, K, lambda _, s: step(*s), (W, b, H))

        return jax.jit(run, donate_argnums=(2,))

    rows, results, checks, skipped_row = [], {}, {}, None
    impls = {
        "autodiff": lambda W, b, H: _as_tuple(flow.gd_step(type(state)(W, b, H), eta)),
        "fused": lambda W, b, H: fused_step(W, b, H, Y, eta, lw, lh),
        "blocked": lambda W, b, H: blocked_step(W, b, H, Y, eta, lw, lh, block=block),
        "kernel": lambda W, b, H: kernel_step(W, b, H, Y, eta, lw, lh),
    }
    try:
        load_kernel()
    except KernelUnavailable as e:
        del impls["kernel"]
        checks["kernel_skipped"] = str(e)
        skipped_row = _bench.row("UFM GD step, kernel", None, note=f"skipped: {e}")
    flops = 6.0 * n * p * C + 3.0 * n * p
    nbytes = 4.0 * (2 * n * p + n * C + 2 * p * C + 2 * C)
    timers, work = _ceiling_timers(cfg)
    fresh = lambda: (state.W, state.b, jnp.array(state.H))  # noqa: E731 - H is donated
    compile_s = {}
    for name, step in impls.items():
        exe, compile_s[name] = _bench.compiled(looped(step), *fresh())
        results[name] = jax.device_get(exe(*fresh()))
        checks[f"{name}_fusions"] = exe.as_text().count(" fusion(")
        it = iter([fresh() for _ in range(cfg["repeats"] + 1)])  # one per call: H is donated
        timers[name] = lambda e=exe, i=it: _bench.block(e(*next(i)))
    # Ceilings and steps timed in interleaved rounds, so the floor and the step times
    # see the same machine (medians over `repeats` rounds). The ceilings run warm, after an
    # untimed call of their own; a step call is `steps` steps, whose first warms the rest.
    ceilings = tuple(k for k in timers if k not in impls)
    t = _bench.interleaved_medians(timers, repeats=cfg["repeats"], primed=ceilings)
    F, B_large, B_small = (work[k] / t[k] for k in ("matmul", "copy", "copy_H"))
    floor = max(flops / F, nbytes / B_large)
    for name in impls:
        step_s = t[name] / K
        rows.append(
            _bench.row(
                f"UFM GD step, {name}",
                step_s,
                compile_s=compile_s[name],
                baseline=floor,
                note=f"{step_s / floor:.2f}x the floor",
            )
        )
    for name in [k for k in impls if k != "autodiff"]:
        err = max(
            float(np.max(np.abs(a - r)) / np.max(np.abs(r)))
            for a, r in zip(results[name], results["autodiff"], strict=True)
        )
        checks[f"{name}_vs_autodiff"] = err
        assert err <= cfg["tol"], f"{name} step differs from autodiff by {err:.2e}"
    # ratio = floor / time: 1 means at the roofline; the target is time ≤ 1.5 × floor.
    for r in rows:
        r["target"] = 1.0 / cfg["target"]
        r["met"] = bool(r["ratio"] >= r["target"])
    if skipped_row is not None:
        rows.append(skipped_row)
    # The products alone, each in back-to-back calls of its own: interleaved with the rest they
    # ran up to 2x slower even after an untimed call (measured), which would flatter the kernel.
    products = _product_timers(state.H, state.W, state.H @ state.W.T - Y).values()
    t_products = sum(_bench.median_time(f, repeats=3 * cfg["repeats"]) for f in products)
    rows.insert(
        0,
        _bench.row(
            "the 3 products alone",
            t_products,
            baseline=floor,
            note=f"{flops / t_products / 1e9:.3g} GFLOP/s at these shapes; {t_products / floor:.2f}x "
            "the floor",
        ),
    )
    rows.insert(
        0,
        _bench.row(
            "roofline floor",
            floor,
            note=f"{flops:.3g} flop @ {F / 1e9:.3g} GFLOP/s, {nbytes / 1e6:.3g} MB @ "
            f"{B_large / 1e9:.3g} GB/s (copy of {cfg['copy_mb']} MB; {B_small / 1e9:.3g} GB/s at the "
            "size of H)",
        ),
    )
    checks.update(
        products_alone_s=t_products,
        flops=flops,
        bytes=nbytes,
        matmul_flops_per_s=F,
        bandwidth=B_large,
        bandwidth_at_size_of_H=B_small,
    )
    return {"name": "roofline", "rows": rows, "checks": checks}


if __name__ == "__main__":
    _bench.standalone(__doc__)
    print(_bench.report(main()))
