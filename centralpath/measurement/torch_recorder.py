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

`FeatureRecorder` keeps the features themselves (a features file, for `analyze` and
`compare`) and the per-epoch training record that only the training loop sees:

```python
from centralpath.torch import FeatureRecorder

rec = FeatureRecorder(model.fc, loss="mse", weight_decay=5e-4, capture_at=[0, 1, 2, 4, 8, 16, 30])
rec.end_epoch(0, model, train_eval_loader)  # epoch 0: before training
for epoch in range(1, 31):
    for x, y in train_loader:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), nn.functional.one_hot(y, 10).float()).backward()
        opt.step()
        rec.step(y, opt)  # the minibatch's loss, feature gradient, class sums; lr, momentum
    rec.end_epoch(epoch, model, train_eval_loader, test_loader)  # captures at capture_at
rec.save("features.npz")  # then: centralpath analyze / compare features.npz
```
"""

from __future__ import annotations

import numpy as np
import torch

from .._errors import require
from ._accumulate import HostMoments, StatsAccumulator
from ._recorder import ArrayStatsRecorder as _Recorder
from ._stream import Checkpoint


def _class_indices(y, num_classes: int, what: str) -> torch.Tensor:
    """Labels as class indices 0..C−1, or a one-line refusal: float labels were truncated
    silently, one-hot rows miscounted the batch and a label out of range ended in a raw torch
    error (one_hot)."""
    C = num_classes
    y = torch.as_tensor(y)
    require(
        not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool),
        f"{what} must be integer class indices 0..{C - 1}, got dtype {y.dtype}; "
        "yield them as a LongTensor (y.long() if they are whole numbers)",
    )
    require(
        y.ndim == 1,
        f"{what} must be one class index per sample (shape [batch]), got shape "
        f"{tuple(y.shape)}; pass class indices, not one-hot rows (y.argmax(1))",
    )
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        require(
            0 <= lo and hi < C,
            f"{what} must lie in 0..{C - 1}, found {lo}..{hi} (num_classes = {C}); relabel "
            "the classes, or pass num_classes",
        )
    return y.to(torch.int64)


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
                self._labels = _class_indices(y, self.num_classes, "the loader's labels")
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
                    self._labels = _class_indices(y, self.num_classes, "the loader's labels")
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


# --------------------------------------------------------------------------- features


class FeatureRecorder:
    """Features, classifier and the training record of a PyTorch run, as a features file
    (module docstring). A forward hook on `last_layer`, the final `nn.Linear`, sees its input
    (the features h) and output (the logits z = W h + b).

    **Arguments:**

    - `last_layer`: the final `nn.Linear`.
    - `loss`: `"mse"` for `nn.MSELoss()` on one-hot targets (its mean runs over the C outputs
      too: (2/C)·the paper's ½ Ave ‖z − y‖²), `"ce"` for `nn.CrossEntropyLoss()`.
    - `weight_decay`: the optimiser's `weight_decay` wd. In the paper's scale (docs/theory.md §2)
      the run minimises L + (λ/2)‖θ‖² with steps η: for `"mse"` λ = C·wd/2 and η = 2·lr/C (the
      file's `weight_decay` and `learning_rate`); for `"ce"` λ = wd and η = lr.
    - `capture_at`: the epochs (0 = before training) whose features `end_epoch` keeps.
    - `momentum`: SGD's momentum; default: read from the optimiser `step` is given (none for
      optimisers without one, e.g. Adam: the lr clocks then refuse and say so).
    - `num_classes`: default the layer's `out_features`.

    **Per epoch** (`step` after each optimiser step, `end_epoch` after each epoch), all in the
    paper's scale: `learning_rate` (the epoch's Σ η / `steps_per_epoch`), `epoch_loss` (mean of
    the minibatch data loss over the steps; no weight decay), `feature_grad_sq` (mean over the
    steps and samples of ‖Wᵀ r_i‖², r_i = ∂ℓ_i/∂z_i) and, when epoch 0 is captured,
    `class_mean_step`: the squared displacement of the centred class means of the epoch's
    minibatch features (training mode, averaged over the epoch) from the previous epoch's (for
    epoch 1: from the captured epoch 0). Cost: O(B·C·p) per step on the batch's device; no
    per-sample features are kept between epochs, so `feature_step` is not recorded.
    """

    def __init__(
        self,
        last_layer: torch.nn.Linear,
        *,
        loss: str = "mse",
        weight_decay: float = 0.0,
        capture_at=(),
        momentum: float | None = None,
        num_classes: int | None = None,
    ):
        require(
            isinstance(last_layer, torch.nn.Linear),
            f"FeatureRecorder needs the final nn.Linear (its input is the features), got "
            f"{type(last_layer).__name__}",
        )
        require(loss in ("mse", "ce"), f"loss must be 'mse' or 'ce', got {loss!r}")
        wd = float(weight_decay)
        require(np.isfinite(wd) and wd >= 0, f"weight_decay must be >= 0, got {weight_decay!r}")
        require(
            momentum is None or 0 <= float(momentum) < 1,
            f"momentum must lie in [0, 1), got {momentum!r}",
        )
        self.layer, self.loss = last_layer, loss
        self.num_classes = int(num_classes or last_layer.out_features)
        C = self.num_classes
        # The paper's scale: nn.MSELoss() = (2/C)·½ Ave ‖z − y‖².
        self._scale = 2.0 / C if loss == "mse" else 1.0
        self.weight_decay = wd / self._scale
        self.capture_at = {int(e) for e in capture_at}
        self.momentum = None if momentum is None else float(momentum)
        self._last = None  # (h, z, W) of the latest forward pass
        self._epoch = self._new_epoch()
        self._record: dict[str, list] = {
            k: [] for k in ("lr_sum", "steps", "epoch_loss", "feature_grad_sq", "class_mean_step")
        }
        self._means_prev = None
        self._completed = 0
        self._captures: list[dict] = []
        self._labels = None
        self._capturing = None
        last_layer.register_forward_hook(self._hook)

    @staticmethod
    def _new_epoch() -> dict:
        return {"steps": 0, "lr": 0.0, "loss": 0.0, "grad_sq": 0.0, "sums": None, "counts": None}

    def _hook(self, module, inputs, output):
        h = inputs[0].detach().reshape(inputs[0].shape[0], -1)
        if self._capturing is not None:
            self._capturing.append((h.to(torch.float32).cpu(), output.detach().cpu()))
            return
        if torch.is_grad_enabled():  # a training forward pass: kept for `step`
            self._last = (h, output.detach(), module.weight.detach().clone())

    @torch.no_grad()
    def step(self, labels, optimizer=None, *, lr: float | None = None) -> None:
        """Record one optimiser step: the minibatch's labels, and its learning rate from
        `optimizer` (its first parameter group) or `lr`."""
        require(
            self._last is not None, "step() needs a training forward pass through the model first"
        )
        require(
            optimizer is not None or lr is not None,
            "step() needs the optimizer (for its learning rate) or lr=",
        )
        y = _class_indices(labels, self.num_classes, "step()'s labels")
        h, z, W = self._last
        self._last = None
        require(
            y.shape[0] == h.shape[0],
            f"step() got {y.shape[0]} labels for a batch of {h.shape[0]} samples; pass the "
            "labels of the batch just trained on",
        )
        if optimizer is not None:
            group = optimizer.param_groups[0]
            lr = group["lr"] if lr is None else lr
            if self.momentum is None and "momentum" in group and "betas" not in group:
                self.momentum = float(group["momentum"])
        z = z.to(torch.float64)
        y = y.to(z.device)
        one_hot = torch.nn.functional.one_hot(y, self.num_classes).to(torch.float64)
        if self.loss == "mse":
            r = z - one_hot
            loss = 0.5 * (r**2).sum(1).mean()
        else:
            logp = torch.log_softmax(z, dim=1)
            r = logp.exp() - one_hot
            loss = -(logp * one_hot).sum(1).mean()
        g = r @ W.to(torch.float64)
        e = self._epoch
        e["steps"] += 1
        e["lr"] += float(lr) * self._scale
        e["loss"] += float(loss)
        e["grad_sq"] += float((g**2).sum(1).mean())
        hf = h.to(torch.float64)
        one_hot = one_hot.to(hf.device)
        sums, counts = one_hot.T @ hf, one_hot.sum(0)
        e["sums"] = sums if e["sums"] is None else e["sums"] + sums
        e["counts"] = counts if e["counts"] is None else e["counts"] + counts

    @staticmethod
    def _centred(sums, counts) -> np.ndarray:
        counts = np.asarray(counts, float)
        means = np.asarray(sums, float) / np.maximum(counts, 1)[:, None]
        return means - (counts @ means) / counts.sum()

    def end_epoch(self, epoch: int, model, loader, test_loader=None) -> None:
        """Close epoch `epoch` (≥ 1) of the training record and, when `epoch` is in
        `capture_at` (0 included), capture the features of `loader` — the training set in a
        fixed order, no augmentation — in eval mode, with W, b and the training (and, given
        `test_loader`, test) accuracy and data loss."""
        epoch = int(epoch)
        require(
            epoch == self._completed + (epoch > 0),
            f"end_epoch({epoch}) after epoch {self._completed}; close the epochs in order 0, 1, 2, …",
        )
        if epoch > 0:
            e = self._epoch
            require(
                e["steps"] > 0,
                f"epoch {epoch} recorded no step(); call step() after each optimiser step",
            )
            rec = self._record
            rec["lr_sum"].append(e["lr"])
            rec["steps"].append(e["steps"])
            rec["epoch_loss"].append(e["loss"] / e["steps"])
            rec["feature_grad_sq"].append(e["grad_sq"] / e["steps"])
            covered = bool(torch.all(e["counts"] > 0))
            means = self._centred(e["sums"].cpu(), e["counts"].cpu()) if covered else None
            if means is not None and self._means_prev is not None:
                rec["class_mean_step"].append(
                    float(np.mean(np.sum((means - self._means_prev) ** 2, 1)))
                )
            self._means_prev = means
            self._epoch = self._new_epoch()
        self._completed = epoch
        if epoch in self.capture_at:
            self._capture(epoch, model, loader, test_loader)

    @torch.no_grad()
    def _pass(self, model, loader):
        """(features [n, p] float32, logits [n, C] float64, labels [n]) of one eval pass."""
        self._capturing, labels = [], []
        try:
            for x, y in loader:
                labels.append(_class_indices(y, self.num_classes, "the loader's labels"))
                model(x)
            parts = self._capturing
        finally:
            self._capturing = None
        require(bool(parts), "the loader gave no batch; pass the training set")
        return (
            torch.cat([h for h, _ in parts]).numpy(),
            torch.cat([z for _, z in parts]).to(torch.float64).numpy(),
            torch.cat(labels).numpy(),
        )

    def _data_loss(self, z, labels) -> float:
        Y = np.eye(self.num_classes)[labels]
        if self.loss == "mse":
            return float(0.5 * np.mean(np.sum((z - Y) ** 2, 1)))
        zs = z - z.max(1, keepdims=True)
        logp = zs - np.log(np.exp(zs).sum(1, keepdims=True))
        return float(-np.mean(logp[np.arange(len(labels)), labels]))

    def _capture(self, epoch, model, loader, test_loader) -> None:
        was_training = model.training
        model.eval()
        try:
            H, z, labels = self._pass(model, loader)
            entry = {
                "epoch": epoch,
                "features": H,
                "labels": labels,
                "W": self.layer.weight.detach().to(torch.float64).cpu().numpy(),
                "b": (
                    np.zeros(self.num_classes)
                    if self.layer.bias is None
                    else self.layer.bias.detach().to(torch.float64).cpu().numpy()
                ),
                "train_accuracy": float(np.mean(z.argmax(1) == labels)),
            }
            if test_loader is not None:
                _, zt, lt = self._pass(model, test_loader)
                entry["test_accuracy"] = float(np.mean(zt.argmax(1) == lt))
                entry["test_loss"] = self._data_loss(zt, lt)
        finally:
            model.train(was_training)
        if self._captures:
            require(
                np.array_equal(self._captures[0]["labels"], labels),
                f"the loader gave the samples in another order at epoch {epoch} than at epoch "
                f"{self._captures[0]['epoch']}; capture with a loader without shuffling",
            )
        if epoch == 0:
            self._means_prev = self._centred(
                np.eye(self.num_classes)[labels].T @ H.astype(np.float64),
                np.bincount(labels, minlength=self.num_classes),
            )
        self._captures.append(entry)

    def arrays(self) -> dict:
        """The features file's arrays (`save` writes them)."""
        caps = self._captures
        require(bool(caps), "nothing captured yet; list epochs in capture_at and call end_epoch()")
        E = self._completed
        out = {
            "features": np.stack([c["features"] for c in caps]),
            "labels": caps[0]["labels"],
            "W": np.stack([c["W"] for c in caps]),
            "b": np.stack([c["b"] for c in caps]),
            "epochs": np.asarray([c["epoch"] for c in caps], np.int64),
            "weight_decay": np.float64(self.weight_decay),
            "num_classes": np.int64(self.num_classes),
            "loss": np.asarray(self.loss, dtype=np.str_),
            "train_accuracy": np.asarray([c["train_accuracy"] for c in caps]),
        }
        tested = ["test_accuracy" in c for c in caps]
        require(
            all(tested) or not any(tested),
            "a test_loader was given at some captures and not others; give it at every capture or none",
        )
        if all(tested):
            out["test_accuracy"] = np.asarray([c["test_accuracy"] for c in caps])
            out["test_loss"] = np.asarray([c["test_loss"] for c in caps])
        if E > 0:
            rec = self._record
            steps = np.asarray(rec["steps"])
            spe = int(np.bincount(steps).argmax())
            # The epoch's Σ η over spe steps: Σ_e learning_rate[e]·spe is the exact total.
            out["learning_rate"] = np.asarray(rec["lr_sum"]) / spe
            out["steps_per_epoch"] = np.int64(spe)
            out["epoch_loss"] = np.asarray(rec["epoch_loss"])
            out["feature_grad_sq"] = np.asarray(rec["feature_grad_sq"])
            if len(rec["class_mean_step"]) == E:
                out["class_mean_step"] = np.asarray(rec["class_mean_step"])
            if self.momentum is not None:
                out["momentum"] = np.float64(self.momentum)
        return out

    def save(self, path) -> None:
        """Write the features file (atomically; checked against the schema first)."""
        from ._io import save_features

        save_features(path, **self.arrays())


__all__ = ["FeatureRecorder", "TorchStatsRecorder"]


def __getattr__(name: str):
    if name == "StatsRecorder":  # the name shared with the NumPy/JAX recorder until 0.1
        import warnings

        warnings.warn(
            "centralpath.torch.StatsRecorder is now TorchStatsRecorder", DeprecationWarning, 2
        )
        return TorchStatsRecorder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
