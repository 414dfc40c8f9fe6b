"""Readable `repr`/`str` of result objects: numbers, not Equinox's array summaries.

Equinox prints a module's arrays by dtype and shape (`LossDecomposition(loss=f64[], …)`), which
says nothing about a result. The result classes (ClassStats, CollapseMetrics, LossDecomposition,
LeastSquaresClassifier, Trajectory, UFMState) define `__repr__` with `numeric_repr`, which prints
scalars as numbers, small arrays in full and
large ones by shape with their range; inside `jit` (tracers) it falls back to dtype and shape.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: Arrays up to this many entries are printed in full.
FULL_SIZE = 16
#: A repr longer than this puts one field per line.
ONE_LINE = 100


def _short_dtype(dtype) -> str:
    d = np.dtype(dtype)
    return {"f": "f", "i": "i", "u": "u", "b": "bool", "c": "c"}.get(d.kind, d.kind) + (
        "" if d.kind == "b" else str(8 * d.itemsize)
    )


def format_value(v) -> str:
    """A field's value for `numeric_repr`."""
    import jax

    if v is None or isinstance(v, bool | int | float | str):
        return repr(v) if not isinstance(v, float) else f"{v:.6g}"
    if isinstance(v, jax.core.Tracer):
        return f"{_short_dtype(v.dtype)}{list(v.shape)} (traced)"
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return repr(v)
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        try:
            a = np.asarray(v)
        except Exception:  # noqa: BLE001 - a deleted buffer, an abstract value: shape only
            return f"{_short_dtype(v.dtype)}{list(v.shape)}"
        if a.ndim == 0:
            x = a.item()
            return f"{x:.6g}" if isinstance(x, float) else repr(x)
        if a.size <= FULL_SIZE:
            return np.array2string(a, precision=6, separator=", ", max_line_width=10**6)
        text = f"{_short_dtype(a.dtype)}{list(a.shape)}"
        if a.dtype.kind in "fiu" and a.size:
            text += f" (min {np.nanmin(a):.4g}, max {np.nanmax(a):.4g})"
        return text
    return repr(v)


def numeric_repr(obj) -> str:
    """`Name(field=value, …)` with the values as numbers (one field per line when long)."""
    fields = [f.name for f in dataclasses.fields(obj) if f.repr]
    values = {f: format_value(getattr(obj, f, None)) for f in fields}
    name = type(obj).__name__
    line = f"{name}({', '.join(f'{f}={v}' for f, v in values.items())})"
    if len(line) <= ONE_LINE and "\n" not in line:
        return line
    # A matrix's later rows line up under its first, after "  field=".
    inner = ",\n".join(
        f"  {f}=" + v.replace("\n", "\n" + " " * (3 + len(f))) for f, v in values.items()
    )
    return f"{name}(\n{inner}\n)"


__all__ = ["format_value", "numeric_repr"]
