"""Streamed inputs of `analyze` and `compare`: one checkpoint at a time, samples in chunks.

Sources (`open_source`):

- a features file (`.npz`, schema in `_io`). A stored member (numpy.savez) is memory-mapped at
  its data offset, read from the zip's local header (numpy cannot map inside a zip); a deflated
  one (numpy.savez_compressed) is decompressed chunk by chunk. Only the chunk in hand is in
  memory, so memory is O(chunk·p + p² + C·p) whatever n and K.
- a directory of `.npy` members (an unzipped features or statistics file: `features.npy`,
  `labels.npy`, …), memory-mapped;
- a directory of per-checkpoint `.npz` files (features or statistics files of one or more
  checkpoints each), read in the natural order of their names (`ckpt-2` before `ckpt-10`);
- a statistics file (`sigma_w` instead of `features`; schema in `STATS_SCHEMA`), which every
  metric but the per-sample ones needs; NC4 comes from its stored count.

Nothing is trusted: every member's header is checked as `_io` checks them, and the memory and
work of the streamed analysis are estimated from the headers and refused before any data is read.
"""

from __future__ import annotations

import contextlib
import math
import re
import struct
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._errors import InputError, require
from .._run.resources import check_memory, format_bytes
from .._run.runtime import blas_threads, large_products, single_threaded_blas
from . import _io
from ._accumulate import ClassBlocks, FoldedNC4, HostMoments, StatsAccumulator, merge_moments
from ._io import (
    ANALYSIS_BASE_BYTES,
    ANALYSIS_CALL_FLOP,
    ANALYSIS_FLOP_PER_P3,
    ANALYSIS_PP_MATRICES,
    ANALYSIS_RECORD_BYTES,
    EPOCH_RECORD_KEYS,
    FEATURE_KEYS,
    TRAINING_KEYS,
    FeaturesFile,
    _as_float,
    _Bounded,
    _member_header,
    _members,
    _open_npz,
    _refuse,
    _training_record,
    check_analysis_cost,
    epochs_and_weight_decay,
    read_npy_header,
    validate_features_arrays,
)

STATS_KEYS = (
    "sigma_w",
    "class_means",
    "counts",
    "W",
    "b",
    "nc4_mismatches",
    "feature_max_abs",
    "feature_spread",
    "epochs",
    "weight_decay",
    "num_classes",
    "stats_version",
)
STATS_VERSION = 1

STATS_SCHEMA = """\
| key               | shape / type          | meaning                                              |
|-------------------|-----------------------|------------------------------------------------------|
| `sigma_w`         | float64 [K, p, p]     | Σ_W = Ave (h − μ_c)(h − μ_c)ᵀ (divided by n)          |
| `class_means`     | float64 [K, C, p]     | μ_c (rows are classes, as in W)                      |
| `counts`          | number [K, C]         | n_c at each checkpoint                               |
| `W`, `b`          | float [K, C, p], [K, C] | the classifier (optional)                          |
| `nc4_mismatches`  | number [K]            | samples where W h + b and the nearest mean disagree (optional, with W) |
| `feature_max_abs`, `feature_spread` | float [K] | max |h| and the largest per-unit range (optional: the float64 range check) |
| `epochs`, `weight_decay`, `num_classes` and the training record | as in a features file |
| `stats_version`   | int scalar            | 1 (absent reads as 1; another value is refused)     |
"""

#: A deflated member that expands more than this many-fold is a zip bomb, not features:
#: float features compress ~1.1:1, ReLU features with many dead units ~10:1; a run of zeros
#: reaches ~1000:1 (8 GiB in 8 MiB).
MAX_DEFLATE_RATIO = 100

#: float64 bytes of one chunk of samples: large enough for BLAS to run at speed, small enough
#: to stay in cache-sized pieces beside the p×p accumulator.
DEFAULT_CHUNK_BYTES = 8 << 20


def chunk_rows(p: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Samples per chunk for p-dimensional features (at least 64)."""
    return max(64, chunk_bytes // (8 * max(p, 1)))


# --------------------------------------------------------------------------- lazy arrays


class _Lazy:
    """An array [K, …] in a file, read one checkpoint (or a range of its rows) at a time."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def rows(self, k: int, start: int, stop: int, stream: int = 0) -> np.ndarray:
        raise NotImplementedError

    def block(self, k: int) -> np.ndarray:
        """Checkpoint k whole (W [C, p], Σ_W [p, p]: small), as float64."""
        return np.array(self.rows(k, 0, self.shape[1]), dtype=np.float64)


class _InMemory(_Lazy):
    def __init__(self, array: np.ndarray):
        self.array = array if array.ndim >= 3 or array.ndim == 1 else array[None]
        self.shape, self.dtype = self.array.shape, self.array.dtype

    def rows(self, k, start, stop, stream=0):
        return self.array[k, start:stop]


class _Mapped(_Lazy):
    """A stored `.npy` image at `offset` of `path`, memory-mapped one range of rows at a time:
    the pages of a chunk leave the process's memory once the chunk has been converted."""

    def __init__(self, path, offset: int, shape, dtype, fortran: bool, leading: bool):
        self.path, self.offset, self.file_shape = Path(path), int(offset), tuple(shape)
        self.dtype, self.fortran = np.dtype(dtype), bool(fortran)
        self.shape = self.file_shape if leading else (1, *self.file_shape)

    def rows(self, k, start, stop, stream=0):
        stop = min(stop, self.shape[1])
        if stop <= start:
            return np.empty((0, *self.shape[2:]), self.dtype)
        if self.fortran:
            # Column-major: a row range is not contiguous; map the whole array (address space
            # only) and copy the rows out, so the pages stay mapped only during the copy.
            whole = np.memmap(
                self.path, self.dtype, "r", self.offset, self.file_shape, order="F"
            ).reshape(self.shape, order="F")
            return np.array(whole[k, start:stop])
        row = math.prod(self.shape[2:]) * self.dtype.itemsize
        first = (k * self.shape[1] + start) * row
        return np.memmap(
            self.path,
            self.dtype,
            "r",
            self.offset + first,
            (stop - start, *self.shape[2:]),
        )


class _Deflated(_Lazy):
    """A deflated member, decompressed sequentially; each `stream` has its own cursor, so two
    passes over the same checkpoint (statistics, then NC4) decompress it twice, not K times."""

    def __init__(self, path, info: zipfile.ZipInfo, header_len: int, shape, dtype, leading, what):
        self.path, self.info, self.header_len = Path(path), info, header_len
        self.dtype, self.what = np.dtype(dtype), what
        self.shape = tuple(shape) if leading else (1, *shape)
        self._cursors: dict[int, tuple] = {}

    def _excess(self):
        return _refuse(
            self.what,
            self.path,
            f"member {self.info.filename!r} expands past its declared size of "
            f"{format_bytes(self.info.file_size)}: it is damaged or a zip bomb",
        )

    def _open(self):
        zf = zipfile.ZipFile(self.path)
        raw = zf.open(self.info)
        fh = _Bounded(raw, self.info.file_size, self._excess)
        fh.read(self.header_len)
        return zf, raw, fh, self.header_len

    def rows(self, k, start, stop, stream=0):
        stop = min(stop, self.shape[1])
        row = math.prod(self.shape[2:]) * self.dtype.itemsize
        want = self.header_len + (k * self.shape[1] + start) * row
        cursor = self._cursors.get(stream)
        try:
            if cursor is None or cursor[3] > want:
                if cursor is not None:
                    cursor[1].close()
                    cursor[0].close()
                cursor = self._open()
            zf, raw, fh, pos = cursor
            while pos < want:  # skip forward in bounded blocks
                skipped = len(fh.read(min(want - pos, 1 << 24)))
                if skipped == 0:
                    break
                pos += skipped
            nbytes = (stop - start) * row
            data = fh.read(nbytes)
            pos += len(data)
            if pos == self.info.file_size:
                fh.read(1)  # the end of the member: zipfile checks its CRC here
            self._cursors[stream] = (zf, raw, fh, pos)
        except InputError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError) as e:
            raise _refuse(
                self.what,
                self.path,
                f"member {self.info.filename!r} is not readable ({type(e).__name__}: {e})",
            ) from None
        require(
            len(data) == nbytes,
            f"{self.what} {self.path} member {self.info.filename!r} ends early: it is truncated; "
            "re-save it with numpy.savez",
        )
        return np.frombuffer(data, self.dtype).reshape(stop - start, *self.shape[2:])

    def close(self):
        for zf, raw, _, _ in self._cursors.values():
            raw.close()
            zf.close()
        self._cursors.clear()


class _Concat(_Lazy):
    def __init__(self, parts: list[_Lazy]):
        self.parts = parts
        self.shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
        self.dtype = parts[0].dtype
        self._index = [(i, k) for i, p in enumerate(parts) for k in range(p.shape[0])]

    def rows(self, k, start, stop, stream=0):
        i, local = self._index[k]
        return self.parts[i].rows(local, start, stop, stream)


def _random_access(lazy: _Lazy) -> bool:
    """Whether chunks can be read in any order at no extra cost (not a deflated member, which
    is decompressed from its start)."""
    if isinstance(lazy, _Concat):
        return all(_random_access(part) for part in lazy.parts)
    return isinstance(lazy, _Mapped | _InMemory)


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class _Header:
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int
    fortran: bool


class _Container:
    """The members of one file (or folder of `.npy` files): headers, small arrays, lazy arrays."""

    path: Path
    what: str
    headers: dict[str, _Header]

    def load(self, keys) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def lazy(self, key: str) -> _Lazy:
        raise NotImplementedError


class _ZipContainer(_Container):
    def __init__(self, path: Path, what: str, keys):
        self.path, self.what = Path(path), what
        with _open_npz(self.path, what) as zf:  # existence, zip magic, directory size
            members = _members(zf)
            self.infos = {k: members[k] for k in keys if k in members}
            # Compression method, encryption, pickles and a header declaring more than the
            # member holds are refused here, before anything is read.
            headers = {
                k: _member_header(zf, info, k, what, self.path) for k, info in self.infos.items()
            }
        self.headers = {}
        for k, h in headers.items():
            self.headers[k] = _Header(k, h.shape, h.dtype, h.nbytes, h.fortran)
            self.infos[k] = (h.info, h.header_len)

    def load(self, keys):
        keys = [k for k in keys if k in self.headers]
        return _io.load_npz(self.path, self.what, keys=keys) if keys else {}

    def lazy(self, key: str, leading: bool) -> _Lazy:
        info, header_len = self.infos[key]
        h = self.headers[key]
        if info.compress_type == zipfile.ZIP_STORED:
            offset = _stored_data_offset(self.path, info, self.what) + header_len
            size = self.path.stat().st_size
            if offset + h.nbytes > size:
                raise _refuse(
                    self.what,
                    self.path,
                    f"member {key!r} declares {format_bytes(h.nbytes)} of data past the end of "
                    "the file: it is truncated or forged",
                )
            return _Mapped(self.path, offset, h.shape, h.dtype, h.fortran, leading)
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > MAX_DEFLATE_RATIO:
            raise _refuse(
                self.what,
                self.path,
                f"member {key!r} expands {ratio:.0f}-fold ({format_bytes(info.compress_size)} of "
                f"deflate stream declare {format_bytes(info.file_size)}): a zip bomb, not "
                f"features (real ones compress less than {MAX_DEFLATE_RATIO}:1)",
            )
        if h.fortran:
            # Column-major data cannot be decompressed a row range at a time: read it whole
            # (its memory was checked with the member's declared size).
            check_memory(
                2 * h.nbytes,
                f"reading the column-major compressed member {key!r} of {self.what} {self.path}",
                "re-save it with numpy.savez (uncompressed members are memory-mapped)",
            )
            return _InMemory(_io.load_npz(self.path, self.what, keys=[key])[key])
        return _Deflated(self.path, info, header_len, h.shape, h.dtype, leading, self.what)


def _stored_data_offset(path: Path, info: zipfile.ZipInfo, what: str) -> int:
    """Where a stored member's bytes begin: after its local header, whose name and extra field
    may differ in length from the central directory's."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise _refuse(what, path, f"member {info.filename!r} has no local zip header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


class _NpyDirContainer(_Container):
    """A folder of `.npy` files named as the members of a features or statistics file."""

    def __init__(self, path: Path, what: str, keys):
        self.path, self.what = Path(path), what
        self.files, self.headers, self.offsets = {}, {}, {}
        for k in keys:
            f = self.path / f"{k}.npy"
            if not f.is_file():
                continue
            with open(f, "rb") as fh:
                shape, fortran, dtype, header_len = read_npy_header(fh, what, f, f"{k}.npy")
            nbytes = math.prod(shape) * dtype.itemsize
            available = f.stat().st_size - header_len
            if nbytes > available:
                raise _refuse(
                    what,
                    f,
                    f"declares shape {shape} {dtype} ({format_bytes(nbytes)}) but holds only "
                    f"{format_bytes(max(available, 0))} of data: it is truncated or forged",
                    "re-save it with numpy.save",
                )
            self.files[k], self.offsets[k] = f, header_len
            self.headers[k] = _Header(k, shape, dtype, nbytes, fortran)

    def load(self, keys):
        out = {}
        keys = [k for k in keys if k in self.headers]
        total = sum(self.headers[k].nbytes for k in keys)
        check_memory(total, f"reading {self.what} {self.path}", "save smaller arrays")
        for k in keys:
            try:
                out[k] = np.load(self.files[k], allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise _refuse(
                    self.what, self.files[k], f"is not readable ({type(e).__name__}: {e})"
                ) from None
        return out

    def lazy(self, key: str, leading: bool) -> _Lazy:
        h = self.headers[key]
        return _Mapped(self.files[key], self.offsets[key], h.shape, h.dtype, h.fortran, leading)


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """One checkpoint as `analyze` consumes it: its statistics (with the NC4 count when there
    is a classifier), W and b, and the range of its features (None when not known)."""

    epoch: float
    acc: StatsAccumulator
    W: np.ndarray | None
    b: np.ndarray | None
    feature_max_abs: float | None = None
    feature_spread: float | None = None


@dataclass
class StreamedFeatures:
    """A features file read lazily: the metadata of `FeaturesFile` (labels, epochs, λ, the
    training record; attribute access falls through to it), features and W read per checkpoint."""

    meta: FeaturesFile
    features: _Lazy
    W: _Lazy | None
    source: str
    kind: str = "features"
    _blocks: dict = field(default_factory=dict, repr=False)
    nc4_rechecked: int = 0  # samples the last checkpoint read again for NC4 (`FoldedNC4`)

    def __getattr__(self, name):
        if name in ("meta", "_blocks"):  # not yet set (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.meta, name)

    @property
    def num_checkpoints(self) -> int:
        return self.features.shape[0]

    @property
    def num_samples(self) -> int:
        return self.features.shape[1]

    @property
    def dim(self) -> int:
        return self.features.shape[2]

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.meta.labels, minlength=self.meta.num_classes)

    def class_blocks(self, rows: int) -> list[ClassBlocks]:
        """Each chunk's samples grouped by class, made once per file: the labels are the same at
        every checkpoint."""
        blocks = self._blocks.get(rows)
        if blocks is None:
            labels, C = self.meta.labels, self.meta.num_classes
            blocks = [
                ClassBlocks(labels[start : start + rows], C)
                for start in range(0, self.num_samples, rows)
            ]
            self._blocks = {rows: blocks}  # one chunk size at a time
        return blocks

    def checkpoint(self, k: int, rows: int | None = None) -> Checkpoint:
        """Checkpoint k: statistics, the features' range and (with a classifier) the NC4 count
        in one pass over its chunks; only the samples whose nearest class mean the final means
        could change are read again (`FoldedNC4`).

        With more than one thread allowed (`_runtime.blas_threads`) and a file that can be read
        at any offset, the chunks are spread over that many threads, chunk i to thread i mod T:
        each accumulates its own moments (every product on one BLAS thread), merged exactly at
        the end (`merge_moments`). Unlike a SYRK split over BLAS threads, the threads never wait
        for each other within a chunk, so a loaded machine slows them without stalling them."""
        C, n, p = self.meta.num_classes, self.num_samples, self.dim
        rows = rows or chunk_rows(p)
        blocks = self.class_blocks(rows)
        starts = range(0, n, rows)
        threads = min(blas_threads(), len(starts), 255) if _random_access(self.features) else 1
        threads = max(threads, 1)
        # One thread: its SYRK gets the threads the user allows (a single chunk, or a deflated
        # file read in order); several: one BLAS thread each. In place: no p×p temporaries.
        parts = [HostMoments(C, p, syrk_threads=1 if threads > 1 else None) for _ in range(threads)]
        W = b = nc4 = None
        if self.W is not None:
            W = _io.require_finite("W", self.W.block(k), self.source, k)
            b = np.asarray(self.meta.b[k], np.float64)
            nc4 = FoldedNC4(W, b, n)
        stop = threading.Event()

        def accumulate(j: int) -> None:
            moments = parts[j]
            for i in range(j, len(starts), threads):
                if stop.is_set():
                    return
                chunk = self.features.rows(k, starts[i], starts[i] + rows, stream=0)
                X = moments.add(chunk, blocks=blocks[i])
                # The column ranges (in the file's dtype) show NaN and Inf: finiteness, the
                # magnitude and the spread in two reductions of the chunk.
                if not (np.all(np.isfinite(moments.lo)) and np.all(np.isfinite(moments.hi))):
                    _io.require_finite("features", np.asarray(chunk, np.float64), self.source, k)
                if nc4 is not None:
                    nc4.score(X, blocks[i], starts[i], moments, j)
                del chunk, X  # a memory-mapped chunk is unmapped here

        with single_threaded_blas():  # thin products on one thread
            if threads == 1:
                accumulate(0)
            else:
                with ThreadPoolExecutor(threads, thread_name_prefix="centralpath-chunks") as pool:
                    futures = [pool.submit(accumulate, j) for j in range(threads)]
                    try:
                        for future in futures:
                            future.result()
                    except BaseException:  # a refusal or an interrupt: the others stop too
                        stop.set()
                        raise
            merged = parts[0].moments()
            for part in parts[1:]:
                merged = merge_moments(np, merged, part.moments())
            acc = StatsAccumulator.from_arrays(*merged)
            if nc4 is not None:
                missed = nc4.count(
                    parts,
                    acc.means,
                    self.meta.labels,
                    lambda start, stop: self.features.rows(k, start, stop, stream=1),
                    rows,
                )
                self.nc4_rechecked = nc4.rechecked  # how many samples were read again
                acc = StatsAccumulator.from_arrays(acc.counts, acc.means, acc.scatter, missed, n)
        lo = np.min([part.lo for part in parts], axis=0)
        hi = np.max([part.hi for part in parts], axis=0)
        big = float(np.max(np.maximum(np.abs(lo), np.abs(hi))))
        spread = float(np.max(hi - lo))
        return Checkpoint(float(self.meta.epochs[k]), acc, W, b, big, spread)

    def frame_scatter(self, k: int, stats, rtol: float, rows: int | None = None):
        """Σ_W of checkpoint k re-accumulated in the collapse frame of `stats`, one more pass
        over its chunks (`_metrics.FrameScatter`): what lets a streamed analysis resolve ω_j
        under anisotropic collapse as far as one with the samples in memory."""
        import jax.numpy as jnp

        from .._metrics import FrameScatter, snr_frame

        frame = snr_frame(stats, rtol=rtol)
        F = np.asarray(frame.F)
        means = np.asarray(stats.class_means).T  # [C, p], float64
        n, p = self.num_samples, self.dim
        rows = rows or chunk_rows(p)
        labels = self.meta.labels
        scatter = np.zeros((p, p))
        squares = 0.0
        with large_products():  # two n·p² products: worth the user's threads
            for start in range(0, n, rows):
                chunk = self.features.rows(k, start, start + rows, stream=0)
                deviations = np.asarray(chunk, np.float64) - means[labels[start : start + rows]]
                E = deviations @ F
                scatter += E.T @ E
                squares += float(np.sum(deviations**2))
                del chunk, deviations, E
        return FrameScatter(frame, jnp.asarray(scatter / n), jnp.asarray(np.sqrt(squares / n)))

    def checkpoints(self, rows: int | None = None) -> Iterator[Checkpoint]:
        try:
            for k in range(self.num_checkpoints):
                yield self.checkpoint(k, rows)
        finally:  # also when the caller stops early (a refusal at some checkpoint)
            for lazy in (self.features, self.W):
                if isinstance(lazy, _Deflated):
                    lazy.close()


@dataclass
class StatsFile:
    """A statistics file (`STATS_SCHEMA`): per checkpoint the counts, class means, Σ_W and
    optionally W, b and the NC4 count; Σ_W and W are read one checkpoint at a time."""

    counts: np.ndarray  # [K, C]
    class_means: _Lazy  # [K, C, p]
    sigma_w: _Lazy  # [K, p, p]
    num_classes: int
    epochs: np.ndarray
    weight_decay: float
    W: _Lazy | None = None
    b: np.ndarray | None = None
    nc4_mismatches: np.ndarray | None = None
    feature_max_abs: np.ndarray | None = None
    feature_spread: np.ndarray | None = None
    record: dict = field(default_factory=dict)
    source: str = "statistics file"
    kind: str = "stats"

    def __getattr__(self, name):
        # The training record (loss, test_accuracy, …) reads like a FeaturesFile's: None if absent.
        if name in TRAINING_KEYS:
            return self.__dict__.get("record", {}).get(name)
        raise AttributeError(name)

    @property
    def num_checkpoints(self) -> int:
        return self.counts.shape[0]

    @property
    def dim(self) -> int:
        return self.sigma_w.shape[-1]

    @property
    def num_samples(self) -> int:
        return int(round(float(self.counts[0].sum())))

    def class_counts(self) -> np.ndarray:
        return self.counts[0]

    def checkpoint(self, k: int, rows: int | None = None) -> Checkpoint:
        counts = self.counts[k]
        sigma = _io.require_finite("sigma_w", self.sigma_w.block(k), self.source, k)
        _io.check_covariance("sigma_w", sigma, k, self.source)
        means = _io.require_finite("class_means", self.class_means.block(k), self.source, k)
        n = float(counts.sum())
        acc = StatsAccumulator.from_arrays(counts, means, sigma * n)
        W = b = None
        if self.W is not None:
            W = _io.require_finite("W", self.W.block(k), self.source, k)
            b = np.asarray(self.b[k], np.float64)
            if self.nc4_mismatches is not None:
                acc = StatsAccumulator.from_arrays(
                    counts, means, sigma * n, self.nc4_mismatches[k], n
                )
        big = None if self.feature_max_abs is None else float(self.feature_max_abs[k])
        spread = None if self.feature_spread is None else float(self.feature_spread[k])
        return Checkpoint(float(self.epochs[k]), acc, W, b, big, spread)

    def checkpoints(self, rows: int | None = None) -> Iterator[Checkpoint]:
        for k in range(self.num_checkpoints):
            yield self.checkpoint(k, rows)


# --------------------------------------------------------------------------- resources


def streamed_analysis_cost(K: int, n: int, p: int, C: int, rows: int | None = None):
    """(bytes, flop of one checkpoint) of analysing K checkpoints of [n, p] features streamed in
    chunks of `rows` samples: the chunk (as read, grouped by class, as float64, NC4's scores),
    the labels and per-sample NC4 record, W and the p×p matrices of the metrics — nothing grows
    with K but the records."""
    rows = min(rows or chunk_rows(p), max(n, 1))
    working = 8 * (ANALYSIS_PP_MATRICES * p * p + 4 * rows * p + rows * C + 6 * C * p)
    # Each further thread of the streamed pass: its p×p moments and its chunk buffers.
    working += 8 * (blas_threads() - 1) * (p * p + 2 * rows * p + 3 * C * p)
    # The labels as loaded, as int64 and a count's work array; each chunk's grouping (the
    # order and the grouped labels, int64); NC4's per-sample record (two float64, two bools).
    labels = 8 * 3 * n + 16 * n + 18 * n
    records = K * ANALYSIS_RECORD_BYTES
    per_checkpoint = ANALYSIS_FLOP_PER_P3 * p**3 + 2 * n * p * p + ANALYSIS_CALL_FLOP
    return working + labels + records + ANALYSIS_BASE_BYTES, per_checkpoint


def check_streamed_resources(K: int, n: int, p: int, C: int, source: str) -> None:
    """`_io.check_analysis_resources` for a streamed analysis: p ≫ n, memory, work."""
    memory, flop = streamed_analysis_cost(K, n, p, C)
    check_analysis_cost(K, n, p, memory, flop, source)


def _numeric(name: str, h: _Header, source: str) -> None:
    require(
        np.issubdtype(h.dtype, np.floating) or np.issubdtype(h.dtype, np.integer),
        f"{source}: '{name}' must be a numeric array, got dtype {h.dtype}; save it as float32 "
        "or float64",
    )


# --------------------------------------------------------------------------- opening


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def open_source(path, what: str = "features file"):
    """A streamed `StreamedFeatures` or `StatsFile` for a path (module docstring), checked from
    headers and small members only; the features are read when `analyze` iterates over them."""
    path = Path(path)
    source = f"{what} {path}"
    if path.is_dir():
        if any((path / f"{k}.npy").is_file() for k in ("features", "sigma_w")):
            return _from_container(_NpyDirContainer(path, what, _ALL_KEYS), source)
        files = sorted(
            (f for f in path.iterdir() if f.suffix == ".npz" and f.is_file()), key=_natural_key
        )
        require(
            bool(files),
            f"{what} {path} is a folder without .npz files or a features.npy; pass a features "
            "file, or a folder of per-checkpoint .npz files",
        )
        parts = [_from_container(_ZipContainer(f, what, _ALL_KEYS), f"{what} {f}") for f in files]
        return _concatenate(parts, source) if len(parts) > 1 else parts[0]
    return _from_container(_ZipContainer(path, what, _ALL_KEYS), source)


_ALL_KEYS = tuple(dict.fromkeys(FEATURE_KEYS + STATS_KEYS + TRAINING_KEYS))


def _from_container(c: _Container, source: str):
    h = c.headers
    _io.check_one_kind(h, source)
    if "features" not in h and "sigma_w" in h:
        return _stats_from_container(c, source)
    if "features" not in h:
        validate_features_arrays(c.load(["labels"]), source)  # names what is missing
    fh = h["features"]
    _numeric("features", fh, source)
    require(
        len(fh.shape) in (2, 3),
        f"{source}: 'features' must be [n, p] or [K, n, p], got shape {fh.shape}",
    )
    K, n, p = (1, *fh.shape) if len(fh.shape) == 2 else fh.shape
    wh = h.get("W")
    C = wh.shape[-2] if wh is not None and len(wh.shape) in (2, 3) else 1
    if n > 0 and p > 0:
        check_streamed_resources(K, n, p, C, source)
    small = c.load([k for k in h if k not in ("features", "W")])
    arrays = dict(small)
    arrays["features"] = np.broadcast_to(np.zeros((), np.float64), fh.shape)
    streamed = ("features",)
    if wh is not None:
        _numeric("W", wh, source)
        arrays["W"] = np.broadcast_to(np.zeros((), np.float64), wh.shape)
        streamed = ("features", "W")
    meta = validate_features_arrays(arrays, source, streamed=streamed)
    features = c.lazy("features", leading=len(fh.shape) == 3)
    W = None if wh is None else c.lazy("W", leading=len(wh.shape) == 3)
    return StreamedFeatures(meta, features, W, source)


def _stats_from_container(c: _Container, source: str) -> StatsFile:
    h = c.headers
    missing = [k for k in ("class_means", "counts") if k not in h]
    require(
        not missing,
        f"{source} has 'sigma_w' but lacks {' and '.join(repr(k) for k in missing)}; a "
        "statistics file needs 'sigma_w' [K, p, p], 'class_means' [K, C, p] and 'counts' [K, C] "
        "(see docs/reference/file-formats.md)",
    )
    sh, mh = h["sigma_w"], h["class_means"]
    for name in ("sigma_w", "class_means", "counts"):
        _numeric(name, h[name], source)
    require(
        len(sh.shape) in (2, 3) and sh.shape[-1] == sh.shape[-2],
        f"{source}: 'sigma_w' must be [K, p, p] or [p, p], got shape {sh.shape}",
    )
    K = sh.shape[0] if len(sh.shape) == 3 else 1
    p = sh.shape[-1]
    require(
        len(mh.shape) == len(sh.shape) and mh.shape[-1] == p and mh.shape[:-2] == sh.shape[:-2],
        f"{source}: 'class_means' must be [K, C, p] = [{K}, C, {p}] to match 'sigma_w', got "
        f"{mh.shape}",
    )
    C = mh.shape[-2]
    check_streamed_resources(K, 0, p, C, source)
    small = c.load([k for k in h if k not in ("sigma_w", "class_means", "W")])
    counts = _as_float("counts", np.asarray(small["counts"]), source)
    counts = counts if counts.ndim == 2 else counts[None]
    require(
        counts.shape == (K, C),
        f"{source}: 'counts' must be [K, C] = [{K}, {C}], got {np.shape(small['counts'])}",
    )
    require(
        bool(np.all(counts == np.round(counts))) and bool(np.all(counts >= 0)),
        f"{source}: 'counts' must be whole numbers of samples >= 0",
    )
    require(C >= 2, f"{source}: found {C} class(es); neural collapse needs at least 2 classes")
    if "num_classes" in small:
        nc = np.asarray(small["num_classes"])
        require(
            nc.ndim == 0 and np.issubdtype(nc.dtype, np.integer) and int(nc) == C,
            f"{source}: 'num_classes' must be the integer C = {C} of 'counts'",
        )
    empty = np.argwhere(counts == 0)
    if empty.size:
        k, cls = (int(x) for x in empty[0])
        raise InputError(
            f"{source}: class {cls} has no sample at checkpoint {k}; drop it and relabel the "
            "classes to 0..C-1"
        )
    _io.check_statistics_record(small, counts, source)
    W = b = None
    if "W" in h:
        wh = h["W"]
        _numeric("W", wh, source)
        require(
            wh.shape in ((K, C, p),) + (((C, p),) if K == 1 else ()),
            f"{source}: 'W' must be [K, C, p] = [{K}, {C}, {p}], got {wh.shape}",
        )
        W = c.lazy("W", leading=len(wh.shape) == 3)
        if "b" in small:
            b = _as_float("b", np.asarray(small["b"]), source)
            b = b if b.ndim == 2 else b[None]
            require(b.shape == (K, C), f"{source}: 'b' must be [K, C] = [{K}, {C}], got {b.shape}")
        else:
            b = np.zeros((K, C))
    else:
        require("b" not in small, f"{source}: 'b' given without 'W'; save both or neither")
    per_checkpoint = {}
    for key in ("nc4_mismatches", "feature_max_abs", "feature_spread"):
        if key in small:
            v = _as_float(key, np.atleast_1d(np.asarray(small[key])), source)
            require(v.shape == (K,), f"{source}: '{key}' must be [K] = [{K}], got {v.shape}")
            per_checkpoint[key] = v
    if "nc4_mismatches" in per_checkpoint:
        v = per_checkpoint["nc4_mismatches"]
        require(
            W is not None and bool(np.all((v >= 0) & (v <= counts.sum(1)))),
            f"{source}: 'nc4_mismatches' must count samples (0..n) of a file with 'W'",
        )
    epochs, lam = epochs_and_weight_decay(small, K, source)
    record = _training_record(small, K, epochs, source)
    return StatsFile(
        counts=counts,
        class_means=c.lazy("class_means", leading=len(mh.shape) == 3),
        sigma_w=c.lazy("sigma_w", leading=len(sh.shape) == 3),
        num_classes=C,
        epochs=epochs,
        weight_decay=lam,
        W=W,
        b=b,
        record=record,
        source=source,
        **per_checkpoint,
    )


def _concatenate(parts: list, source: str):
    """One source from the sources of a folder's files (all features files, or all statistics
    files, of the same classes, dimension and weight decay)."""
    first = parts[0]
    kinds = {s.kind for s in parts}
    require(
        len(kinds) == 1,
        f"{source} mixes features and statistics files; keep one kind per folder",
    )
    for s in parts[1:]:
        require(
            (s.num_classes, s.dim) == (first.num_classes, first.dim),
            f"{s.source} has C = {s.num_classes}, p = {s.dim} but {first.source} has C = "
            f"{first.num_classes}, p = {first.dim}; one folder holds one network's checkpoints",
        )
        require(
            s.weight_decay == first.weight_decay,
            f"{s.source} has weight_decay {s.weight_decay} but {first.source} has "
            f"{first.weight_decay}; one folder holds one training run",
        )
        require(
            (s.W is None) == (first.W is None),
            f"{s.source} and {first.source} differ in having 'W'; save the classifier with every "
            "checkpoint or with none",
        )
    epochs = np.concatenate([s.epochs for s in parts])
    record = _concatenated_record(parts, source)
    if first.kind == "features":
        for s in parts[1:]:
            require(
                np.array_equal(s.meta.labels, first.meta.labels),
                f"{s.source} has other labels than {first.source}; every checkpoint of a folder "
                "must measure the same samples in the same order",
            )
        b = None if first.W is None else np.concatenate([s.meta.b for s in parts])
        meta = FeaturesFile(
            features=np.broadcast_to(
                np.zeros((), np.float64), (len(epochs), first.num_samples, first.dim)
            ),
            labels=first.meta.labels,
            num_classes=first.num_classes,
            epochs=epochs,
            weight_decay=first.weight_decay,
            W=None,
            b=b,
            **record,
        )
        W = None if first.W is None else _Concat([s.W for s in parts])
        return StreamedFeatures(meta, _Concat([s.features for s in parts]), W, source)

    def cat(name):
        values = [getattr(s, name) for s in parts]
        return None if any(v is None for v in values) else np.concatenate(values)

    return StatsFile(
        counts=np.concatenate([s.counts for s in parts]),
        class_means=_Concat([s.class_means for s in parts]),
        sigma_w=_Concat([s.sigma_w for s in parts]),
        num_classes=first.num_classes,
        epochs=epochs,
        weight_decay=first.weight_decay,
        W=None if first.W is None else _Concat([s.W for s in parts]),
        b=cat("b"),
        nc4_mismatches=cat("nc4_mismatches"),
        feature_max_abs=cat("feature_max_abs"),
        feature_spread=cat("feature_spread"),
        record=record,
        source=source,
    )


def _concatenated_record(parts, source) -> dict:
    """The training record of a folder: per-checkpoint keys joined (when every file has them),
    the others taken from the first file that has them and required to agree."""
    out: dict = {}
    for key in TRAINING_KEYS:
        values = [getattr(s, key, None) for s in parts]
        if key in ("train_accuracy", "test_accuracy", "test_loss"):
            if all(v is not None for v in values):
                out[key] = np.concatenate([np.atleast_1d(v) for v in values])
            continue
        given = [v for v in values if v is not None]
        if not given:
            continue
        if key in ("learning_rate", *EPOCH_RECORD_KEYS):  # the longest (written as it grew)
            out[key] = max(given, key=len)
            continue
        require(
            all(np.array_equal(v, given[0]) for v in given),
            f"{source}: the files disagree on '{key}'; one folder holds one training run",
        )
        out[key] = given[0]
    return out


# --------------------------------------------------------------------------- writing


class StatsWriter:
    """Write a statistics file checkpoint by checkpoint: Σ_W is streamed into its zip member as
    each checkpoint arrives (memory O(p² + K·C·p)); the file appears, atomically, on `close`.

    Use as a context manager, or call `close()` (and `abort()` on failure).
    """

    def __init__(self, path, num_classes: int, dim: int, num_checkpoints: int):
        self.path, self.C, self.p, self.K = Path(path), num_classes, dim, num_checkpoints
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(_io.atomic_path(self.path, suffix=".tmp.npz"))
        self._zip = zipfile.ZipFile(self._tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        self._sigma = self._zip.open("sigma_w.npy", "w", force_zip64=True)
        np.lib.format.write_array_header_2_0(
            self._sigma,
            {"descr": "<f8", "fortran_order": False, "shape": (num_checkpoints, dim, dim)},
        )
        self._small: dict[str, list] = {}
        self._count = 0
        self._done = False

    def add(self, checkpoint: Checkpoint) -> None:
        """Append one checkpoint (its accumulator must be complete)."""
        acc = checkpoint.acc.to_numpy()
        require(
            (acc.num_classes, acc.dim) == (self.C, self.p),
            f"checkpoint statistics of C = {acc.num_classes}, p = {acc.dim} do not fit a "
            f"statistics file of C = {self.C}, p = {self.p}",
        )
        require(self._count < self.K, f"the statistics file was opened for {self.K} checkpoints")
        sigma = np.ascontiguousarray(acc.sigma_w(), dtype="<f8")
        self._sigma.write(sigma.tobytes())
        row = {
            "counts": acc.counts,
            "class_means": acc.means,
            "epochs": checkpoint.epoch,
            "feature_max_abs": checkpoint.feature_max_abs,
            "feature_spread": checkpoint.feature_spread,
        }
        if checkpoint.W is not None:
            row.update(W=checkpoint.W, b=checkpoint.b)
            if float(acc.nc4_samples) > 0:
                row["nc4_mismatches"] = acc.nc4_mismatches
        for key, value in row.items():
            self._small.setdefault(key, []).append(value)
        self._count += 1

    def close(self, *, weight_decay: float = 0.0, **record) -> Path:
        """Finish the file: the small members, λ and the training record (`loss`, …)."""
        require(
            self._count == self.K,
            f"the statistics file was opened for {self.K} checkpoints but got {self._count}",
        )
        self._sigma.close()
        arrays = {}
        for key, values in self._small.items():
            if any(v is None for v in values) or (
                key == "nc4_mismatches" and len(values) != self.K
            ):
                continue  # known at only some checkpoints (feature range, NC4): left out
            if len(values) != self.K:
                raise InputError(
                    f"'{key}' was given for {len(values)} of {self.K} checkpoints; give the "
                    "classifier with every checkpoint or with none"
                )
            arrays[key] = np.asarray(np.stack([np.asarray(v) for v in values]))
        arrays["weight_decay"] = np.float64(weight_decay)
        arrays["num_classes"] = np.int64(self.C)
        arrays["stats_version"] = np.int64(STATS_VERSION)
        for key, value in record.items():
            if value is not None:
                arrays[key] = np.asarray(value)
        for key, value in arrays.items():
            require(value.dtype != object, f"{key}: object arrays would need pickle")
            with self._zip.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, value, allow_pickle=False)
        self._zip.close()
        self._done = True
        self._stack.close()  # renames the temporary file onto `path`
        return self.path

    def abort(self) -> None:
        if not self._done:
            with contextlib.suppress(Exception):
                self._sigma.close()
            with contextlib.suppress(Exception):
                self._zip.close()
            self._done = True
            # The block fails: atomic_path removes the temporary file and never renames it.
            self._stack.__exit__(InputError, InputError("aborted"), None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


def save_stats(path, checkpoints, *, weight_decay: float = 0.0, **record) -> Path:
    """Write a statistics file from a list of `Checkpoint`s (see `StatsWriter`)."""
    checkpoints = list(checkpoints)
    require(bool(checkpoints), "no checkpoint to save")
    acc = checkpoints[0].acc
    with StatsWriter(path, acc.num_classes, acc.dim, len(checkpoints)) as writer:
        for c in checkpoints:
            writer.add(c)
        return writer.close(weight_decay=weight_decay, **record)


def record_of(source) -> dict:
    """The training record of a features or statistics source, to carry into a saved file."""
    out = {}
    for key in TRAINING_KEYS:
        value = getattr(source, key, None)
        if value is not None:
            out[key] = value
    return out


__all__ = [
    "Checkpoint",
    "StatsFile",
    "StatsWriter",
    "StreamedFeatures",
    "check_streamed_resources",
    "chunk_rows",
    "open_source",
    "record_of",
    "save_stats",
    "streamed_analysis_cost",
]
