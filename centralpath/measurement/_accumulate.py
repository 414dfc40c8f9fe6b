"""Class statistics that merge exactly: from sample chunks, batches, devices and hosts.

Every metric but the per-sample ones (NC4, CDNV) is a function of the counts n_c, the class
means μ_c and Σ_W (docs/theory.md §1). `StatsAccumulator` holds them in float64 as counts,
running class means and the within-class scatter S = Σ_i (h_i − μ_{c(i)})(h_i − μ_{c(i)})ᵀ, and
combines two sets of samples A and B exactly (Chan, Golub & LeVeque's pairwise update, class by
class, pooled over classes):

    n_c = n_c^A + n_c^B,   μ_c = μ_c^A + (n_c^B / n_c) δ_c,   δ_c = μ_c^B − μ_c^A
    S   = S^A + S^B + Σ_c (n_c^A n_c^B / n_c) δ_c δ_cᵀ

A chunk's own statistics are taken from its deviations about its own class means, so nothing is
ever formed as a second moment minus a squared mean: nearly collapsed features keep their
digits, and any split of the samples into chunks, batches, devices or hosts gives the statistics
of one pass over all of them to rounding (~1e-15 relative; tested to 1e-12). A class missing
from a chunk contributes nothing.

The state is an immutable `equinox.Module`: `update` and `merge` return new accumulators. Its
arrays are NumPy arrays on the host (`StatsAccumulator.zeros(C, p)`, fast: the chunk's p×p
product is one BLAS SYRK) or JAX arrays (`backend="jax"`, jit-able, on any device); `finalize`
returns a `ClassStats`. The NC4 count is per sample: after the statistics are complete,
`count_nc4` counts, over the same samples, where the classifier disagrees with the nearest of
the accumulator's (final) class means.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._errors import InputError, require
from .._float64 import float64
from .._stats import ClassStats


def _require_x64(what: str) -> None:
    require(
        bool(jax.config.jax_enable_x64),
        f"{what} needs float64 in JAX; call jax.config.update('jax_enable_x64', True) before "
        "creating any array",
    )


def _is_host(*arrays) -> bool:
    """Whether every array is a NumPy array (or a Python/NumPy scalar): then the host path."""
    return all(isinstance(a, np.ndarray | np.generic | int | float) for a in arrays)


def _check_labels(labels, n: int, num_classes: int) -> None:
    """Labels outside 0..C−1 would be dropped or wrap silently: refuse them (concrete input)."""
    require(
        np.shape(labels) == (n,),
        f"labels must have shape [n] = [{n}] to match the features, got {np.shape(labels)}",
    )
    if n == 0 or isinstance(labels, jax.core.Tracer):
        return
    lab = np.asarray(labels)
    require(
        np.issubdtype(lab.dtype, np.integer),
        f"labels must be integers 0..C-1, got dtype {lab.dtype}; cast them with .astype(int)",
    )
    lo, hi = int(lab.min()), int(lab.max())
    require(
        lo >= 0 and hi < num_classes,
        f"labels must lie in 0..{num_classes - 1}, found {lo}..{hi}; relabel the classes or pass "
        "the right number of classes",
    )


def chunk_moments(xp, features, labels, num_classes: int, mask=None):
    """(counts [C], class means [C, p], scatter [p, p]) of one chunk, about its own class means.

    `xp` is `numpy` or `jax.numpy` (or a namespace with `arange`, `where`, `sqrt`: the PyTorch
    recorder passes one). `features` must already be float64; `mask` [m] (1 keep, 0 drop) lets
    a padded, fixed-shape chunk compile once.
    """
    one_hot = labels[:, None] == xp.arange(num_classes)[None, :]
    one_hot = one_hot * (1.0 if mask is None else mask[:, None])  # bool -> float64
    one_hot = one_hot + xp.zeros_like(features[:1, :1])  # the features' dtype and device
    counts = one_hot.sum(0)
    means = (one_hot.T @ features) / xp.where(counts > 0, counts, 1.0)[:, None]
    deviations = features - means[labels]
    if mask is not None:
        deviations = deviations * mask[:, None]
    # Aᵀ A of one operand: NumPy calls SYRK (half a GEMM's flops); XLA a GEMM.
    return counts, means, deviations.T @ deviations


#: Up to this many classes in a chunk, each class's rows are centred as one contiguous block
#: (a broadcast row per class); beyond, one gather of the shifts serves them all (a Python loop
#: over hundreds of classes would cost more than the gather it saves).
BLOCK_CLASSES = 64


class ClassBlocks:
    """The samples of a chunk grouped by class: row `order[i]` of the chunk is row i of the
    grouped chunk, whose class c occupies rows `starts[c]:starts[c + 1]`.

    Centring then subtracts one row per class from a contiguous block, and the class sums are
    the blocks' column sums: no gathered [m, p] array of shifts and no one-hot product per chunk.
    Labels do not change from checkpoint to checkpoint, so a streamed file groups each of its
    chunks once (`_stream`); a recorder's batch is grouped as it arrives.
    """

    __slots__ = ("order", "starts", "counts", "present", "labels")

    def __init__(self, labels: np.ndarray, num_classes: int):
        labels = np.asarray(labels)
        counts = np.bincount(labels, minlength=num_classes)
        grouped = labels.size < 2 or bool(np.all(labels[:-1] <= labels[1:]))
        self.order = None if grouped else np.argsort(labels, kind="stable")
        self.labels = labels if grouped else labels[self.order]  # of the grouped rows
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.counts = counts.astype(np.float64)
        self.present = np.flatnonzero(counts)


class HostMoments:
    """Moments of many chunks on the host, accumulated in place: the hot loop of a streamed
    checkpoint (`_stream`), and of `StatsAccumulator.update` on a large array.

    Each class is centred on a fixed shift s_c (its mean in the first chunk that holds it), so
    one p×p buffer takes every chunk's Σ (h − s_c)(h − s_c)ᵀ by one in-place BLAS SYRK (half a
    GEMM's flops, no p×p temporary per chunk), and `moments()` removes the shift once:
    S = Σ (h − s_c)(h − s_c)ᵀ − Σ_c n_c d_c d_cᵀ with d_c = μ_c − s_c. As s_c is within the
    spread of the class, d_c is small and the subtraction loses nothing (the shifted-data
    algorithm); the result equals the pairwise updates to rounding.

    A chunk is grouped by class (`ClassBlocks`) as it is converted to float64; the SYRK runs on
    `syrk_threads` BLAS threads (default `_runtime.blas_threads()`, `large_products`), everything
    else on one.
    """

    def __init__(self, num_classes: int, dim: int, *, syrk_threads: int | None = None):
        self.C, self.p = num_classes, dim
        self.syrk_threads = syrk_threads  # None: `_runtime.blas_threads()`
        self.counts = np.zeros(num_classes)
        self.shift = np.zeros((num_classes, dim))
        self.offset_sums = np.zeros((num_classes, dim))  # Σ (h − s_c) per class
        self.gram = np.zeros((dim, dim), order="F")  # upper triangle of Σ (h − s_c)(h − s_c)ᵀ
        # Column ranges of the features as given (NaN propagates through min/max and Inf
        # shows): taken from the grouped chunk while it is in cache.
        self.lo = np.full(dim, np.inf)
        self.hi = np.full(dim, -np.inf)
        # Work buffers reused from chunk to chunk: allocating ~8 MiB arrays per chunk let the
        # heap fragment, and the peak memory crept up by tens of MB over a long file.
        self._X = None
        self._raw: dict = {}
        self._product = None  # Xᵀ X of a chunk, when it is not added in place (`add`)

    def _buffer(self, m: int) -> np.ndarray:
        if self._X is None or self._X.shape[0] < m:
            self._X = np.empty((m, self.p))
        return self._X[:m]

    def _grouped(self, features: np.ndarray, blocks: ClassBlocks) -> np.ndarray:
        """The chunk's rows in class order, in the file's dtype (a work buffer)."""
        if blocks.order is None:
            return features
        m = features.shape[0]
        raw = self._raw.get(features.dtype)
        if raw is None or raw.shape[0] < m:
            raw = self._raw[features.dtype] = np.empty((m, self.p), features.dtype)
        # `order` is a permutation of the rows, always in range: mode "clip" skips the bounds
        # check, and with it the copy NumPy makes of `out` in mode "raise" (measured 2.5x faster).
        return np.take(features, blocks.order, axis=0, out=raw[:m], mode="clip")

    def add(self, features: np.ndarray, labels=None, blocks: ClassBlocks | None = None):
        """Add a chunk [m, p] (any float or integer dtype, memory-mapped included) with its
        `labels`, or with their `ClassBlocks` made once. Returns the chunk's rows grouped by
        class and centred on their shifts (a work buffer, valid until the next call)."""
        if features.shape[0] == 0:
            return None
        blocks = ClassBlocks(labels, self.C) if blocks is None else blocks
        X = self.centred(features, blocks)
        if self.syrk_threads == 1:
            # One BLAS thread per part: chunks are spread over Python threads (`_stream`).
            # NumPy's Xᵀ X is a SYRK too (it recognises the transposed operand) and releases
            # the GIL, which SciPy's dsyrk wrapper holds: with it two threads ran their
            # products one after the other (measured 0.97x one thread; NumPy's 1.6x).
            if self._product is None:
                self._product = np.empty((self.p, self.p))
            np.dot(X.T, X, out=self._product)
            self.gram += self._product
        else:
            self.gram = _syrk_update(self.gram, X, self.syrk_threads)
        return X

    def centred(self, features: np.ndarray, blocks: ClassBlocks) -> np.ndarray:
        """Convert the chunk to float64 grouped by class, centre each class on its shift (set
        from this chunk for a class seen for the first time) and add the class sums and counts:
        everything of `add` but the SYRK. Returns the centred rows (a work buffer)."""
        raw = self._grouped(features, blocks)
        np.minimum(self.lo, raw.min(axis=0), out=self.lo)
        np.maximum(self.hi, raw.max(axis=0), out=self.hi)
        X = self._buffer(features.shape[0])
        starts = blocks.starts
        if blocks.present.size > BLOCK_CLASSES:
            np.copyto(X, raw, casting="unsafe")  # float16/32/int → float64, no new array
            for c in blocks.present[self.counts[blocks.present] == 0]:
                self.shift[c] = X[starts[c] : starts[c + 1]].mean(0)
            X -= np.take(self.shift, blocks.labels, axis=0)
            sums = np.add.reduceat(X, starts[blocks.present], axis=0)
            self.offset_sums[blocks.present] += sums
        else:
            for c in blocks.present:
                block, rows = X[starts[c] : starts[c + 1]], raw[starts[c] : starts[c + 1]]
                if self.counts[c] == 0:
                    np.copyto(block, rows, casting="unsafe")
                    self.shift[c] = block.mean(0)
                    block -= self.shift[c]
                else:  # converted and centred in one pass
                    np.subtract(rows, self.shift[c], out=block)
                self.offset_sums[c] += block.sum(0)
        self.counts += blocks.counts
        return X

    def count_nc4(self, features: np.ndarray, W, b, means) -> float:
        """How many rows of the chunk the classifier assigns to another class than the nearest
        of `means` (the work buffer again: no float64 copy of the chunk is allocated)."""
        if features.shape[0] == 0:
            return 0.0
        X = self._buffer(features.shape[0])
        np.copyto(X, features, casting="unsafe")
        return float(_nc4_mismatches(np, X, W, b, means))

    def moments(self):
        """(counts [C], class means [C, p], scatter [p, p]) of every sample added."""
        d = self.offset_sums / np.where(self.counts > 0, self.counts, 1.0)[:, None]
        gram = np.triu(self.gram)
        gram = gram + np.triu(gram, 1).T
        weighted = d * np.sqrt(self.counts)[:, None]
        return self.counts.copy(), self.shift + d, gram - weighted.T @ weighted


class FoldedNC4:
    """NC4 counted in the statistics' pass over a checkpoint, exactly.

    NC4 compares the classifier's decision argmax_c (W h + b)_c with the nearest final class
    mean, which is known only after the pass. Each chunk is scored against provisional means,
    the classes' shifts s_c (`HostMoments`), from the centred rows x = h − s_y already in
    cache: logits W x + (W s_y + b) and ‖h − s_c‖² − ‖h‖² = −2 x·s_c + (‖s_c‖² − 2 s_y·s_c).
    Per sample it keeps the provisional decisions, the gap δ between its nearest and second
    nearest provisional mean and ‖x‖. The final means μ_c = s_c + e_c move each score by
    −2 x·e_c + (‖μ_c‖² − ‖s_c‖² − 2 s_y·e_c), so a decision can change only where
    δ ≤ 4‖x‖ max_c‖e_c‖ + 2 max_c|‖μ_c‖² − ‖s_c‖² − 2 s_y·e_c| (plus a bound on the rounding of
    both ways of computing the scores). Only those samples — usually none: e_c is the
    difference between a class's mean and its mean in one chunk — are read again and decided
    as `count_nc4` decides them; so are logit near-ties, and the samples of a chunk scored
    before some class had been seen.
    """

    def __init__(self, W: np.ndarray, b: np.ndarray, n: int):
        self.W, self.b = np.asarray(W, np.float64), np.asarray(b, np.float64)
        C = self.W.shape[0]
        self.n = n
        self.mismatch = np.zeros(n, bool)  # provisional: classifier ≠ nearest provisional mean
        self.recheck = np.zeros(n, bool)  # decided again against the final means
        # float64: features may reach 1e75 (or vary by 1e-75), where float32 squares overflow.
        self.gap = np.zeros(n)
        self.norm = np.zeros(n)
        self.part = np.zeros(n, np.uint8)  # which of the pass's `HostMoments` scored it
        self.eps = float(np.finfo(np.float64).eps)
        with np.errstate(over="ignore"):  # a huge W is refused by its scale check, not warned
            self.wmax = float(np.max(np.linalg.norm(self.W, axis=1))) if C else 0.0
        self.bmax = float(np.max(np.abs(self.b))) if C else 0.0

    def score(
        self, X: np.ndarray, blocks: ClassBlocks, start: int, moments: HostMoments, part: int = 0
    ):
        """Score the centred, grouped rows X of the chunk that starts at sample `start`, which
        `moments` (the pass's `part`-th, when chunks are spread over threads) accumulated."""
        m, p = X.shape
        rows = start + (np.arange(m) if blocks.order is None else blocks.order)
        self.part[rows] = part
        if not np.all(moments.counts > 0):  # a class not seen yet has no provisional mean
            self.recheck[rows] = True
            return
        C, S, W = self.W.shape[0], moments.shift, self.W
        # One thin product for both rules, as [W; S] Xᵀ: BLAS runs the [m, 2C] product ~10%
        # faster with the chunk as the wide right operand (the same sums, transposed).
        G = (np.concatenate([W, S]) @ X.T).T
        logits = G[:, :C] + (S @ W.T + self.b)[blocks.labels]
        dist = -2.0 * G[:, C:] + ((S**2).sum(1)[None, :] - 2.0 * S @ S.T)[blocks.labels]
        top = np.partition(logits, C - 2, axis=1)[:, C - 2 :]
        near = np.partition(dist, 1, axis=1)[:, :2]
        norm = np.sqrt(np.einsum("ij,ij->i", X, X))
        smax = float(np.max(np.linalg.norm(S, axis=1)))
        slack = 16.0 * (p + 2) * self.eps * ((norm + smax) * self.wmax + self.bmax)
        self.recheck[rows] |= (top[:, 1] - top[:, 0]) <= slack  # a logit near-tie
        self.mismatch[rows] = np.argmax(logits, 1) != np.argmin(dist, 1)
        self.gap[rows] = near[:, 1] - near[:, 0]
        self.norm[rows] = norm

    def to_recheck(self, parts: list[HostMoments], means: np.ndarray, labels: np.ndarray):
        """The samples (sorted indices) whose nearest mean the final `means` could change;
        `parts` are the pass's `HostMoments` (one, or one per thread), whose shifts scored."""
        emax = np.empty(len(parts))
        moved = np.empty((len(parts), means.shape[0]))  # per part and class y of h
        mmax = float(np.max(np.linalg.norm(means, axis=1)))
        for j, moments in enumerate(parts):
            S = moments.shift
            e = means - S
            emax[j] = np.max(np.linalg.norm(e, axis=1))
            kappa = (means**2).sum(1) - (S**2).sum(1)
            moved[j] = np.max(np.abs(kappa[None, :] - 2.0 * S @ e.T), axis=1)
            mmax = max(mmax, float(np.max(np.linalg.norm(S, axis=1))))
        p = means.shape[1]
        norm = self.norm
        rounding = 16.0 * (p + 2) * self.eps * ((norm + mmax) * mmax + mmax**2)
        bound = 4.0 * norm * emax[self.part] + 2.0 * moved[self.part, labels] + rounding
        return np.flatnonzero(self.recheck | (self.gap <= bound))

    def count(self, parts: list[HostMoments], means: np.ndarray, labels: np.ndarray, read, rows):
        """The NC4 count against the final `means`; `read(start, stop)` reads samples again
        (only chunks holding a sample to decide again, `rows` samples per chunk)."""
        again = self.to_recheck(parts, means, labels)
        keep = np.ones(self.n, bool)
        keep[again] = False
        missed = float(np.count_nonzero(self.mismatch & keep))
        self.rechecked = int(again.size)
        for chunk_start in np.unique(again // rows) * rows:
            local = again[(again >= chunk_start) & (again < chunk_start + rows)] - chunk_start
            X = np.asarray(read(int(chunk_start), int(chunk_start) + rows)[local], np.float64)
            missed += float(_nc4_mismatches(np, X, self.W, self.b, means))
        return missed


def _syrk_update(gram: np.ndarray, X: np.ndarray, threads: int | None = None) -> np.ndarray:
    """gram (upper triangle) += Xᵀ X, in place where BLAS allows, on `threads` BLAS threads
    (default: those the user allows, `_runtime.large_products`)."""
    from .._run.runtime import large_products

    try:
        from scipy.linalg.blas import dsyrk
    except ImportError:  # pragma: no cover - scipy comes with jax
        with large_products(threads):
            gram += X.T @ X
        return gram
    # X is C-ordered [m, p], i.e. Xᵀ in Fortran order: dsyrk of trans=0 on Xᵀ, no copy.
    with large_products(threads):
        return dsyrk(1.0, X.T, beta=1.0, c=gram, trans=0, lower=0, overwrite_c=1)


def _host_chunk_moments(features: np.ndarray, labels: np.ndarray, num_classes: int, rows: int):
    """`chunk_moments` of a host array, `rows` samples at a time (`HostMoments`)."""
    from .._run.runtime import single_threaded_blas

    moments = HostMoments(num_classes, features.shape[1])
    with single_threaded_blas():
        for start in range(0, features.shape[0], rows):
            moments.add(features[start : start + rows], labels[start : start + rows])
    return moments.moments()


def merge_moments(xp, a, b):
    """The pairwise update of the module docstring: (counts, means, scatter) of A ∪ B."""
    na, ma, sa = a
    nb, mb, sb = b
    n = na + nb
    frac_b = nb / xp.where(n > 0, n, 1.0)
    delta = mb - ma
    means = ma + delta * frac_b[:, None]  # exactly μ^B when A has none of the class
    weighted = delta * xp.sqrt(na * frac_b)[:, None]  # √(n_A n_B / n) δ: zero if either is empty
    return n, means, sa + sb + weighted.T @ weighted


def _nc4_mismatches(xp, features, W, b, means, mask=None):
    """How many rows have argmax_c (W h + b)_c ≠ argmin_c ‖h − μ_c‖ (`_metrics.nc4`'s rule)."""
    C = W.shape[0]
    # One product for both rules (a chunk is read once): logits and ‖h − μ_c‖² up to the
    # c-independent ‖h‖², as `_metrics.nc4` computes them.
    scores = features @ xp.concatenate([W, means], axis=0).T
    predicted = xp.argmax(scores[:, :C] + b, axis=1)
    nearest = xp.argmin(-2.0 * scores[:, C:] + (means**2).sum(1), axis=1)
    miss = (predicted != nearest) * 1.0
    if mask is not None:
        miss = miss * mask
    return miss.sum()


class StatsAccumulator(eqx.Module):
    """Mergeable float64 class statistics (module docstring).

    **Fields:**

    - `counts` [C]: samples per class so far.
    - `means` [C, p]: their class means (rows are classes; zero for a class not yet seen).
    - `scatter` [p, p]: Σ_i (h_i − μ_{c(i)})(h_i − μ_{c(i)})ᵀ, not divided by n.
    - `nc4_mismatches`, `nc4_samples`: what `count_nc4` has counted (0 until it is called).

    Build one with `StatsAccumulator.zeros(C, p)` (NumPy) or `zeros(C, p, backend="jax")`, then
    `acc = acc.update(features, labels)` per chunk or batch, `acc = acc.merge(other)` to join
    two, and `acc.finalize()` for the `ClassStats`. `update` casts features to float64 first.
    """

    counts: Float[Array, " C"]
    means: Float[Array, "C p"]
    scatter: Float[Array, "p p"]
    nc4_mismatches: Float[Array, ""]
    nc4_samples: Float[Array, ""]

    def __check_init__(self):
        C, p = np.shape(self.means)
        if np.shape(self.counts) != (C,) or np.shape(self.scatter) != (p, p):
            raise InputError(
                f"accumulator shapes do not agree: counts {np.shape(self.counts)}, means "
                f"{np.shape(self.means)}, scatter {np.shape(self.scatter)}"
            )

    @classmethod
    def zeros(cls, num_classes: int, dim: int, *, backend: str = "numpy") -> StatsAccumulator:
        """An empty accumulator for C classes of p-dimensional features, with NumPy (host) or
        JAX (`backend="jax"`, needs `jax_enable_x64`) arrays."""
        require(
            isinstance(num_classes, int | np.integer) and num_classes >= 1,
            f"num_classes must be a positive integer, got {num_classes!r}",
        )
        require(
            isinstance(dim, int | np.integer) and dim >= 1,
            f"dim must be a positive integer, got {dim!r}",
        )
        require(backend in ("numpy", "jax"), f"unknown backend {backend!r}; use numpy or jax")
        if backend == "jax":
            _require_x64("a JAX StatsAccumulator")
        xp = np if backend == "numpy" else jnp
        z = lambda *shape: xp.zeros(shape, dtype=xp.float64)  # noqa: E731
        return cls(z(num_classes), z(num_classes, dim), z(dim, dim), z(), z())

    @classmethod
    def from_arrays(cls, counts, means, scatter, nc4_mismatches=0.0, nc4_samples=0.0):
        """An accumulator from saved arrays (NumPy float64)."""
        f = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
        return cls(f(counts), f(means), f(scatter), f(nc4_mismatches), f(nc4_samples))

    @property
    def num_classes(self) -> int:
        return int(np.shape(self.means)[0])

    @property
    def dim(self) -> int:
        return int(np.shape(self.means)[1])

    @property
    def n(self):
        return self.counts.sum()

    @property
    def _host(self) -> bool:
        return _is_host(self.counts, self.means, self.scatter)

    def _moments(self):
        return self.counts, self.means, self.scatter

    def update(self, features, labels, *, mask=None) -> StatsAccumulator:
        """The accumulator of these samples and the new chunk `features` [m, p] with `labels` [m].

        NumPy inputs (float16/32/64, memory-mapped included) on a NumPy accumulator run on the
        host; anything else runs in JAX (jit-compiled once per chunk shape: pad a short last
        chunk and pass `mask` [m], 1 for a sample and 0 for padding, to avoid recompiling).
        """
        require(
            np.ndim(features) == 2 and np.shape(features)[1] == self.dim,
            f"features must be [m, p = {self.dim}], got shape {np.shape(features)}",
        )
        _check_labels(labels, np.shape(features)[0], self.num_classes)
        if mask is None and self._host and isinstance(features, np.ndarray):
            if features.shape[0] == 0:
                return self
            require(
                np.issubdtype(features.dtype, np.floating)
                or np.issubdtype(features.dtype, np.integer),
                f"features must be numeric, got dtype {features.dtype}",
            )
            rows = max(64, (8 << 20) // (8 * self.dim))  # float64 chunks of ~8 MiB
            chunk = _host_chunk_moments(
                features, np.asarray(labels, np.int64), self.num_classes, rows
            )
            n, means, scatter = merge_moments(np, self._moments(), chunk)
            return StatsAccumulator(n, means, scatter, self.nc4_mismatches, self.nc4_samples)
        _require_x64("StatsAccumulator.update on JAX arrays")
        return _update_jax(self, jnp.asarray(features), jnp.asarray(labels), mask)

    def merge(self, other: StatsAccumulator) -> StatsAccumulator:
        """The accumulator of the samples of both (exact; the order only changes rounding)."""
        require(
            isinstance(other, StatsAccumulator)
            and (other.num_classes, other.dim) == (self.num_classes, self.dim),
            f"can only merge accumulators of the same C and p ({self.num_classes}, {self.dim})",
        )
        xp = np if (self._host and other._host) else jnp
        n, means, scatter = merge_moments(xp, self._moments(), other._moments())
        return StatsAccumulator(
            n,
            means,
            scatter,
            self.nc4_mismatches + other.nc4_mismatches,
            self.nc4_samples + other.nc4_samples,
        )

    def count_nc4(self, features, W, b, *, mask=None) -> StatsAccumulator:
        """Add, for the samples `features` [m, p], how many the classifier (W [C, p], b [C])
        assigns to another class than the nearest of this accumulator's class means.

        NC4 compares with the final class means: call it in a second pass, once every sample has
        been through `update` (and, across devices or hosts, once the accumulators are merged).
        """
        require(
            np.ndim(features) == 2 and np.shape(features)[1] == self.dim,
            f"features must be [m, p = {self.dim}], got shape {np.shape(features)}",
        )
        require(
            np.shape(W) == (self.num_classes, self.dim) and np.shape(b) == (self.num_classes,),
            f"W must be [C, p] = [{self.num_classes}, {self.dim}] and b [C], got "
            f"{np.shape(W)} and {np.shape(b)}",
        )
        m = np.shape(features)[0]
        if self._host and _is_host(features, W, b) and mask is None:
            X = np.asarray(features, dtype=np.float64)
            miss = _nc4_mismatches(np, X, np.asarray(W, float), np.asarray(b, float), self.means)
            return eqx.tree_at(
                lambda a: (a.nc4_mismatches, a.nc4_samples),
                self,
                (self.nc4_mismatches + miss, self.nc4_samples + float(m)),
            )
        _require_x64("StatsAccumulator.count_nc4 on JAX arrays")
        return _count_nc4_jax(self, jnp.asarray(features), jnp.asarray(W), jnp.asarray(b), mask)

    def nc4(self):
        """The fraction counted by `count_nc4` (NaN before any sample was counted)."""
        xp = np if self._host else jnp
        return xp.where(self.nc4_samples > 0, self.nc4_mismatches, xp.nan) / xp.where(
            self.nc4_samples > 0, self.nc4_samples, 1.0
        )

    def sigma_w(self):
        """Σ_W = S / n (divided by n, docs/theory.md §1)."""
        return self.scatter / self.n

    def finalize(self) -> ClassStats:
        """The `ClassStats` (counts, M = means [p, C], Σ_W = S/n) of every sample seen."""
        _require_x64("StatsAccumulator.finalize")
        require(
            bool(self.n > 0) if not isinstance(self.n, jax.core.Tracer) else True,
            "the accumulator has seen no sample; update it with features first",
        )
        return ClassStats(
            jnp.asarray(self.counts), jnp.asarray(self.means).T, jnp.asarray(self.sigma_w())
        )

    def to_numpy(self) -> StatsAccumulator:
        """The same accumulator with host (NumPy) arrays (gathered from a device or a mesh)."""
        return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x), np.float64), self)


@eqx.filter_jit
def _update_jax(acc: StatsAccumulator, features, labels, mask):
    X = features.astype(jnp.float64)
    chunk = chunk_moments(jnp, X, labels, acc.num_classes, mask)
    n, means, scatter = merge_moments(jnp, acc._moments(), chunk)
    return StatsAccumulator(n, means, scatter, acc.nc4_mismatches, acc.nc4_samples)


@eqx.filter_jit
def _count_nc4_jax(acc: StatsAccumulator, features, W, b, mask):
    X = features.astype(jnp.float64)
    miss = _nc4_mismatches(jnp, X, W.astype(jnp.float64), b.astype(jnp.float64), acc.means, mask)
    m = X.shape[0] if mask is None else jnp.sum(mask)
    return StatsAccumulator(
        acc.counts, acc.means, acc.scatter, acc.nc4_mismatches + miss, acc.nc4_samples + m
    )


@float64
def accumulate(chunks, num_classes: int, dim: int) -> StatsAccumulator:
    """One NumPy accumulator over an iterable of (features [m, p], labels [m]) chunks."""
    acc = StatsAccumulator.zeros(num_classes, dim)
    for features, labels in chunks:
        acc = acc.update(features, labels)
    return acc


# --------------------------------------------------------------------------- devices and hosts


@float64
def sharded_stats(
    features, labels, num_classes: int, *, mesh=None, W=None, b=None
) -> StatsAccumulator:
    """The accumulator of samples spread over the devices of a 1-D `jax.sharding.Mesh`.

    Each device takes the moments of its shard of `features` [n, p] (split along the samples;
    n need not divide evenly: the tail is padded and masked), and the devices combine them by
    reductions (`psum`) of the pairwise update: n_c = Σ_d n_dc, μ_c = Σ_d n_dc μ_dc / n_c and
    S = Σ_d [S_d + Σ_c n_dc (μ_dc − μ_c)(μ_dc − μ_c)ᵀ]. With `W`, `b` the NC4 count follows, on
    every device against the combined means. `mesh` defaults to all devices. The result is
    replicated (JAX arrays); `.to_numpy()` brings it to the host.
    """
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    _require_x64("sharded_stats")
    if mesh is None:
        mesh = Mesh(np.asarray(jax.devices()), ("samples",))
    require(len(mesh.axis_names) == 1, "sharded_stats needs a 1-D mesh (one axis of devices)")
    (axis,) = mesh.axis_names
    n, p = np.shape(features)
    _check_labels(labels, n, num_classes)
    devices = mesh.devices.size
    padded = -(-max(n, 1) // devices) * devices
    pad = padded - n
    X = jnp.pad(jnp.asarray(features, jnp.float64), ((0, pad), (0, 0)))
    y = jnp.pad(jnp.asarray(labels), (0, pad))
    mask = jnp.pad(jnp.ones(n, jnp.float64), (0, pad))
    rows = NamedSharding(mesh, P(axis))
    X, y, mask = (jax.device_put(a, rows) for a in (X, y, mask))
    with_classifier = W is not None
    if with_classifier:
        W = jnp.asarray(W, jnp.float64)
        b = jnp.zeros(num_classes) if b is None else jnp.asarray(b, jnp.float64)
    else:
        W = jnp.zeros((num_classes, p))
        b = jnp.zeros(num_classes)
    return _sharded_program(mesh, axis, num_classes, with_classifier)(X, y, mask, W, b)


def _sharded_program(mesh, axis: str, num_classes: int, with_classifier: bool):
    from jax.sharding import PartitionSpec as P

    def local(X, y, mask, W, b):
        counts, means, scatter = chunk_moments(jnp, X, y, num_classes, mask)
        total = jax.lax.psum(counts, axis)
        mean = (
            jax.lax.psum(counts[:, None] * means, axis) / jnp.where(total > 0, total, 1.0)[:, None]
        )
        shift = (means - mean) * jnp.sqrt(counts)[:, None]
        scatter = jax.lax.psum(scatter + shift.T @ shift, axis)
        zero = jnp.zeros((), jnp.float64)
        miss, seen = zero, zero
        if with_classifier:
            miss = jax.lax.psum(_nc4_mismatches(jnp, X, W, b, mean, mask), axis)
            seen = jax.lax.psum(jnp.sum(mask), axis)
        return StatsAccumulator(total, mean, scatter, miss, seen)

    rows = P(axis)
    program = jax.shard_map(
        local, mesh=mesh, in_specs=(rows, rows, rows, P(), P()), out_specs=P(), check_vma=False
    )
    return jax.jit(program)


def merge_across_processes(acc: StatsAccumulator) -> StatsAccumulator:
    """The accumulator of the samples seen by every process of a `jax.distributed` run.

    Each process passes the accumulator of its own samples; the small statistics (C + C·p + p²
    numbers) are gathered from every process (`multihost_utils.process_allgather`) and merged in
    process order, so every process gets the same result. With one process it is `acc`.
    """
    if jax.process_count() == 1:
        return acc
    from jax.experimental import multihost_utils

    leaves = acc.to_numpy()
    gathered = multihost_utils.process_allgather(leaves)  # each leaf gains a leading [P] axis
    gathered = jax.tree_util.tree_map(np.asarray, gathered)
    out = None
    for i in range(jax.process_count()):
        part = jax.tree_util.tree_map(lambda x, i=i: x[i], gathered)
        out = part if out is None else out.merge(part)
    return out


__all__ = [
    "StatsAccumulator",
    "accumulate",
    "chunk_moments",
    "merge_across_processes",
    "merge_moments",
    "sharded_stats",
]
