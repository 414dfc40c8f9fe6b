"""Files: the features-file format, atomic writes, and loading without pickle.

A features file is an `.npz` (read with `allow_pickle=False`):

| key            | shape / type        | meaning                                                   |
|----------------|---------------------|-----------------------------------------------------------|
| `features`     | float [K, n, p] or [n, p] | h for each of K checkpoints (float16/32/64)         |
| `labels`       | int [n]             | class of each sample, 0..C−1                              |
| `W`            | float [K, C, p] (or [C, p]) | last-layer weights (optional)                     |
| `b`            | float [K, C] (or [C])       | last-layer bias (optional; zero if W given alone) |
| `epochs`       | number [K]          | checkpoint epochs (optional; default 0..K−1)              |
| `weight_decay` | float scalar        | λ in the paper's scale, THEORY.md §2 (optional; 0)        |
| `num_classes`  | int scalar          | C (optional; default: rows of W, else max label + 1)      |

Other keys (`loss`, `accuracy`, …) are carried along untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputError, require

FEATURE_KEYS = ("features", "labels", "W", "b", "epochs", "weight_decay", "num_classes")


# Called as observer(tmp, path) once `tmp` holds a file's new content, just before it is renamed
# onto `path`, and as observer(None, path) just after: a partial run directory records a digest of
# every file written into it this way (`_rundir.RunDir`), to verify them before a resume.
_write_observers: list = []


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    An interrupted writer leaves at most a hidden `.tmp` file, never a file that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else ".tmp" + path.suffix
    # The temporary name adds ~20 bytes to the file's: a name near the 255-byte limit (valid
    # itself) must not fail only because its temporary sibling is too long.
    stem = path.name if len(os.fsencode(path.name)) <= 200 else "centralpath"
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a result file should read like any other
    try:
        yield Path(tmp)
        for observer in list(_write_observers):
            observer(Path(tmp), path)
        os.replace(tmp, path)
        for observer in list(_write_observers):
            observer(None, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npz(path, **arrays) -> None:
    """Write an uncompressed `.npz` atomically (no object arrays: loadable without pickle)."""
    for k, v in arrays.items():
        if np.asarray(v).dtype == object:
            raise TypeError(f"{k}: object arrays would need pickle; convert to a numeric array")
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(x):
    if isinstance(x, np.generic | np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def _finite_or_none(obj):
    """JSON has no NaN/Inf: write non-finite numbers as null (documented in the README)."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_none(v) for v in obj]
    return obj


def write_json(path, obj: Any) -> None:
    obj = json.loads(json.dumps(obj, default=_json_default))
    write_text(path, json.dumps(_finite_or_none(obj), indent=2, allow_nan=False) + "\n")


def load_npz(path, what: str = "file") -> dict[str, np.ndarray]:
    """Load every array of an `.npz` without pickle; one-line `InputError` on any problem."""
    path = Path(path)
    require(path.exists(), f"{what} {path} does not exist; check the path")
    require(path.is_file(), f"{what} {path} is not a file; pass an .npz file")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise InputError(
            f"{what} {path} is a single .npy array, not an .npz archive; "
            "save it with numpy.savez(path, features=..., labels=...)"
        )
    require(
        magic.startswith(b"PK"),
        f"{what} {path} is not an .npz archive (no zip header); save it with numpy.savez",
    )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise InputError(
                f"{what} {path} holds pickled object arrays, which are not loaded for safety; "
                "save plain numeric arrays with numpy.savez"
            ) from None
        raise InputError(
            f"{what} {path} is not a readable .npz archive ({e}); re-save it with numpy.savez"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise InputError(
            f"{what} {path} is not a readable .npz archive ({type(e).__name__}: {e}); "
            "re-save it with numpy.savez"
        ) from None


@dataclass(frozen=True)
class FeaturesFile:
    """A validated features file: K checkpoints of features with labels and, optionally, W, b."""

    features: np.ndarray  # [K, n, p], float64
    labels: np.ndarray  # [n], int64
    num_classes: int
    epochs: np.ndarray  # [K]
    weight_decay: float
    W: np.ndarray | None = None  # [K, C, p]
    b: np.ndarray | None = None  # [K, C]
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_checkpoints(self) -> int:
        return self.features.shape[0]


def _as_float(name: str, a: np.ndarray, source: str) -> np.ndarray:
    require(
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer),
        f"{source}: '{name}' must be a numeric array, got dtype {a.dtype}; save it as float32 or float64",
    )
    out = a.astype(np.float64)
    if out.size and not np.all(np.isfinite(out)):
        bad = int(out.size - np.count_nonzero(np.isfinite(out)))
        raise InputError(
            f"{source}: '{name}' holds {bad} non-finite value(s) (NaN or Inf); "
            "the run likely diverged — drop those checkpoints or re-save finite values"
        )
    return out


def validate_features_arrays(
    arrays: dict[str, np.ndarray], source: str = "features file"
) -> FeaturesFile:
    """Check a dict of arrays against the features-file schema (see the module docstring)."""
    missing = [k for k in ("features", "labels") if k not in arrays]
    require(
        not missing,
        f"{source} lacks {' and '.join(repr(k) for k in missing)}; it needs 'features' [K, n, p] "
        "and 'labels' [n] (see the README's features-file schema)",
    )
    H = _as_float("features", np.asarray(arrays["features"]), source)
    require(
        H.ndim in (2, 3),
        f"{source}: 'features' must be [n, p] or [K, n, p], got shape {H.shape}",
    )
    if H.ndim == 2:
        H = H[None]
    K, n, p = H.shape
    require(
        K >= 1 and n >= 1 and p >= 1,
        f"{source}: 'features' is empty (shape {H.shape}); save at least one sample",
    )
    labels = np.asarray(arrays["labels"])
    require(
        labels.ndim == 1 and labels.shape[0] == n,
        f"{source}: 'labels' must have shape [n] = [{n}] to match 'features', got {labels.shape}",
    )
    require(
        np.issubdtype(labels.dtype, np.integer)
        or (
            np.issubdtype(labels.dtype, np.floating)
            and np.all(np.isfinite(labels))
            and np.all(labels == np.round(labels))
        ),
        f"{source}: 'labels' must be integers 0..C-1, got dtype {labels.dtype} with non-integer values",
    )
    labels = labels.astype(np.int64)
    require(
        labels.min() >= 0,
        f"{source}: 'labels' must be >= 0, found {labels.min()}; relabel the classes to 0..C-1",
    )

    W = b = None
    if "W" in arrays:
        W = _as_float("W", np.asarray(arrays["W"]), source)
        if W.ndim == 2:
            W = W[None]
        require(
            W.ndim == 3 and W.shape[0] == K and W.shape[2] == p,
            f"{source}: 'W' must be [K, C, p] = [{K}, C, {p}] to match 'features', got {np.shape(arrays['W'])}",
        )
    if "num_classes" in arrays:
        nc = np.asarray(arrays["num_classes"])
        require(
            nc.ndim == 0 and np.issubdtype(nc.dtype, np.integer),
            f"{source}: 'num_classes' must be an integer scalar",
        )
        C = int(nc)
    elif W is not None:
        C = W.shape[1]
        require(
            labels.max() + 1 == C,
            f"{source}: 'W' has {C} rows (classes) but the labels name {labels.max() + 1} classes "
            f"(0..{labels.max()}); the label count must match the classifier",
        )
    else:
        C = int(labels.max()) + 1
    require(C >= 2, f"{source}: found {C} class(es); neural collapse needs at least 2 classes")
    require(
        labels.max() < C,
        f"{source}: 'labels' must lie in 0..{C - 1}, found {labels.max()}; the label count does not match "
        "the classifier — fix 'labels' or 'num_classes'",
    )
    if W is not None:
        require(
            W.shape[1] == C,
            f"{source}: 'W' has {W.shape[1]} rows but the labels have {C} classes; the label count must "
            "match the classifier",
        )
    counts = np.bincount(labels, minlength=C)
    require(
        np.all(counts > 0),
        f"{source}: class {int(np.argmin(counts > 0))} has no sample; drop it and relabel the classes to 0..C-1",
    )
    if "b" in arrays:
        require(W is not None, f"{source}: 'b' given without 'W'; save both or neither")
        b = _as_float("b", np.asarray(arrays["b"]), source)
        if b.ndim == 1:
            b = b[None]
        require(
            b.shape == (K, C),
            f"{source}: 'b' must be [K, C] = [{K}, {C}], got {np.shape(arrays['b'])}",
        )
    elif W is not None:
        b = np.zeros((K, C))
    if "epochs" in arrays:
        epochs = _as_float("epochs", np.atleast_1d(np.asarray(arrays["epochs"])), source)
        require(epochs.shape == (K,), f"{source}: 'epochs' must be [K] = [{K}], got {epochs.shape}")
    else:
        epochs = np.arange(K, dtype=np.float64)
    lam = 0.0
    if "weight_decay" in arrays:
        wd = np.asarray(arrays["weight_decay"])
        require(wd.size == 1, f"{source}: 'weight_decay' must be a scalar, got shape {wd.shape}")
        lam = float(_as_float("weight_decay", wd.reshape(()), source))
        require(lam >= 0, f"{source}: 'weight_decay' must be >= 0, got {lam}")
    extra = {k: v for k, v in arrays.items() if k not in FEATURE_KEYS}
    return FeaturesFile(H, labels, C, epochs, lam, W, b, extra)


def load_features(path) -> FeaturesFile:
    """Load and validate a features file (schema in the module docstring and the README)."""
    return validate_features_arrays(load_npz(path, "features file"), f"features file {path}")


def save_features(
    path, *, features, labels, W=None, b=None, epochs=None, weight_decay=None, **extra
) -> None:
    """Write a features file atomically, in the schema `load_features` reads."""
    arrays = {"features": features, "labels": np.asarray(labels, dtype=np.int64)}
    if W is not None:
        arrays["W"] = W
    if b is not None:
        arrays["b"] = b
    if epochs is not None:
        arrays["epochs"] = epochs
    if weight_decay is not None:
        arrays["weight_decay"] = np.float64(weight_decay)
    arrays.update(extra)
    validate_features_arrays({k: np.asarray(v) for k, v in arrays.items()}, f"features for {path}")
    save_npz(path, **arrays)
