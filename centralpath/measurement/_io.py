"""Files: the features-file format, atomic writes, and loading without pickle.

A features file is an `.npz` (read with `allow_pickle=False`):

| key            | shape / type        | meaning                                                   |
|----------------|---------------------|-----------------------------------------------------------|
| `features`     | float [K, n, p] or [n, p] | h for each of K checkpoints (float16/32/64)         |
| `labels`       | int [n]             | class of each sample, 0..C−1                              |
| `W`            | float [K, C, p] (or [C, p]) | last-layer weights (optional)                     |
| `b`            | float [K, C] (or [C])       | last-layer bias (optional; zero if W given alone) |
| `epochs`       | number [K]          | checkpoint epochs (optional; default 0..K−1)              |
| `weight_decay` | float scalar        | λ in the paper's scale, docs/theory.md §2 (optional; 0)        |
| `num_classes`  | int scalar          | C (optional; default: rows of W, else max label + 1)      |

Optional keys that record how the network was trained (written by `centralpath train` and the
PyTorch recipe (docs/guides/pytorch.md); read and checked by `load_features`, never needed by the analysis):

| key               | shape / type        | meaning                                                |
|-------------------|---------------------|--------------------------------------------------------|
| `loss`            | str scalar          | `"mse"` or `"ce"` (fixed-width unicode, not an object) |
| `learning_rate`   | float [E]           | the (mean) step size during epoch e = 1..E             |
| `momentum`        | float scalar        | SGD momentum, in [0, 1)                                |
| `steps_per_epoch` | int scalar          | optimiser steps per epoch                              |
| `train_accuracy`  | float [K]           | training accuracy at each checkpoint, in [0, 1]        |
| `test_accuracy`   | float [K]           | held-out accuracy at each checkpoint, in [0, 1]        |
| `test_loss`       | float [K]           | held-out data loss (the training loss's kind) per checkpoint |
| `epoch_loss`      | float [E]           | mean over epoch e's optimiser steps of the minibatch data loss (no weight decay): ½‖f(x) − y‖² summed over outputs, averaged over samples (MSE) or the mean cross-entropy |
| `feature_grad_sq` | float [E]           | mean over epoch e's steps and samples of ‖∂ℓ_i/∂h_i‖² = ‖Wᵀ r_i‖², r_i = ∂ℓ_i/∂(W h_i + b) (per-sample loss ℓ_i, penultimate features h_i) |
| `class_mean_step` | float [E]           | (1/C) Σ_c ‖(μ_c − μ_G)(e) − (μ_c − μ_G)(e − 1)‖²: the squared displacement of the centred class means over epoch e |
| `feature_step`    | float [E]           | (1/n) Σ_i ‖h_i(e) − h_i(e − 1)‖² (`centralpath train` only: it evaluates every sample every epoch) |

Other keys (`train_loss`, …) may be present; `load_features` never reads them.

Reading never trusts a file: every member's `.npy` header and zip entry are checked before its
data is read, and the memory and work of what follows are estimated from them (`_resources`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError, require
from .._run.resources import check_memory, check_work, format_bytes

FEATURE_KEYS = ("features", "labels", "W", "b", "epochs", "weight_decay", "num_classes")
#: The per-epoch record [E] a clock of the predictive compare reads (module docstring).
EPOCH_RECORD_KEYS = ("epoch_loss", "feature_grad_sq", "class_mean_step", "feature_step")
#: The optional record of the training (module docstring); shared with the predictive compare.
TRAINING_KEYS = (
    "loss",
    "learning_rate",
    "momentum",
    "steps_per_epoch",
    "train_accuracy",
    "test_accuracy",
    "test_loss",
    *EPOCH_RECORD_KEYS,
)
LOSS_NAMES = ("mse", "ce")


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
    """JSON has no NaN/Inf: write non-finite numbers as null (docs/reference/file-formats.md)."""
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


@dataclass(frozen=True)
class ArrayHeader:
    """What an `.npz` member's `.npy` header and zip entry say, read without loading the data."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int  # of the data the header declares
    file_size: int  # uncompressed size the zip directory declares (header included)
    info: zipfile.ZipInfo = field(repr=False)
    fortran: bool = False  # the data is in Fortran (column-major) order
    header_len: int = 0  # bytes of the `.npy` header before the data


# numpy.savez writes stored members, savez_compressed deflated ones. bzip2 and LZMA members are
# refused: zipfile decompresses a whole read's worth of their input in one call, unbounded, so a
# small member could expand to gigabytes before any size check sees it.
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def _refuse(what, path, problem, fix="re-save it with numpy.savez") -> InputError:
    return InputError(f"{what} {path} {problem}; {fix}")


# zipfile parses the whole central directory into Python objects (~500 bytes per member)
# before anything else can be checked; a directory of millions of members costs gigabytes and
# minutes. 16 MiB is ~300,000 members, far beyond any file written here.
MAX_DIRECTORY_BYTES = 16 << 20


def _directory_size(fh) -> int | None:
    """Bytes of the zip's central directory, from its end records (zip64 included), or None
    when they cannot be found (zipfile then names the problem)."""
    import struct

    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    tail_len = min(size, 22 + 0xFFFF + 20 + 56)  # EOCD, its comment, zip64 locator and record
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        return None
    directory = struct.unpack("<I", tail[i + 12 : i + 16])[0]
    if directory == 0xFFFFFFFF:  # zip64: the size is in the zip64 end record before the locator
        j = tail.rfind(b"PK\x06\x06", 0, i)
        if j < 0 or i - j < 56:
            return None
        directory = struct.unpack("<Q", tail[j + 40 : j + 48])[0]
    return directory


def _open_npz(path: Path, what: str) -> zipfile.ZipFile:
    require(path.exists(), f"{what} {path} does not exist; check the path")
    require(path.is_file(), f"{what} {path} is not a file; pass an .npz file")
    try:
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
        with open(path, "rb") as fh:
            directory = _directory_size(fh)
        if directory is not None and directory > MAX_DIRECTORY_BYTES:
            raise _refuse(
                what,
                path,
                f"has a zip directory of {format_bytes(directory)} (about "
                f"{directory // 60:,} members; an .npz of this package holds a few dozen)",
                "save the arrays it needs, in one archive with few members",
            )
        return zipfile.ZipFile(path)
    except InputError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as e:
        raise _refuse(
            what, path, f"is not a readable .npz archive ({type(e).__name__}: {e})"
        ) from None


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, what, path) -> ArrayHeader:
    """Parse one member's `.npy` header (a few hundred bytes) and check it against the zip entry."""
    where = f"member {key!r}"
    if info.compress_type not in _COMPRESSIONS:
        raise _refuse(
            what,
            path,
            f"{where} uses zip compression method {info.compress_type} (only stored and deflate "
            "are read)",
            "re-save it with numpy.savez or numpy.savez_compressed",
        )
    if info.flag_bits & 0x1:
        raise _refuse(what, path, f"{where} is encrypted", "save it without a password")
    try:
        with zf.open(info) as fh:
            shape, fortran, dtype, header_len = read_npy_header(fh, what, path, where)
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError, KeyError) as e:
        raise _refuse(
            what, path, f"{where} is not a readable .npy array ({type(e).__name__}: {e})"
        ) from None
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a forged shape cannot overflow
    if nbytes > info.file_size - header_len:
        raise _refuse(
            what,
            path,
            f"{where} declares shape {shape} {dtype} ({format_bytes(nbytes)}) but holds only "
            f"{format_bytes(max(info.file_size - header_len, 0))} of data: it is truncated or forged",
        )
    return ArrayHeader(key, tuple(shape), dtype, nbytes, info.file_size, info, fortran, header_len)


def read_npy_header(fh, what, path, where) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header length) of an `.npy` image at fh's position (a
    member of an `.npz` or a `.npy` file): the one reader of `.npy` headers. Format 3.0 only
    adds UTF-8 field names (structured arrays, never numeric data) and is refused, as are
    pickled object arrays."""
    fmt = np.lib.format
    start = fh.tell()
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except (OSError, ValueError, EOFError) as e:
        raise _refuse(
            what, path, f"{where} is not a readable .npy array ({type(e).__name__}: {e})"
        ) from None
    if dtype.hasobject:
        raise _refuse(
            what,
            path,
            "holds pickled object arrays, which are not loaded for safety",
            "save plain numeric arrays with numpy.savez",
        )
    return tuple(shape), bool(fortran), dtype, fh.tell() - start


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """key -> zip entry, named as `numpy.load` names them (`x.npy` is key `x`)."""
    return {
        (i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i
        for i in zf.infolist()
        if not i.is_dir()
    }


def npz_headers(path, what: str = "file", keys=None) -> dict[str, ArrayHeader]:
    """The headers of an `.npz`'s members (all, or those of `keys` present), read without
    loading any data; one-line `InputError` for a damaged, forged or unsafe member."""
    path = Path(path)
    with _open_npz(path, what) as zf:
        members = _members(zf)
        wanted = members if keys is None else {k: members[k] for k in keys if k in members}
        return {k: _member_header(zf, info, k, what, path) for k, info in wanted.items()}


class _Bounded:
    """A read-only file that refuses to yield more than `limit` bytes: the reader's own bound on
    what a member may expand to, whatever the zip directory claimed (zipfile also stops at the
    declared size; this does not depend on it)."""

    def __init__(self, fh, limit: int, on_excess):
        self._fh, self._left, self._on_excess = fh, limit, on_excess

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(self._left + 1 if n is None or n < 0 else min(n, self._left + 1))
        self._left -= len(data)
        if self._left < 0:
            raise self._on_excess()
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def load_npz(path, what: str = "file", keys=None, check=None) -> dict[str, np.ndarray]:
    """Load the arrays of an `.npz` without pickle; one-line `InputError` on any problem.

    `keys`: load only these members (those present); the others are never read. Before any data
    is read, each member's `.npy` header and zip entry are checked (a forged shape, a truncated
    member, bzip2/LZMA, pickles), the total is held to the memory limit (`_resources`), and
    `check(headers)` — the caller's estimate of what it will do with the arrays — may refuse.
    """
    path = Path(path)
    with _open_npz(path, what) as zf:
        members = _members(zf)
        wanted = members if keys is None else {k: members[k] for k in keys if k in members}
        headers = {k: _member_header(zf, info, k, what, path) for k, info in wanted.items()}
        total = sum(h.nbytes for h in headers.values())
        largest = max(headers.values(), key=lambda h: h.nbytes, default=None)
        if largest is not None:
            check_memory(
                total,
                f"reading {what} {path} (largest member {largest.key!r}: {list(largest.shape)} "
                f"{largest.dtype})",
                "save smaller arrays",
            )
        if check is not None:
            check(headers)
        out = {}
        for key, h in headers.items():
            excess = lambda h=h: _refuse(  # noqa: E731
                what,
                path,
                f"member {h.key!r} expands past its declared size of {format_bytes(h.file_size)}: "
                "it is damaged or a zip bomb",
            )
            try:
                with zf.open(h.info) as raw:
                    out[key] = np.lib.format.read_array(
                        _Bounded(raw, h.file_size, excess), allow_pickle=False
                    )
            except InputError:
                raise
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError) as e:
                raise _refuse(
                    what, path, f"member {key!r} is not readable ({type(e).__name__}: {e})"
                ) from None
        return out


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
    # The training record (TRAINING_KEYS); None where the file does not say.
    loss: str | None = None  # "mse" | "ce"
    learning_rate: np.ndarray | None = None  # [E]
    momentum: float | None = None
    steps_per_epoch: int | None = None
    train_accuracy: np.ndarray | None = None  # [K]
    test_accuracy: np.ndarray | None = None  # [K]
    test_loss: np.ndarray | None = None  # [K]
    # The per-epoch record (EPOCH_RECORD_KEYS), each [E] for epochs e = 1..E.
    epoch_loss: np.ndarray | None = None
    feature_grad_sq: np.ndarray | None = None
    class_mean_step: np.ndarray | None = None
    feature_step: np.ndarray | None = None

    @property
    def num_checkpoints(self) -> int:
        return self.features.shape[0]

    def __repr__(self) -> str:  # the shape of the data, not every number
        K, n, p = self.features.shape
        epochs = ", ".join(f"{e:g}" for e in self.epochs[:6]) + (", …" if K > 6 else "")
        return (
            f"FeaturesFile(K={K} checkpoints at epochs [{epochs}], n={n} samples, p={p}, "
            f"C={self.num_classes}, weight_decay={self.weight_decay:g}, "
            f"classifier={'W, b' if self.W is not None else 'none'}"
            + (f", loss={self.loss!r}" if self.loss else "")
            + ")"
        )


def _as_float(name: str, a: np.ndarray, source: str) -> np.ndarray:
    require(
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer),
        f"{source}: '{name}' must be a numeric array, got dtype {a.dtype}; save it as float32 or float64",
    )
    return require_finite(name, a.astype(np.float64), source)


def require_finite(name: str, a: np.ndarray, source: str, checkpoint: int | None = None):
    """`a` itself, or one line naming the key (and the checkpoint) that holds NaN or Inf."""
    if a.size and not np.all(np.isfinite(a)):
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        where = "" if checkpoint is None else f" at checkpoint {checkpoint}"
        raise InputError(
            f"{source}: '{name}' holds {bad} non-finite value(s) (NaN or Inf){where}; "
            "the run likely diverged — drop those checkpoints or re-save finite values"
        )
    return a


def validate_features_arrays(
    arrays: dict[str, np.ndarray], source: str = "features file", *, streamed: tuple = ()
) -> FeaturesFile:
    """Check a dict of arrays against the features-file schema (see the module docstring).

    `streamed` names members ("features", "W") given as placeholders of the right shape whose
    values the caller reads and checks chunk by chunk (`_stream`): only their shapes are checked.
    """
    missing = [k for k in ("features", "labels") if k not in arrays]
    require(
        not missing,
        f"{source} lacks {' and '.join(repr(k) for k in missing)}; it needs 'features' [K, n, p] "
        "and 'labels' [n] (see docs/reference/file-formats.md)",
    )
    H = (
        arrays["features"]
        if "features" in streamed
        else _as_float("features", np.asarray(arrays["features"]), source)
    )
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
        W = arrays["W"] if "W" in streamed else _as_float("W", np.asarray(arrays["W"]), source)
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
    # Before the bincount, which allocates C counters: a label of 2**40 would ask for 8 TiB.
    require(
        C <= n,
        f"{source}: {'num_classes says' if 'num_classes' in arrays else 'the labels name'} {C} "
        f"classes but there are only {n} samples, so some class has none; relabel the classes to "
        "0..C-1",
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
    epochs, lam = epochs_and_weight_decay(arrays, K, source)
    extra = {k: v for k, v in arrays.items() if k not in FEATURE_KEYS + TRAINING_KEYS}
    record = _training_record(arrays, K, epochs, source)
    return FeaturesFile(H, labels, C, epochs, lam, W, b, extra, **record)


def _scalar(name: str, a, source: str) -> np.ndarray:
    a = np.asarray(a)
    require(
        a.size == 1 and a.ndim <= 1, f"{source}: '{name}' must be a scalar, got shape {a.shape}"
    )
    return a.reshape(())


def epochs_and_weight_decay(arrays, K: int, source: str) -> tuple[np.ndarray, float]:
    """The optional `epochs` [K] (default 0..K−1) and `weight_decay` (λ ≥ 0, default 0) of a
    features or statistics file, checked."""
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
    return epochs, lam


def _per_epoch(key: str, what: str, value, epochs: np.ndarray, source: str) -> np.ndarray:
    """A per-epoch record [E] of finite values >= 0 reaching the last checkpoint's epoch."""
    v = _as_float(key, np.atleast_1d(np.asarray(value)), source)
    require(
        v.ndim == 1 and bool(np.all(v >= 0)),
        f"{source}: '{key}' must be [E] {what} >= 0 (epoch e = 1..E), got shape {v.shape}"
        + (f" with minimum {v.min():g}" if v.ndim == 1 and v.size else ""),
    )
    last = float(np.max(epochs)) if epochs.size else 0.0
    require(
        v.size >= math.ceil(last),
        f"{source}: '{key}' has {v.size} epochs but the checkpoints reach epoch "
        f"{last:g}; save the value of every epoch up to the last checkpoint",
    )
    return v


def _training_record(arrays: dict, K: int, epochs: np.ndarray, source: str) -> dict:
    """The optional keys that record how the network was trained (TRAINING_KEYS), checked."""
    out: dict[str, Any] = {}
    if "loss" in arrays:
        a = _scalar("loss", arrays["loss"], source)
        name = a.item().decode() if a.dtype.kind == "S" else a.item()
        require(
            a.dtype.kind in "US" and name in LOSS_NAMES,
            f"{source}: 'loss' names the training loss and must be the string 'mse' or 'ce', got "
            f"{name!r} (dtype {a.dtype}); save it as numpy.asarray('mse') (per-checkpoint loss "
            "values go in 'train_loss')",
        )
        out["loss"] = str(name)
    for key, what in (("learning_rate", "step sizes"), *((k, "values") for k in EPOCH_RECORD_KEYS)):
        if key in arrays:
            out[key] = _per_epoch(key, what, arrays[key], epochs, source)
    if "momentum" in arrays:
        mom = float(_as_float("momentum", _scalar("momentum", arrays["momentum"], source), source))
        require(0 <= mom < 1, f"{source}: 'momentum' must lie in [0, 1), got {mom}")
        out["momentum"] = mom
    if "steps_per_epoch" in arrays:
        spe = _scalar("steps_per_epoch", arrays["steps_per_epoch"], source)
        require(
            np.issubdtype(spe.dtype, np.integer) and int(spe) >= 1,
            f"{source}: 'steps_per_epoch' must be an integer >= 1, got {spe.item()!r}",
        )
        out["steps_per_epoch"] = int(spe)
    for key in ("train_accuracy", "test_accuracy", "test_loss"):
        if key not in arrays:
            continue
        v = _as_float(key, np.atleast_1d(np.asarray(arrays[key])), source)
        require(v.shape == (K,), f"{source}: '{key}' must be [K] = [{K}], got {v.shape}")
        if key.endswith("accuracy"):
            require(
                bool(np.all((v >= 0) & (v <= 1))),
                f"{source}: '{key}' must be fractions in [0, 1], found {v.min():g}..{v.max():g}",
            )
        else:
            require(bool(np.all(v >= 0)), f"{source}: '{key}' must be >= 0, found {v.min():g}")
        out[key] = v
    return out


# Measured peak of `analyze` per checkpoint, beyond the loaded arrays: about 10 p×p float64
# matrices (Σ_W, Σ_B, Σ_T, eigenvectors, pseudo-inverses; 10.4 at p = 1200..2400) plus ~200 MiB
# of compilation. Rounded up, so that a refusal is never a surprise and a pass is not a gamble.
ANALYSIS_PP_MATRICES = 16
ANALYSIS_BASE_BYTES = 256 << 20
# O(p³) work of one checkpoint (several eigendecompositions; `analyze` ran at ~7e8 p³/s on two
# cores, about 1.4e10 flop/s at this count).
ANALYSIS_FLOP_PER_P3 = 20
# What every checkpoint costs whatever its size: its record (a dict of Python floats and lists,
# then JSON and the table) and one dispatch of the compiled analysis (~0.7 ms, counted as the
# flop it could have done), so that a file of 10**7 tiny checkpoints is sized too.
ANALYSIS_RECORD_BYTES = 4096
ANALYSIS_CALL_FLOP = 1e7


def analysis_cost(K: int, n: int, p: int, C: int, itemsize: int = 8, w_itemsize: int = 0):
    """(bytes, flop of one checkpoint) of loading and analysing K checkpoints of [n, p] features
    (`w_itemsize` > 0 when a classifier W [K, C, p] is loaded too)."""
    loaded = K * n * p * itemsize + K * C * p * w_itemsize
    as_float64 = K * n * p * 9 + (K * C * p * 8 if w_itemsize else 0)  # copies + isfinite mask
    # labels: as loaded, as int64, and the per-class counts' work arrays
    working = 8 * (ANALYSIS_PP_MATRICES * p * p + 4 * n * p + 4 * C * p + n * C + 3 * n)
    records = K * ANALYSIS_RECORD_BYTES
    per_checkpoint = ANALYSIS_FLOP_PER_P3 * p**3 + 2 * n * p * p + ANALYSIS_CALL_FLOP
    return loaded + as_float64 + working + records + ANALYSIS_BASE_BYTES, per_checkpoint


def check_p_over_n(n: int, p: int, flop: float, source: str, fix: str) -> None:
    """Refuse p ≫ n: the n samples span at most n dimensions, so one checkpoint's p×p
    factorisations (`flop`) beyond them are waste; they are held to a thousandth of the work
    limit (p ≈ 3700 by default) rather than the whole of it."""
    from .._run.resources import P_OVER_N_WORK_FRACTION

    if p > n:
        check_work(
            flop,
            f"{source}: p = {p} feature dimensions for only n = {n} samples (they span at most "
            f"{n} dimensions), yet analysing one checkpoint (p×p eigendecompositions)",
            fix,
            fraction=P_OVER_N_WORK_FRACTION,
        )


def check_analysis_resources(K: int, n: int, p: int, C: int, source: str, **itemsizes) -> None:
    """Refuse, before anything is loaded, features whose analysis would not fit or not end:
    p ≫ n (`check_p_over_n`), memory over the limit, O(p³) work over the limit."""
    memory, flop = analysis_cost(K, n, p, C, **itemsizes)
    check_analysis_cost(K, n, p, memory, flop, source)


def check_analysis_cost(K: int, n: int, p: int, memory, flop, source: str) -> None:
    """Refuse an analysis of K checkpoints [n, p] whose p ≫ n, memory or O(p³) work is over the
    limits, with the fix (in memory or streamed: only the cost model differs)."""
    narrower = (
        f"project the features onto at most {n} dimensions (e.g. PCA) or capture a narrower layer"
        if p > n
        else "capture a narrower layer"
    )
    check_p_over_n(n, p, flop, source, narrower)
    check_memory(
        memory,
        f"{source}: analysing features [{K}, {n}, {p}] (p×p matrices of {format_bytes(8 * p * p)})",
        f"analyse fewer checkpoints, or {narrower}",
    )
    check_work(
        K * flop,
        f"{source}: analysing {K} checkpoints of p = {p} features",
        f"analyse fewer checkpoints, or {narrower}",
    )


def _features_check(source: str):
    """The `load_npz` check of a features file: sizes from the headers, refused before reading."""

    def check(headers: dict[str, ArrayHeader]) -> None:
        h = headers.get("features")
        if h is None or len(h.shape) not in (2, 3) or 0 in h.shape:
            return  # validation names the problem once the (small) arrays are read
        K, n, p = (1, *h.shape) if len(h.shape) == 2 else h.shape
        w = headers.get("W")
        C = w.shape[-2] if w is not None and len(w.shape) in (2, 3) else 1
        check_analysis_resources(
            K,
            n,
            p,
            C,
            source,
            itemsize=h.dtype.itemsize,
            w_itemsize=0 if w is None else w.dtype.itemsize,
        )

    return check


def load_features(path) -> FeaturesFile:
    """Load and validate a features file (schema in the module docstring and docs/reference/file-formats.md).

    Only the schema's members are read (other keys are never loaded; no pickle), and only after
    their headers show that the analysis fits in memory and work (`check_analysis_resources`).

    **Arguments:**

    - `path`: a `.npz` features file (`centralpath train` writes one; `save_features` too).

    **Returns:** a `FeaturesFile`: `features` [K, n, p] float64, `labels` [n], `num_classes`,
    `epochs` [K], `weight_decay`, `W` [K, C, p] and `b` [K, C] (or None), and the training
    record where the file has one. A file that breaks the schema is a `ValueError` with one line
    naming the member and the fix.

    ```python
    import centralpath as cp

    ff = cp.load_features("runs/digits/features.npz")
    records = cp.analyze(ff)  # in memory; cp.analyze(path) streams instead
    ```
    """
    source = f"features file {path}"
    with _open_npz(Path(path), "features file") as zf:
        check_one_kind(_members(zf), source)
    arrays = load_npz(
        path, "features file", keys=FEATURE_KEYS + TRAINING_KEYS, check=_features_check(source)
    )
    return validate_features_arrays(arrays, source)


def save_features(
    path, *, features, labels, W=None, b=None, epochs=None, weight_decay=None, **extra
) -> None:
    """Write a features file atomically, in the schema `load_features` reads (a `loss` given
    as a Python string is stored as a fixed-width unicode array, loadable without pickle)."""
    if isinstance(extra.get("loss"), str):
        extra["loss"] = np.asarray(extra["loss"], dtype=np.str_)
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


# --------------------------------------------------------------------------- statistics files
# A statistics file is checked as what it claims to be: covariances, counts and ranges, before
# any metric reads it (`_stream` calls these at load time and per checkpoint).

#: The statistics-file versions this package reads (`stats_version`; absent reads as 1).
STATS_VERSIONS = (1,)
#: Σ_W's smallest eigenvalue may lie below zero by this fraction of its largest diagonal entry
#: (≥ its largest eigenvalue / p): a rank-deficient Σ_W accumulated by this package from float32
#: features reached −8e-16 of it (p = 256, n = 20,000, rank 100, 20 dead units; p = 512,
#: n = 5,000: −6e-16); a covariance lower than 1e-8 of it is not one.
COVARIANCE_RTOL = 1e-8
#: Sample counts are float64 in a statistics file: beyond 2**53 they are no longer whole numbers
#: (n + 1 == n), and their total — the n every Σ is divided by — is wrong.
MAX_EXACT_COUNT = 2**53
#: Members that only a statistics file holds (`features` only a features file).
STATS_ONLY_KEYS = ("sigma_w", "class_means", "counts", "nc4_mismatches", "stats_version")


def check_one_kind(keys, source: str) -> None:
    """A file is a features file or a statistics file, never both: which one's numbers the
    analysis would read is otherwise a guess."""
    both = [k for k in STATS_ONLY_KEYS if k in keys]
    if "features" in keys and both:
        raise InputError(
            f"{source} holds both 'features' and statistics members ({', '.join(map(repr, both))}); "
            "a file is one kind — keep the features (drop the statistics members) or save the "
            "statistics in a file of their own"
        )


def check_statistics_record(small: dict, counts: np.ndarray, source: str) -> None:
    """The small members of a statistics file: `stats_version` known, K ≥ 1 checkpoints, counts
    positive whole numbers whose total float64 holds exactly, a positive feature spread within
    twice the features' largest magnitude. `counts` [K, C] is already finite and whole."""
    if "stats_version" in small:
        v = np.asarray(small["stats_version"])
        ok = v.ndim == 0 and np.issubdtype(v.dtype, np.integer) and int(v) in STATS_VERSIONS
        require(
            ok,
            f"{source}: 'stats_version' is {v.tolist()!r}, but this package reads statistics "
            f"files of version {', '.join(map(str, STATS_VERSIONS))}; re-save the statistics "
            "with this version (centralpath analyze FEATURES --save-stats) or upgrade centralpath",
        )
    K = counts.shape[0]
    require(
        K >= 1,
        f"{source} holds no checkpoint (K = 0); save the statistics of at least one checkpoint",
    )
    big = np.argwhere(counts > MAX_EXACT_COUNT)
    if big.size:
        k, c = (int(x) for x in big[0])
        raise InputError(
            f"{source}: 'counts' of class {c} at checkpoint {k} is {counts[k, c]:.3g}, beyond "
            f"2**53 = {MAX_EXACT_COUNT:.3g} samples, where float64 counts are no longer whole; "
            "save the true sample counts"
        )
    totals = [math.fsum(row) for row in counts]  # each count ≤ 2**53: the sum cannot overflow
    k = int(np.argmax(totals))
    require(
        totals[k] <= MAX_EXACT_COUNT,
        f"{source}: 'counts' at checkpoint {k} total {totals[k]:.3g} samples, beyond 2**53 = "
        f"{MAX_EXACT_COUNT:.3g}, where float64 counts are no longer whole; save the true sample "
        "counts",
    )
    limits = {}
    for key in ("feature_max_abs", "feature_spread"):
        if key in small:
            limits[key] = np.atleast_1d(np.asarray(small[key], dtype=np.float64))
    spread, top = limits.get("feature_spread"), limits.get("feature_max_abs")
    if top is not None and top.shape == (K,):
        bad = np.flatnonzero(~(top >= 0))
        if bad.size:
            k = int(bad[0])
            raise InputError(
                f"{source}: 'feature_max_abs' at checkpoint {k} is {top[k]:.3g}, but it is the "
                "largest |h|, a number >= 0; re-save the statistics (or drop 'feature_max_abs')"
            )
    if spread is not None and spread.shape == (K,):
        bad = np.flatnonzero(~(spread > 0))
        if bad.size:
            k = int(bad[0])
            raise InputError(
                f"{source}: 'feature_spread' at checkpoint {k} is {float(spread[k]):.3g}, but it "
                "is the largest range of a feature over the samples, > 0 for features that "
                "differ at all; re-save the statistics (or drop 'feature_spread')"
            )
        if top is not None and top.shape == (K,):
            bad = np.flatnonzero(spread > 2 * top * (1 + 1e-12))
            if bad.size:
                k = int(bad[0])
                raise InputError(
                    f"{source}: 'feature_spread' at checkpoint {k} is {spread[k]:.3g}, more than "
                    f"twice 'feature_max_abs' = {top[k]:.3g}, which no features can be; re-save "
                    "the statistics"
                )


def check_covariance(name: str, sigma: np.ndarray, k: int, source: str) -> None:
    """A finite p×p matrix read as a covariance: symmetric, and positive semidefinite to
    `COVARIANCE_RTOL` of its largest diagonal entry (a Cholesky factorisation of Σ + δI, p³/3
    flop, decides; the eigenvalues are computed only to name a failure)."""
    scale = float(np.max(np.abs(sigma))) if sigma.size else 0.0
    asym = float(np.max(np.abs(sigma - sigma.T))) if sigma.size else 0.0
    require(
        asym <= 1e-12 * max(scale, np.finfo(float).tiny),
        f"{source}: '{name}' at checkpoint {k} is not symmetric (|S - S^T| = "
        f"{asym:.1e}); it is not a covariance — re-save the statistics",
    )
    if scale == 0.0:
        return  # Σ = 0: every sample at its class mean (perfect collapse), a covariance
    diagonal = float(np.max(np.diagonal(sigma)))
    delta = COVARIANCE_RTOL * max(diagonal, 0.0)
    try:
        if diagonal <= 0.0:
            raise np.linalg.LinAlgError  # no positive variance but a nonzero entry: not PSD
        np.linalg.cholesky(sigma + delta * np.eye(sigma.shape[0]))
    except np.linalg.LinAlgError:
        eig = np.linalg.eigvalsh(sigma)
        raise InputError(
            f"{source}: '{name}' at checkpoint {k} is not a covariance: its smallest eigenvalue "
            f"is {eig[0]:.3g} against a largest of {eig[-1]:.3g} (a covariance's are >= 0, to "
            f"{COVARIANCE_RTOL:g} of its largest variance); re-save the statistics as "
            "Ave (h - mu_c)(h - mu_c)^T"
        ) from None


# --------------------------------------------------------------------------- text files
# Every JSON and TOML file the tool reads (configs, κ files, a run's own records) is read
# through these: a size limit checked while reading (a device such as /dev/zero has no size to
# stat), a nesting limit, one line for any failure.

#: TOML configurations and sweep files: a sweep's grid lists are a few kilobytes; tomllib
#: builds ~100 bytes of Python objects per byte of numbers, so 4 MiB parses in ~1 s.
MAX_TOML_BYTES = 4 << 20
#: JSON: a `compare --json` output of 1,000 checkpoints and three models is ~3 MiB.
MAX_JSON_BYTES = 64 << 20
#: Nesting depth of any JSON or TOML value: ours nest at most 4 deep; Python's parsers recurse
#: once per level (a RecursionError at ~1000).
MAX_NESTING = 64


def read_text(path, what: str, *, limit: int, fix: str) -> str:
    """The text of a file of at most `limit` bytes (UTF-8), read without trusting its size."""
    path = Path(path)
    require(path.exists(), f"{what} {path} does not exist; check the path")
    require(not path.is_dir(), f"{what} {path} is a folder, not a file; {fix}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as e:
        raise InputError(f"{what} {path} cannot be read ({e.strerror or e}); {fix}") from None
    if len(data) > limit:
        raise InputError(
            f"{what} {path} is larger than {format_bytes(limit)}, far beyond any file of its "
            f"kind; {fix}"
        )
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not UTF-8 text; {fix}") from None


def _nesting(value) -> int:
    """Depth of nested lists and dicts (iterative: the check must not recurse itself)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_NESTING:
                break
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _too_deep(what, path, fix) -> InputError:
    return InputError(
        f"{what} {path} nests lists or tables more than {MAX_NESTING} deep, which no file of "
        f"its kind does; {fix}"
    )


def read_json(path, what: str, *, fix: str, limit: int = MAX_JSON_BYTES):
    """A JSON file, bounded in size and nesting; one-line `InputError` otherwise."""
    text = read_text(path, what, limit=limit, fix=fix)
    try:
        value = json.loads(text)
    except RecursionError:
        raise _too_deep(what, path, fix) from None
    except ValueError as e:
        raise InputError(f"{what} {path} is not readable JSON ({e}); {fix}") from None
    if _nesting(value) > MAX_NESTING:
        raise _too_deep(what, path, fix)
    return value


def read_toml(path, what: str, *, fix: str, limit: int = MAX_TOML_BYTES) -> dict:
    """A TOML file, bounded in size and nesting; one-line `InputError` otherwise."""
    import tomllib

    text = read_text(path, what, limit=limit, fix=fix)
    try:
        value = tomllib.loads(text)
    except RecursionError:
        raise _too_deep(what, path, fix) from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{what} {path} is not valid TOML ({e}); {fix}") from None
    if _nesting(value) > MAX_NESTING:
        raise _too_deep(what, path, fix)
    return value
