"""Record statistics files while training, storing no features.

A checkpoint of a statistics file needs K·(p² + C·p) numbers, not the n·p of its features:
`ArrayStatsRecorder.capture` takes one evaluation pass over the training set in batches (NumPy or
JAX arrays; PyTorch: `centralpath.torch.TorchStatsRecorder`), accumulates the class statistics
(`StatsAccumulator`'s float64 moments), and, given the classifier, counts NC4 in the same pass
(`FoldedNC4`: each sample's decision against provisional class means, kept when the final
means provably cannot change it), going over the batches a second time only when some decision
could change. `save` writes the statistics file that `centralpath analyze` and `compare` read
in place of a features file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import require
from .._float64 import float64
from .._run.runtime import single_threaded_blas
from ._accumulate import ClassBlocks, FoldedNC4, HostMoments, StatsAccumulator
from ._stream import Checkpoint, StatsWriter, open_source, save_stats


def _on_host(x) -> bool:
    """NumPy arrays, and JAX arrays on CPU devices, are accumulated by host BLAS (a SYRK per
    chunk); JAX arrays on an accelerator stay there (`StatsAccumulator`'s JAX path)."""
    if isinstance(x, jax.Array):
        return all(d.platform == "cpu" for d in x.devices())
    return True


class _Pass:
    """One checkpoint's first pass: moments, the features' range and, given the classifier
    (W, b: float64), each host sample's NC4 decision against provisional means, batch by batch."""

    def __init__(self, num_classes: int, W=None, b=None):
        self.C = num_classes
        self.W, self.b = W, b
        self.host: HostMoments | None = None
        self.device: StatsAccumulator | None = None
        self.lo = self.hi = None
        self.scored: list[tuple[FoldedNC4, np.ndarray]] = []  # per chunk, with its labels

    def _check_classifier(self, p: int) -> None:
        if self.W is not None:
            require(
                self.W.shape == (self.C, p) and self.b.shape == (self.C,),
                f"W must be [C, p] = [{self.C}, {p}] and b [C], got {self.W.shape} and "
                f"{self.b.shape}",
            )

    def add(self, features, labels) -> None:
        require(
            np.ndim(features) == 2 and np.ndim(labels) == 1,
            f"a batch must be features [m, p] and labels [m], got shapes {np.shape(features)} "
            f"and {np.shape(labels)}",
        )
        if np.shape(features)[0] == 0:
            return
        p = np.shape(features)[1]
        if _on_host(features):
            features = np.asarray(features)
            labels = np.asarray(labels, np.int64)
            require(
                np.shape(labels) == (features.shape[0],) and labels.min() >= 0,
                f"labels must be [m] = [{features.shape[0]}] classes 0..C-1",
            )
            require(
                int(labels.max()) < self.C,
                f"labels must lie in 0..{self.C - 1}, found {int(labels.max())}; pass the "
                "right number of classes",
            )
            if self.host is None:
                self._check_classifier(p)
                self.host = HostMoments(self.C, p)
            rows = max(64, (8 << 20) // (8 * p))
            with single_threaded_blas():  # the SYRK takes the user's threads, nothing else
                for start in range(0, features.shape[0], rows):
                    chunk_labels = labels[start : start + rows]
                    blocks = ClassBlocks(chunk_labels, self.C)
                    X = self.host.add(features[start : start + rows], blocks=blocks)
                    if self.W is not None:  # a thin product on the centred rows in cache
                        nc4 = FoldedNC4(self.W, self.b, X.shape[0])
                        nc4.score(X, blocks, 0, self.host)
                        self.scored.append((nc4, chunk_labels))
            lo, hi = features.min(axis=0), features.max(axis=0)
        else:
            if self.device is None:
                self._check_classifier(p)
                self.device = StatsAccumulator.zeros(self.C, p, backend="jax")
            self.device = self.device.update(features, labels)
            lo, hi = (np.asarray(v) for v in jax.device_get((features.min(0), features.max(0))))
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    def accumulator(self) -> StatsAccumulator:
        require(
            self.host is not None or self.device is not None,
            "the evaluation pass gave no sample; pass the batches of the training set",
        )
        parts = []
        if self.host is not None:
            parts.append(StatsAccumulator.from_arrays(*self.host.moments()))
        if self.device is not None:
            parts.append(self.device.to_numpy())
        acc = parts[0]
        for part in parts[1:]:
            acc = acc.merge(part)
        return acc

    def folded_nc4(self, means: np.ndarray) -> float | None:
        """NC4 mismatches from this pass's decisions when the final `means` change none of them
        (`FoldedNC4.to_recheck` finds no sample to decide again); None when some sample must be
        decided again, or some batch was accumulated on an accelerator: then a second pass
        counts them all (whatever order the batches come in the second time)."""
        if self.device is not None or self.host is None:
            return None
        missed = 0
        for nc4, labels in self.scored:
            if nc4.to_recheck([self.host], means, labels).size:
                return None
            missed += int(np.count_nonzero(nc4.mismatch))
        return float(missed)

    def feature_range(self) -> tuple[float, float]:
        return (
            float(np.max(np.maximum(np.abs(self.lo), np.abs(self.hi)))),
            float(np.max(self.hi - self.lo)),
        )


def _count_nc4(acc: StatsAccumulator, batches, W, b) -> StatsAccumulator:
    """The second pass: NC4 mismatches against the final class means."""
    missed, seen = 0.0, 0.0
    work = HostMoments(acc.num_classes, acc.dim)
    means_dev = None
    for features, _ in batches:
        m = np.shape(features)[0]
        if m == 0:
            continue
        if _on_host(features):
            with single_threaded_blas():  # a thin product (m × p × 2C)
                missed += work.count_nc4(np.asarray(features), W, b, acc.means)
        else:
            if means_dev is None:
                means_dev = StatsAccumulator(
                    jnp.asarray(acc.counts),
                    jnp.asarray(acc.means),
                    jnp.zeros((acc.dim, acc.dim)),
                    jnp.zeros(()),
                    jnp.zeros(()),
                )
            missed += float(means_dev.count_nc4(features, W, b).nc4_mismatches)
        seen += m
    return StatsAccumulator.from_arrays(acc.counts, acc.means, acc.scatter, missed, seen)


@float64
def checkpoint_of(batches, num_classes: int, *, W=None, b=None, epoch: float = 0.0) -> Checkpoint:
    """The `Checkpoint` (statistics, NC4 count, features' range) of one evaluation pass.

    `batches`: an iterable of (features [m, p], labels [m]) that can be iterated twice when W
    is given (a list, or a callable returning a fresh iterator; NC4 goes over them again only
    when a sample's nearest class mean could change with the final means — usually never once
    the classes separate), or one (features, labels) pair of whole arrays.
    """
    if isinstance(batches, tuple) and len(batches) == 2 and np.ndim(batches[0]) == 2:
        batches = [batches]
    if W is not None:
        W = np.asarray(W, np.float64)
        b = np.zeros(num_classes) if b is None else np.asarray(b, np.float64)
        require(
            _reiterable(batches),
            "NC4 may need a second pass over the batches: pass a list, or a function that "
            "returns a fresh iterator of them",
        )
    one = _Pass(num_classes, W, b)
    for features, labels in _iterate(batches):
        one.add(features, labels)
    acc = one.accumulator()
    if W is not None:
        missed = one.folded_nc4(acc.means)
        if missed is None:
            acc = _count_nc4(acc, _iterate(batches), W, b)
        else:
            acc = StatsAccumulator.from_arrays(
                acc.counts, acc.means, acc.scatter, missed, float(np.sum(acc.counts))
            )
    big, spread = one.feature_range()
    return Checkpoint(float(epoch), acc, W, b, big, spread)


def _reiterable(batches) -> bool:
    return isinstance(batches, list | tuple) or callable(batches)


def _iterate(batches):
    return batches() if callable(batches) else batches


class ArrayStatsRecorder:
    """Statistics of the last hidden layer at chosen epochs, written as a statistics file.

    ```python
    recorder = cp.ArrayStatsRecorder(num_classes=10)
    for epoch in ...:
        ...train...
        if epoch in capture_at:
            recorder.capture(epoch, lambda: eval_batches(), W=W, b=b)  # (features, labels)
    recorder.save("stats.npz", weight_decay=lam)  # then: centralpath analyze stats.npz
    ```

    `weight_decay`: λ in the paper's scale (docs/theory.md §2), written with the statistics.
    `directory`: write each checkpoint to `directory/checkpoint-EPOCH.npz` as it is captured
    (memory O(p²) whatever K, and nothing lost if training stops; the folder is itself a valid
    input of `analyze`); otherwise checkpoints are kept in memory until `save`.
    """

    def __init__(self, num_classes: int, *, weight_decay: float = 0.0, directory=None):
        require(
            isinstance(num_classes, int | np.integer) and num_classes >= 2,
            f"num_classes must be an integer >= 2, got {num_classes!r}",
        )
        require(
            float(weight_decay) >= 0 and np.isfinite(weight_decay),
            f"weight_decay must be a finite number >= 0, got {weight_decay!r}",
        )
        self.num_classes = int(num_classes)
        self.weight_decay = float(weight_decay)
        self.directory = None if directory is None else Path(directory)
        self._checkpoints: list[Checkpoint] = []
        self._files: list[Path] = []

    @property
    def num_checkpoints(self) -> int:
        return len(self._files) if self.directory is not None else len(self._checkpoints)

    def capture(self, epoch: float, batches: Iterable | Callable, *, W=None, b=None) -> Checkpoint:
        """Record one checkpoint from an evaluation pass (see `checkpoint_of`)."""
        checkpoint = checkpoint_of(batches, self.num_classes, W=W, b=b, epoch=epoch)
        self.add(checkpoint)
        return checkpoint

    def add(self, checkpoint: Checkpoint) -> None:
        if self.directory is not None:
            name = f"checkpoint-{checkpoint.epoch:g}.npz"
            path = save_stats(self.directory / name, [checkpoint], weight_decay=self.weight_decay)
            self._files.append(path)
        else:
            self._checkpoints.append(checkpoint)

    def checkpoints(self):
        if self.directory is None:
            yield from self._checkpoints
            return
        for path in self._files:
            yield from open_source(path, "statistics file").checkpoints()

    def save(self, path, *, weight_decay: float | None = None, **record) -> Path:
        """Write every checkpoint captured so far as one statistics file. `weight_decay`: λ in
        the paper's scale (default: the recorder's); `record`: the optional training keys
        (`loss`, `learning_rate`, `momentum`, `steps_per_epoch`, `train_accuracy`, …)."""
        weight_decay = self.weight_decay if weight_decay is None else float(weight_decay)
        require(self.num_checkpoints > 0, "nothing captured yet; call capture() first")
        checkpoints = self.checkpoints()
        first = next(checkpoints)
        with StatsWriter(path, self.num_classes, first.acc.dim, self.num_checkpoints) as writer:
            writer.add(first)
            for c in checkpoints:
                writer.add(c)
            return writer.close(weight_decay=weight_decay, **record)


__all__ = ["ArrayStatsRecorder", "checkpoint_of"]
