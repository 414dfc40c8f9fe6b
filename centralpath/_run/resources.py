"""Resource guards: refuse a command whose inputs would need more memory or work than there is.

Every boundary that sizes an allocation from user input (a file's `.npy` headers and zip
directory, a label range, `--dim`, `--num-saves`, `--widths`, …) estimates the cost first and
calls `check_memory` / `check_work`, so a hostile or mistaken input gets one line naming the
estimate, the limit and the fix — never a `MemoryError`, a swapping machine or a kill.

Limits (documented in docs/reference/validated-inputs.md):

- memory: the environment variable `CENTRALPATH_MEMORY_LIMIT` (bytes, or a number with K, M, G or
  T, powers of 1024: `64G`) if set; otherwise the memory available now — the smallest of the
  system's available memory (`MemAvailable` of /proc/meminfo, else `os.sysconf`), the room left
  in the cgroup (containers) and the room left under `RLIMIT_AS` / `RLIMIT_DATA`.
- work: `CENTRALPATH_WORK_LIMIT` (floating-point operations, e.g. `1e16`) if set, else 1e15
  (hours on two CPU cores). Estimates count the O(p³) eigendecompositions and the training steps.

No JAX here: the guards run before anything heavy is imported or allocated.
"""

from __future__ import annotations

import math
import os
import re
import time

from .._errors import InputError

MEMORY_ENV = "CENTRALPATH_MEMORY_LIMIT"
WORK_ENV = "CENTRALPATH_WORK_LIMIT"
DEFAULT_WORK_LIMIT = 1e15
# Features that span fewer dimensions than they have (p > n samples) make every p×p factorisation
# pure waste beyond the n-dimensional span; one checkpoint's O(p³) work is held to this fraction
# of the work limit (1e12 flop by default: p ≈ 3700, about a minute on two cores).
P_OVER_N_WORK_FRACTION = 1e-3

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(text: str, name: str = MEMORY_ENV) -> int:
    """Bytes from `123456`, `512M`, `1.5G`, `2T` (K/M/G/T are powers of 1024; a trailing B or
    iB is allowed)."""
    m = re.fullmatch(
        r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGTP]?)(?:I?B)?\s*", text.upper()
    )
    value = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    if not (math.isfinite(value) and value > 0):
        raise InputError(
            f"{name}={text!r} is not a memory size; give bytes or a number with K, M, G or T "
            "(e.g. 64G)"
        )
    return int(value)


def format_bytes(n: float) -> str:
    """`3.2 GiB`, `512 MiB`, `6.9 EiB`: binary units, three significant digits."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024:
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} EiB"


def _read_kib(path: str, key: str) -> int | None:
    """A `Key:  123 kB` line of a /proc file, in bytes."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
        return None if text in ("", "max") else int(text)
    except (OSError, ValueError):
        return None


def _available_memory() -> tuple[int | None, str]:
    """(bytes, what limits them) of the memory this process can still allocate, or None."""
    candidates: list[tuple[int, str]] = []
    avail = _read_kib("/proc/meminfo", "MemAvailable")
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    if avail is not None and avail > 0:
        candidates.append((avail, "available now"))
    # A container's cgroup limit is invisible to MemAvailable, which reports the host's.
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        limit = _read_int(limit_file)
        if limit is not None and limit < 1 << 60:  # cgroup v1 writes ~2**63 for "no limit"
            used = _read_int(usage_file) or 0
            candidates.append((max(limit - used, 0), "left in this container's cgroup"))
            break
    try:
        import resource

        for rlim, status_key, label in (
            (resource.RLIMIT_AS, "VmSize", "RLIMIT_AS"),
            (resource.RLIMIT_DATA, "VmData", "RLIMIT_DATA"),
        ):
            soft = resource.getrlimit(rlim)[0]
            if soft != resource.RLIM_INFINITY:
                used = _read_kib("/proc/self/status", status_key) or 0
                candidates.append((max(soft - used, 0), f"left under {label}"))
    except (ImportError, OSError, ValueError):
        pass
    if not candidates:
        return None, "unknown"
    return min(candidates)


_cache: dict[str, tuple[float, tuple[int | None, str]]] = {}


def memory_limit() -> tuple[int | None, str]:
    """(bytes, source): `CENTRALPATH_MEMORY_LIMIT` if set, else the available memory (None when
    the system does not say). Read at most once a second: a sweep validates many configurations."""
    text = os.environ.get(MEMORY_ENV)
    if text:
        return parse_size(text), f"set by {MEMORY_ENV}"
    now = time.monotonic()
    hit = _cache.get("memory")
    if hit is None or now - hit[0] > 1.0:
        hit = (now, _available_memory())
        _cache["memory"] = hit
    return hit[1]


def work_limit() -> float:
    """Floating-point operations a command may plan: `CENTRALPATH_WORK_LIMIT` or 1e15."""
    text = os.environ.get(WORK_ENV)
    if not text:
        return DEFAULT_WORK_LIMIT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{WORK_ENV}={text!r} is not a number of operations; give e.g. 1e16")
    return value


def _suggest(n: float) -> str:
    """A round size a bit above n, for the 'raise the limit' hint."""
    for unit, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20)):
        if n >= scale:
            return f"{math.ceil(n * 1.25 / scale)}{unit}"
    return "1G"


def _sci(x: float) -> str:
    """`2.5e12`, not `2.5e+12`."""
    return f"{x:.2g}".replace("e+", "e")


def _power_of_ten(x: float) -> str:
    """`1e16`: the first power of ten at or above x."""
    return f"1e{math.ceil(math.log10(x))}"


def check_memory(estimate: float, what: str, fix: str) -> None:
    """Refuse (InputError) when `estimate` bytes exceed the memory limit.

    `what` says what needs the memory ("analysing features file f.npz ([30, 600, 20000]
    float32)"); `fix` says how to need less ("analyse fewer checkpoints"). The message adds the
    limit and how to raise it.
    """
    limit, source = memory_limit()
    if limit is None or estimate <= limit:
        return
    raise InputError(
        f"{what} needs about {format_bytes(estimate)} of memory, more than the "
        f"{format_bytes(limit)} {source}; {fix}, or raise the limit with "
        f"{MEMORY_ENV}={_suggest(estimate)} if the machine really has that much"
    )


def check_work(flops: float, what: str, fix: str, *, fraction: float = 1.0) -> None:
    """Refuse (InputError) when an estimated `flops` exceeds `fraction` × the work limit."""
    limit = work_limit() * fraction
    if flops <= limit:
        return
    raise InputError(
        f"{what} needs about {_sci(flops)} floating-point operations, more than the limit of "
        f"{_sci(limit)}; {fix}, or raise the limit with {WORK_ENV}={_power_of_ten(flops / fraction)}"
    )


__all__ = [
    "DEFAULT_WORK_LIMIT",
    "MEMORY_ENV",
    "WORK_ENV",
    "check_memory",
    "check_work",
    "format_bytes",
    "memory_limit",
    "parse_size",
    "work_limit",
]
