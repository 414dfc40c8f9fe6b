"""Record statistics files from a PyTorch training loop, storing no features.

```python
from centralpath.torch import TorchStatsRecorder

recorder = TorchStatsRecorder(model.fc)  # the final nn.Linear
for epoch in ...:
    ...train one epoch...
    if epoch in capture_at:
        recorder.capture(model, train_eval_loader, epoch)  # shuffle=False, no augmentation
recorder.save("stats.npz", weight_decay=C * wd / 2)  # nn.MSELoss; then: centralpath analyze
```

A forward hook on the last `nn.Linear` takes its input batch by batch and accumulates, on the
batch's device in float64, the class statistics (`StatsAccumulator`'s shifted moments: one
Xᵀ X per batch); a second pass counts NC4 against the final class means. Only K·(p² + C·p)
numbers leave the device. Needs `pip install "centralpath[torch]"` (PyTorch >= 2.0; tested with
2.13.0).
"""

from __future__ import annotations

import numpy as np
import torch

from .._errors import require
from ._accumulate import HostMoments, StatsAccumulator
from ._recorder import ArrayStatsRecorder as _Recorder
from ._stream import Checkpoint


class _DeviceMoments:
    """`HostMoments` on a PyTorch device: shifted class sums and Σ (h − s_c)(h − s_c)ᵀ."""

    def __init__(self, num_classes: int, dim: int, device):
        f = dict(dtype=torch.float64, device=device)
        self.C, self.p = num_classes, dim
        self.counts = torch.zeros(num_classes, **f)
        self.shift = torch.zeros(num_classes, dim, **f)
        self.offset_sums = torch.zeros(num_classes, dim, **f)
        self.gram = torch.zeros(dim, dim, **f)
        self.lo = torch.full((dim,), torch.inf, **f)
        self.hi = torch.full((dim,), -torch.inf, **f)

    def add(self, h: torch.Tensor, y: torch.Tensor) -> None:
        X = h.detach().reshape(h.shape[0], -1).to(torch.float64)
        y = y.to(X.device, torch.int64)
        self.lo = torch.minimum(self.lo, X.amin(0))
        self.hi = torch.maximum(self.hi, X.amax(0))
        one_hot = torch.nn.functional.one_hot(y, self.C).to(torch.float64)
        counts = one_hot.sum(0)
        new = (self.counts == 0) & (counts > 0)
        if bool(new.any()):
            self.shift[new] = (one_hot[:, new].T @ X) / counts[new][:, None]
        X = X - self.shift[y]
        self.offset_sums += one_hot.T @ X
        self.counts += counts
        self.gram.addmm_(X.T, X)

    def to_accumulator(self) -> StatsAccumulator:
        host = HostMoments(self.C, self.p)
        host.counts = self.counts.cpu().numpy()
        host.shift = self.shift.cpu().numpy()
        host.offset_sums = self.offset_sums.cpu().numpy()
        host.gram = np.asfortranarray(self.gram.cpu().numpy())
        return StatsAccumulator.from_arrays(*host.moments())


class TorchStatsRecorder(_Recorder):
    """Class statistics of the input of `last_layer` at chosen epochs (module docstring).

    `num_classes` defaults to the layer's `out_features`; `weight_decay` is λ in the paper's
    scale; `directory` writes each checkpoint to its own file as it is captured (see
    `centralpath.ArrayStatsRecorder`).
    """

    def __init__(
        self,
        last_layer: torch.nn.Linear,
        num_classes: int | None = None,
        *,
        weight_decay: float = 0.0,
        directory=None,
    ):
        require(
            isinstance(last_layer, torch.nn.Linear),
            f"TorchStatsRecorder needs the final nn.Linear (its input is the features), got "
            f"{type(last_layer).__name__}",
        )
        super().__init__(
            num_classes or last_layer.out_features, weight_decay=weight_decay, directory=directory
        )
        self.layer = last_layer
        self._labels = None
        self._moments: _DeviceMoments | None = None
        self._nc4: list | None = None
        last_layer.register_forward_hook(self._hook)

    def _checked_labels(self, y) -> torch.Tensor:
        """A batch's labels as class indices 0..C−1: float labels were truncated silently and a
        label out of range ended in a raw torch error (one_hot)."""
        C = self.num_classes
        y = torch.as_tensor(y)
        require(
            not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool),
            f"the loader's labels must be integer class indices 0..{C - 1}, got dtype {y.dtype}; "
            "yield them as a LongTensor (y.long() if they are whole numbers)",
        )
        require(
            y.ndim == 1,
            f"the loader's labels must be one class index per sample (shape [batch]), got shape "
            f"{tuple(y.shape)}; pass class indices, not one-hot rows (y.argmax(1))",
        )
        if y.numel():
            lo, hi = int(y.min()), int(y.max())
            require(
                0 <= lo and hi < C,
                f"the loader's labels must lie in 0..{C - 1} (num_classes = {C}), found "
                f"{lo if lo < 0 else hi}; relabel the classes, or pass num_classes",
            )
        return y

    def _hook(self, module, inputs, output):
        if self._labels is None:
            return
        h = inputs[0].detach()
        h = h.reshape(h.shape[0], -1)
        require(
            h.shape[0] == self._labels.shape[0],
            f"the loader gave {self._labels.shape[0]} labels for a batch of {h.shape[0]} "
            "samples; yield (inputs, labels) with one label per input",
        )
        if self._nc4 is not None:  # second pass: NC4 against the final class means
            W, b, means, sq = self._nc4[1:]
            X = h.to(torch.float64)
            predicted = (X @ W.T + b).argmax(1)
            nearest = (-2.0 * X @ means.T + sq).argmin(1)
            self._nc4[0] += int((predicted != nearest).sum())
            return
        if self._moments is None:
            self._moments = _DeviceMoments(self.num_classes, h.shape[1], h.device)
        self._moments.add(h, self._labels)

    @torch.no_grad()
    def capture(self, model, loader, epoch, *, nc4: bool = True) -> Checkpoint:
        """One pass over the *training* set in eval mode (`loader` yields (inputs, labels)), and
        a second one for NC4 (`nc4=False` skips it: analyze then reports NC4 as null)."""
        was_training = model.training
        model.eval()
        try:
            self._moments = None
            for x, y in loader:
                self._labels = self._checked_labels(y)
                model(x)
            self._labels = None
            require(self._moments is not None, "the loader gave no batch; pass the training set")
            moments = self._moments
            acc = moments.to_accumulator()
            W = self.layer.weight.detach().to(torch.float64)
            b = (
                torch.zeros(W.shape[0], dtype=torch.float64, device=W.device)
                if self.layer.bias is None
                else self.layer.bias.detach().to(torch.float64)
            )
            if nc4:
                means = torch.as_tensor(acc.means, device=W.device)
                self._nc4 = [0, W, b, means, (means**2).sum(1)]
                for x, y in loader:
                    self._labels = self._checked_labels(y)
                    model(x)
                missed = self._nc4[0]
                acc = StatsAccumulator.from_arrays(
                    acc.counts, acc.means, acc.scatter, missed, float(acc.n)
                )
        finally:
            self._labels = None
            self._nc4 = None
            self._moments = None
            model.train(was_training)
        lo, hi = moments.lo.cpu().numpy(), moments.hi.cpu().numpy()
        checkpoint = Checkpoint(
            float(epoch),
            acc,
            W.cpu().numpy(),
            b.cpu().numpy(),
            float(np.max(np.maximum(np.abs(lo), np.abs(hi)))),
            float(np.max(hi - lo)),
        )
        self.add(checkpoint)
        return checkpoint


__all__ = ["TorchStatsRecorder"]


def __getattr__(name: str):
    if name == "StatsRecorder":  # the name shared with the NumPy/JAX recorder until 0.1
        import warnings

        warnings.warn(
            "centralpath.torch.StatsRecorder is now TorchStatsRecorder", DeprecationWarning, 2
        )
        return TorchStatsRecorder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
