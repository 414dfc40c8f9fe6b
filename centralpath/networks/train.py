"""Train a network with Optax and capture its last-layer features into a features file.

`fit` runs minibatch SGD with momentum and weight decay, evaluates the whole training set after
every epoch, and keeps (features H, W, b, loss, accuracy, and the test set's loss and accuracy
when the data has one) at log-spaced epochs — epoch 0 (before training), the last epoch, and the
first epoch with zero training error (the start of the terminal phase of training). With a
`state_dir` it saves its complete state after every epoch and continues from it when called
again: a resumed run is bit-identical to an uninterrupted one.

**Loss scale (docs/theory.md §2).** The MSE loss is the paper's L = ½ Ave ‖W h + b − y‖², one-hot y.
Weight decay is `optax.add_decayed_weights(wd)` chained before `optax.sgd`: it adds wd·θ to the
gradient of every parameter, W and b included, i.e. minimises L + (wd/2)‖θ‖². On the last layer
that is the paper's (λ/2)(‖W‖² + ‖b‖²) with **λ = wd**, the `weight_decay` written to the
features file. (PyTorch's `nn.MSELoss()` averages over the C outputs as well; trained with weight
decay wd it corresponds to λ = C·wd/2 instead.)
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._errors import InputError, NumericalError, require
from .._run.config import (
    LOSSES,
    SCHEDULES,
    TrainConfig as TrainConfig,
    validate_training as validate,
)
from ..measurement._io import (
    EPOCH_RECORD_KEYS,
    atomic_path,
    load_npz,
    save_features,
    save_npz,
    write_json,
)
from .datasets import Dataset

# --------------------------------------------------------------------------- losses


def mse_loss(logits, labels, num_classes: int):
    """½ Ave ‖W h + b − y‖² on one-hot targets: the paper's scale (docs/theory.md §2)."""
    y = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    return 0.5 * jnp.mean(jnp.sum((logits - y) ** 2, axis=-1))


def cross_entropy_loss(logits, labels, num_classes: int):
    """Ave −log softmax(W h + b)_y."""
    del num_classes
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


_LOSS_FNS = {"mse": mse_loss, "ce": cross_entropy_loss}


# --------------------------------------------------------------------------- optimiser


def learning_rate_schedule(lr: float, *, schedule: str, total_steps: int) -> optax.Schedule:
    """`cosine` (to 0 at the last step), `step` (÷10 at 1/3 and 2/3 of training, as the paper's
    networks) or `constant`."""
    total_steps = max(int(total_steps), 1)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(lr, total_steps)
    if schedule == "step":
        return optax.piecewise_constant_schedule(
            lr, {max(total_steps // 3, 1): 0.1, max(2 * total_steps // 3, 2): 0.1}
        )
    if schedule == "constant":
        return optax.constant_schedule(lr)
    raise InputError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def make_optimizer(
    *, lr: float, weight_decay: float, momentum: float, schedule: str, total_steps: int
) -> optax.GradientTransformation:
    """SGD with momentum on the gradient of L + (wd/2)‖θ‖²: λ = wd in the paper's scale."""
    sched = learning_rate_schedule(lr, schedule=schedule, total_steps=total_steps)
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(sched, momentum=momentum if momentum > 0 else None),
    )


# The optimiser is a static argument of the compiled epoch, hashed by identity: one object per
# setting lets a second run with the same settings (a resume, a test) reuse the compiled code.
_cached_optimizer = functools.lru_cache(maxsize=16)(
    lambda lr, weight_decay, momentum, schedule, total_steps: make_optimizer(
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        schedule=schedule,
        total_steps=total_steps,
    )
)


def capture_epochs(epochs: int, num: int) -> np.ndarray:
    """About `num` log-spaced epochs in 0..epochs, always with 0 and `epochs`."""
    if num - 1 > 10 * epochs * (math.log(epochs) + 1):
        # So dense that the rounded geomspace hits every epoch (its spacing near `epochs` is
        # below 0.1): the same answer without allocating `num` floats (num = 1e9 took 8 GB).
        return np.arange(epochs + 1, dtype=np.int64)
    inner = np.unique(np.round(np.geomspace(1, epochs, max(num - 1, 1))).astype(np.int64))
    return np.unique(np.concatenate([[0], inner, [epochs]]))


# --------------------------------------------------------------------------- compiled steps


# A model with batch normalisation (`models.is_stateful`) carries its running statistics as an
# `eqx.nn.State` ("model state", `mstate`); the others have mstate = None. Training uses batch
# statistics and updates the running ones; evaluation and capture use the running statistics
# (`inference_mode`), as PyTorch's model.eval().


def _forward_batch(model, mstate, xb):
    """(logits [B, C], new model state) of a training minibatch."""
    if mstate is None:
        return jax.vmap(model)(xb), None
    batched = jax.vmap(model, in_axes=(0, None), out_axes=(0, None), axis_name="batch")
    return batched(xb, mstate)


def _features_all(model, mstate, inputs, chunk):
    """Features of every sample, in evaluation mode, chunk by chunk."""
    if mstate is None:
        return jax.lax.map(model.features, inputs, batch_size=chunk)
    frozen = eqx.nn.inference_mode(model)
    return jax.lax.map(lambda x: frozen.features(x, mstate)[0], inputs, batch_size=chunk)


@eqx.filter_jit
def _train_epoch(
    model, mstate, opt_state, key, inputs, labels, *, optimizer, loss_fn, batch_size, num_classes
):
    """One pass over a fresh permutation; the last partial minibatch is dropped (reshuffled next
    epoch), so that every step has the same shape and the epoch is one `lax.scan`."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    n = labels.shape[0]
    num_batches = n // batch_size
    order = jax.random.permutation(key, n)[: num_batches * batch_size]

    def step(carry, idx):
        params, opt_state, mstate = carry

        def batch_loss(p):
            logits, new_mstate = _forward_batch(eqx.combine(p, static), mstate, inputs[idx])
            return loss_fn(logits, labels[idx], num_classes), (new_mstate, logits)

        (value, (mstate, logits)), grads = jax.value_and_grad(batch_loss, has_aux=True)(params)
        # ∂ℓ_i/∂h_i = Wᵀ r_i with r_i = ∂ℓ_i/∂z_i (z = W h + b): B times the batch mean's
        # gradient in z, since the batch loss is the mean of the per-sample losses ℓ_i.
        r = jax.grad(lambda z: loss_fn(z, labels[idx], num_classes))(logits) * idx.shape[0]
        g = r @ eqx.combine(params, static).classifier.weight
        grad_sq = jnp.mean(jnp.sum(g * g, axis=-1))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, mstate), (value, grad_sq)

    (params, opt_state, mstate), (losses, grad_sq) = jax.lax.scan(
        step, (params, opt_state, mstate), order.reshape(num_batches, batch_size)
    )
    return eqx.combine(params, static), mstate, opt_state, losses, grad_sq


@functools.partial(jax.jit, static_argnames="num_classes")
def _centred_class_means(H, labels, num_classes: int):
    """M̃ [C, p]: the class means minus the global mean, μ_c − μ_G."""
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=H.dtype)
    means = (one_hot.T @ H) / jnp.sum(one_hot, axis=0)[:, None]
    return means - jnp.mean(H, axis=0)


@jax.jit
def _steps(H, H_prev, M, M_prev):
    """(class_mean_step, feature_step) of one epoch (the features file's per-epoch record)."""
    return (
        jnp.mean(jnp.sum((M - M_prev) ** 2, axis=-1)),
        jnp.mean(jnp.sum((H - H_prev) ** 2, axis=-1)),
    )


@eqx.filter_jit
def _test_metrics(model, mstate, inputs, labels, *, loss_fn, num_classes, chunk):
    """The data term of the loss and the accuracy on held-out samples."""
    H = _features_all(model, mstate, inputs, chunk)
    logits = H @ model.classifier.weight.T + model.classifier.bias
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return loss_fn(logits, labels, num_classes), accuracy


def epoch_learning_rates(schedule: optax.Schedule, epochs: int, steps_per_epoch: int) -> np.ndarray:
    """[E] the mean step size of each epoch e = 1..E: Σ_e rate[e]·steps_per_epoch is the total
    Σ η of SGD, the time of gradient descent (docs/theory.md §6) that SGD has travelled."""
    # In chunks of about a million steps: 10**6 epochs of many steps must not need gigabytes.
    per_chunk = max(1, (1 << 20) // steps_per_epoch)
    out = []
    for first in range(0, epochs, per_chunk):
        count = min(per_chunk, epochs - first)
        steps = np.arange(first * steps_per_epoch, (first + count) * steps_per_epoch)
        # A constant schedule returns one scalar whatever the steps: broadcast it.
        rates = np.broadcast_to(np.asarray(schedule(jnp.asarray(steps)), np.float64), steps.shape)
        out.append(rates.reshape(count, steps_per_epoch).mean(axis=1))
    return np.concatenate(out)


@eqx.filter_jit
def _evaluate(model, mstate, inputs, labels, *, loss_fn, num_classes, chunk):
    """Features of the whole training set, the data term of the loss and the accuracy."""
    H = _features_all(model, mstate, inputs, chunk)
    logits = H @ model.classifier.weight.T + model.classifier.bias
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return H, loss_fn(logits, labels, num_classes), accuracy


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class Training:
    """What `fit` returns: the final model and the captured checkpoints.

    **Fields:**

    - `model`: the trained model.
    - `epochs` [K]: the captured epochs (0 = before training).
    - `features` [K, n, p], `W` [K, C, p], `b` [K, C]: last-layer inputs and classifier.
      `features` is None when the captures kept class statistics instead (`stats`).
    - `loss` [K], `accuracy` [K]: training loss (the data term, without weight decay) and
      accuracy over the whole training set at each capture.
    - `test_loss` [K], `test_accuracy` [K]: the same on the held-out samples (None without).
    - `labels` [n], `num_classes`, `weight_decay` (λ in the paper's scale), `loss_name`.
    - `history_loss`, `history_accuracy` [E + 1]: the same after every epoch, index 0 = before.
    - `learning_rate` [E]: the mean step size of epoch e = 1..E; `momentum`; `steps_per_epoch`.
    - `epoch_record`: the per-epoch record of epochs e = 1..E (the features file's keys):
      `epoch_loss` (mean minibatch data loss over the epoch's steps), `feature_grad_sq` (mean
      ‖∂ℓ_i/∂h_i‖² over its steps and samples), `class_mean_step` and `feature_step` (squared
      displacement of the centred class means and of the features over the epoch, from the
      evaluation of the whole training set that ends every epoch).
    - `resumed_from`: the epoch a resumed run continued from (0 for a fresh run).
    - `model_state`: the batch-norm running statistics of a stateful model (ResNet18), else None.
    """

    model: Any
    epochs: np.ndarray
    features: np.ndarray
    W: np.ndarray
    b: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    labels: np.ndarray
    num_classes: int
    weight_decay: float
    loss_name: str
    history_loss: np.ndarray
    history_accuracy: np.ndarray
    resumed_from: int = 0
    test_loss: np.ndarray | None = None
    test_accuracy: np.ndarray | None = None
    learning_rate: np.ndarray | None = None
    momentum: float = 0.0
    steps_per_epoch: int = 0
    model_state: Any = None
    # Class statistics per capture instead of features (`capture_statistics`): the arrays of a
    # statistics file, stacked over the captures.
    stats: dict[str, np.ndarray] | None = None
    epoch_record: dict[str, np.ndarray] | None = None

    @property
    def first_zero_error_epoch(self) -> int | None:
        """First epoch after which every training sample is classified correctly."""
        hit = np.flatnonzero(self.history_accuracy >= 1.0)
        return int(hit[0]) if hit.size else None

    def features_arrays(self) -> dict[str, np.ndarray]:
        """Keyword arguments of `save_features` (the schema of `centralpath analyze`, with the
        training record: loss name, schedule, accuracies)."""
        out = {
            "features": self.features,
            "labels": self.labels,
            "W": self.W,
            "b": self.b,
            "epochs": self.epochs,
            "weight_decay": self.weight_decay,
            "num_classes": np.int64(self.num_classes),
            # A fixed-width unicode scalar: loadable without pickle, unlike a Python str object.
            "loss": np.asarray(self.loss_name, dtype=np.str_),
            "momentum": np.float64(self.momentum),
            "train_loss": self.loss,
            "train_accuracy": self.accuracy,
        }
        if self.learning_rate is not None:
            out["learning_rate"] = np.asarray(self.learning_rate, np.float64)
            out["steps_per_epoch"] = np.int64(self.steps_per_epoch)
        if self.epoch_record is not None:
            out.update({k: np.asarray(v, np.float64) for k, v in self.epoch_record.items()})
        if self.test_accuracy is not None:
            out["test_accuracy"] = self.test_accuracy
            out["test_loss"] = self.test_loss
        if self.stats is not None:  # a statistics file: the statistics replace the features
            del out["features"], out["labels"]
            out.update(self.stats)
        return out

    def save_features(self, path) -> None:
        """Write the features file (or, for statistics captures, the statistics file)."""
        if self.stats is not None:
            _save_statistics(path, self.features_arrays())
        else:
            save_features(path, **self.features_arrays())


# --------------------------------------------------------------------------- statistics captures

#: `capture="auto"` keeps class statistics instead of features once the float32 features of
#: all captures (K·n·p·4 bytes) would exceed this: K·(p² + C·p) numbers whatever n, written as a
#: statistics file that `analyze` reads like a features file (docs/reference/file-formats.md).
STATS_CAPTURE_BYTES = 1 << 30
_STATISTICS_KEYS = (
    "counts",
    "class_means",
    "sigma_w",
    "nc4_mismatches",
    "feature_max_abs",
    "feature_spread",
)


def capture_statistics(num_captures: int, n: int, p: int, capture: str = "auto") -> bool:
    """Whether `fit` keeps class statistics rather than features at each capture."""
    require(
        capture in ("auto", "features", "stats"),
        f"unknown capture {capture!r}; choose auto, features or stats",
    )
    return capture == "stats" or (
        capture == "auto" and 4 * num_captures * n * p > STATS_CAPTURE_BYTES
    )


def _statistics_entry(H, labels, model, num_classes: int) -> dict:
    """A capture's class statistics and NC4 count, from its features (`cp.checkpoint_of`)."""
    from ..measurement._recorder import checkpoint_of

    W, b = np.asarray(model.classifier.weight), np.asarray(model.classifier.bias)
    ck = checkpoint_of((H, labels), num_classes, W=W, b=b)
    return {
        "counts": ck.acc.counts,
        "class_means": ck.acc.means,
        "sigma_w": ck.acc.sigma_w(),
        "nc4_mismatches": np.float64(ck.acc.nc4_mismatches),
        "feature_max_abs": np.float64(ck.feature_max_abs),
        "feature_spread": np.float64(ck.feature_spread),
    }


def _save_statistics(path, arrays: dict) -> None:
    """Write a statistics file and check it reads back (`_stream.open_source`)."""
    from ..measurement._io import save_npz
    from ..measurement._stream import STATS_VERSION, open_source

    save_npz(path, **arrays, stats_version=np.int64(STATS_VERSION))
    open_source(path, "statistics file")


# --------------------------------------------------------------------------- state on disk


def _fingerprint(model, data: Dataset, options: dict) -> dict:
    """What must match for a saved state to be continued: options, architecture, data (the
    held-out samples included)."""
    shapes = [
        f"{leaf.dtype}{list(leaf.shape)}"
        for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array))
    ]
    digest = hashlib.sha256()
    for a in (data.inputs, data.labels, data.test_inputs, data.test_labels):
        if a is not None:
            digest.update(np.ascontiguousarray(a).tobytes())
    return {
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()},
        "architecture": f"{type(model).__name__}:{','.join(shapes)}",
        "data_sha256": digest.hexdigest(),
    }


class _StateDir:
    """Training state in a directory: `state.eqx` (model, optimiser state, epoch, PRNG key,
    per-epoch history; Equinox leaf serialisation, no pickle), `capture-EEEEEE.npz` per captured
    epoch, and `fingerprint.json`. Every file is written atomically; a capture is written before
    the state that counts it, so a kill between the two only repeats that capture."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def state_file(self) -> Path:
        return self.path / "state.eqx"

    def exists(self) -> bool:
        return self.state_file.is_file()

    def check_fingerprint(self, fingerprint: dict) -> None:
        fp = self.path / "fingerprint.json"
        if not fp.is_file():
            write_json(fp, fingerprint)
            return
        from ..measurement._io import read_json

        saved = read_json(fp, "training fingerprint", fix="start afresh with --overwrite")
        require(
            isinstance(saved, dict),
            f"{fp} is not a training fingerprint; start afresh with --overwrite",
        )
        differ = sorted(
            k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k)
        )
        require(
            not differ,
            f"the saved training state in {self.path} was made with different "
            f"{', '.join(differ)}; resume with the same configuration or start a new run",
        )

    def save(self, state) -> None:
        with atomic_path(self.state_file, suffix=".tmp.eqx") as tmp, open(tmp, "wb") as fh:
            eqx.tree_serialise_leaves(fh, state)

    def load(self, like):
        try:
            with open(self.state_file, "rb") as fh:
                return eqx.tree_deserialise_leaves(fh, like)
        except (OSError, ValueError, EOFError) as e:
            raise InputError(
                f"the training state {self.state_file} is unreadable ({type(e).__name__}); "
                "start a new run"
            ) from None

    def save_capture(self, epoch: int, capture: dict) -> None:
        save_npz(self.path / f"capture-{epoch:06d}.npz", epoch=np.int64(epoch), **capture)

    def load_captures(self, up_to: int) -> dict[int, dict]:
        out = {}
        for f in sorted(self.path.glob("capture-*.npz")):
            arrays = load_npz(f, "captured checkpoint")
            epoch = int(arrays.pop("epoch"))
            if epoch <= up_to:
                out[epoch] = arrays
        return out


# --------------------------------------------------------------------------- training


def fit(
    model,
    data: Dataset,
    config: TrainConfig,
    *,
    key,
    state_dir=None,
    progress: bool = False,
    on_epoch: Callable[[int, float, float], None] | None = None,
    model_state=None,
    capture: str = "auto",
) -> Training:
    """Train `model` on `data` and capture last-layer features (module docstring).

    **Arguments:**

    - `model`: an `MLP`/`CNN` (anything with `features(x)` and a `classifier` `eqx.nn.Linear`),
      or a stateful `ResNet18` with its `model_state` (`make_model` returns both).
    - `data`: the training set.
    - `config`: a `TrainConfig`, of which the optimisation is read: `loss` (`mse`, ½ Ave
      ‖W h + b − y‖² in the paper's scale, or `ce`), the SGD settings `epochs`, `lr`,
      `momentum`, `batch_size`, `schedule` (cosine, step or constant over all steps),
      `weight_decay` (on every parameter; λ = wd in the paper's scale for the MSE loss),
      `num_checkpoints` (about how many log-spaced epochs to capture, plus the first
      zero-error epoch) and `save_every` (save the state every this many epochs, and at the
      last). Its data and network keys are `train_from_config`'s.
    - `key`: PRNG key of the minibatch order.
    - `state_dir`: directory for the training state; if it holds one, training continues from it
      (its configuration must match), bit-identically to an uninterrupted run.
    - `progress`: show progress over epochs (a tqdm bar on a terminal, plain lines otherwise).
    - `on_epoch`: called as `on_epoch(epoch, loss, accuracy)` after every epoch.
    - `model_state`: the `eqx.nn.State` of a model with batch normalisation (None otherwise).
    - `capture`: what a capture keeps — `features`, `stats` (class statistics and the NC4
      count, no features: a statistics file) or `auto` (statistics once the features of all
      captures would exceed `STATS_CAPTURE_BYTES`).

    **Returns:**

    A `Training` (with the test set's loss and accuracy at every capture when `data` has
    one). Raises `NumericalError` when the loss becomes non-finite.
    """
    require(
        isinstance(config, TrainConfig),
        f"fit takes a TrainConfig (validated on construction), got {type(config).__name__}; "
        "e.g. TrainConfig(epochs=10)",
    )
    loss, schedule, save_every = config.loss, config.schedule, config.save_every
    lr, weight_decay, momentum = config.lr, config.weight_decay, config.momentum
    num_checkpoints = config.num_checkpoints
    epochs, batch_size = int(config.epochs), min(int(config.batch_size), data.num_samples)
    steps_per_epoch = data.num_samples // batch_size
    optimizer = _cached_optimizer(
        float(lr), float(weight_decay), float(momentum), schedule, epochs * steps_per_epoch
    )
    loss_fn = _LOSS_FNS[loss]
    C = data.num_classes
    inputs, labels = jnp.asarray(data.inputs), jnp.asarray(data.labels)
    train_kw = dict(optimizer=optimizer, loss_fn=loss_fn, batch_size=batch_size, num_classes=C)
    eval_kw = dict(loss_fn=loss_fn, num_classes=C, chunk=min(4096, data.num_samples))
    tested = data.num_test_samples > 0
    if tested:
        test_inputs, test_labels = jnp.asarray(data.test_inputs), jnp.asarray(data.test_labels)
        test_kw = dict(loss_fn=loss_fn, num_classes=C, chunk=min(4096, data.num_test_samples))
    rates = epoch_learning_rates(
        learning_rate_schedule(float(lr), schedule=schedule, total_steps=epochs * steps_per_epoch),
        epochs,
        steps_per_epoch,
    )

    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    state = {
        "model": model,
        "model_state": model_state,
        "opt_state": opt_state,
        "epoch": np.zeros((), np.int64),
        "key": np.asarray(_raw_key(key), np.uint32),
        "history_loss": np.full(epochs + 1, np.nan),
        "history_accuracy": np.full(epochs + 1, np.nan),
        "epoch_record": {k: np.full(epochs, np.nan) for k in EPOCH_RECORD_KEYS},
    }
    captures: dict[int, dict] = {}
    store = None
    if state_dir is not None:
        store = _StateDir(state_dir)
        options = dict(
            loss=loss,
            epochs=epochs,
            lr=float(lr),
            weight_decay=float(weight_decay),
            momentum=float(momentum),
            batch_size=batch_size,
            schedule=schedule,
            num_checkpoints=int(num_checkpoints),
            key=state["key"].tolist(),
        )
        store.check_fingerprint(_fingerprint(model, data, options))
        if store.exists():
            state = store.load(state)
            captures = store.load_captures(int(state["epoch"]))
    start = int(state["epoch"])
    plan = set(capture_epochs(epochs, num_checkpoints).tolist())
    as_stats = capture_statistics(
        len(plan) + 1, data.num_samples, int(model.classifier.weight.shape[1]), capture
    )

    def capture(epoch, H, model, value, accuracy):
        entry = {
            **(_statistics_entry(H, labels, model, C) if as_stats else {"features": np.asarray(H)}),
            "W": np.asarray(model.classifier.weight),
            "b": np.asarray(model.classifier.bias),
            "loss": np.float64(value),
            "accuracy": np.float64(accuracy),
        }
        if tested:
            test_value, test_acc = _test_metrics(model, mstate, test_inputs, test_labels, **test_kw)
            entry["test_loss"] = np.float64(test_value)
            entry["test_accuracy"] = np.float64(test_acc)
        captures[epoch] = entry
        if store is not None:
            store.save_capture(epoch, entry)

    model, mstate, opt_state = state["model"], state["model_state"], state["opt_state"]
    raw_key = jnp.asarray(state["key"], dtype=jnp.uint32)
    hist_loss, hist_acc = state["history_loss"].copy(), state["history_accuracy"].copy()
    record = {k: np.array(v) for k, v in state["epoch_record"].items()}
    # The features at the start (recomputed on a resume: evaluation is deterministic), from
    # which the first epoch's displacements are measured.
    H, value, accuracy = _evaluate(model, mstate, inputs, labels, **eval_kw)
    H_prev, M_prev = H, _centred_class_means(H, labels, C)
    if start == 0 and 0 not in captures:
        hist_loss[0], hist_acc[0] = float(value), float(accuracy)
        capture(0, H, model, value, accuracy)
        if store is not None:
            store.save(_pack(model, mstate, opt_state, 0, raw_key, hist_loss, hist_acc, record))

    from .._run.progress import progress as progress_bar

    bar = progress_bar(epochs, enabled=progress, initial=start, desc="train", unit="epoch")
    try:
        for epoch in range(start + 1, epochs + 1):
            raw_key, sub = jax.random.split(raw_key)
            model, mstate, opt_state, batch_losses, grad_sq = _train_epoch(
                model, mstate, opt_state, sub, inputs, labels, **train_kw
            )
            H, value, accuracy = _evaluate(model, mstate, inputs, labels, **eval_kw)
            M = _centred_class_means(H, labels, C)
            mean_step, feature_step = _steps(H, H_prev, M, M_prev)
            H_prev, M_prev = H, M
            record["epoch_loss"][epoch - 1] = float(jnp.mean(batch_losses))
            record["feature_grad_sq"][epoch - 1] = float(jnp.mean(grad_sq))
            record["class_mean_step"][epoch - 1] = float(mean_step)
            record["feature_step"][epoch - 1] = float(feature_step)
            value, accuracy = float(value), float(accuracy)
            if not (math.isfinite(value) and bool(jnp.all(jnp.isfinite(batch_losses)))):
                raise NumericalError(
                    f"the training loss became non-finite at epoch {epoch}; lower the learning "
                    f"rate (now {lr:g}) or the weight decay"
                )
            first_zero_error = accuracy >= 1.0 and not np.any(hist_acc[:epoch] >= 1.0)
            hist_loss[epoch], hist_acc[epoch] = value, accuracy
            if epoch in plan or first_zero_error:
                capture(epoch, H, model, value, accuracy)
            if store is not None and (epoch % save_every == 0 or epoch == epochs):
                store.save(
                    _pack(model, mstate, opt_state, epoch, raw_key, hist_loss, hist_acc, record)
                )
            if on_epoch is not None:
                on_epoch(epoch, value, accuracy)
            bar.set_postfix(loss=f"{value:.4g}", acc=f"{accuracy:.4f}", refresh=False)
            bar.update(1)
    finally:
        bar.close()

    order = sorted(captures)
    stack = lambda name: np.stack([np.asarray(captures[e][name]) for e in order])  # noqa: E731
    return Training(
        model=model,
        epochs=np.asarray(order, dtype=np.int64),
        features=None if as_stats else stack("features"),
        W=stack("W"),
        b=stack("b"),
        loss=stack("loss").astype(np.float64),
        accuracy=stack("accuracy").astype(np.float64),
        labels=np.asarray(data.labels, dtype=np.int64),
        num_classes=C,
        weight_decay=float(weight_decay),
        loss_name=loss,
        history_loss=hist_loss,
        history_accuracy=hist_acc,
        resumed_from=start,
        test_loss=stack("test_loss").astype(np.float64) if tested else None,
        test_accuracy=stack("test_accuracy").astype(np.float64) if tested else None,
        learning_rate=rates,
        momentum=float(momentum),
        steps_per_epoch=steps_per_epoch,
        model_state=mstate,
        epoch_record=record,
        stats={k: stack(k) for k in _STATISTICS_KEYS if k in captures[order[0]]}
        if as_stats
        else None,
    )


def _raw_key(key):
    """uint32 key data (serialisable) of a legacy or typed PRNG key."""
    key = jnp.asarray(key)
    return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def _pack(model, mstate, opt_state, epoch, raw_key, hist_loss, hist_acc, record) -> dict:
    return {
        "model": model,
        "model_state": mstate,
        "opt_state": opt_state,
        "epoch": np.asarray(epoch, np.int64),
        "key": np.asarray(raw_key, np.uint32),
        "history_loss": hist_loss,
        "history_accuracy": hist_acc,
        "epoch_record": record,
    }


# --------------------------------------------------------------------------- from a configuration


# Tuned on digits (MLP, MSE; checked by the slow test_default_digits_run_collapses): 100% training accuracy by epoch ~15 and
# NC1 falling 14-19x after that over three seeds, in about a minute on two CPU cores. A larger
# weight decay (5e-4) stalls NC1 earlier; a smaller learning rate reaches zero error later.
#: The defaults as a plain dict ({**DEFAULTS, "epochs": 10}); derived from `TrainConfig`.
DEFAULTS: dict[str, Any] = TrainConfig.defaults()


def _is_int(x) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def load_configured_dataset(config: TrainConfig) -> Dataset:
    """The configuration's dataset, with the network it asks for checked against it
    (`check_resources`): a refusal comes before any model is built or directory made."""
    from .datasets import load_dataset

    data = load_dataset(
        config.dataset,
        per_class=config.per_class or None,
        standardised=config.standardise,
        seed=config.seed,
        test_fraction=config.test_fraction,
    )
    check_resources(config, data)
    return data


def _layers(config: TrainConfig, input_shape: tuple[int, ...], C: int):
    """(parameters, multiply-adds per sample, activations per sample, the width feeding the
    features layer) of the model `make_model` would build, computed from sizes alone."""
    if config.model == "resnet18":
        return _resnet_layers(int(config.resnet_width), input_shape, C)
    widths = [int(w) for w in config.widths]
    p = widths[-1]
    if config.model == "mlp":
        dims = [math.prod(input_shape), *widths]
        macs = sum(a * b for a, b in zip(dims, dims[1:], strict=False)) + p * C
        params = sum((a + 1) * b for a, b in zip(dims, dims[1:], strict=False)) + (p + 1) * C
        return params, macs, sum(widths) + C, dims[-2]
    if len(input_shape) == 3:
        in_ch, spatial = input_shape[0], list(input_shape[1:])
    else:
        in_ch, spatial = 1, list(input_shape)
    params = macs = acts = 0
    kernel = 3 ** len(spatial)
    for out_ch in (int(c) for c in config.channels):
        size = math.prod(spatial)
        params += kernel * in_ch * out_ch + out_ch
        macs += kernel * in_ch * out_ch * size
        acts += 2 * out_ch * size  # the convolution's output and its ReLU
        if min(spatial) >= 2:
            spatial = [s // 2 for s in spatial]
        in_ch = out_ch
    flat = in_ch * math.prod(spatial)
    params += (flat + 1) * p + (p + 1) * C
    macs += flat * p + p * C
    return params, macs, acts + p + C, flat


def _resnet_layers(width: int, input_shape: tuple[int, ...], C: int):
    """`_layers` of `ResNet18`: the stem, four stages of two BasicBlocks (two 3×3 convolutions,
    a 1×1 shortcut where the shape changes, batch norm after each), pooling and the classifier."""
    if len(input_shape) == 3:
        in_ch, spatial = input_shape[0], list(input_shape[1:])
    else:
        in_ch, spatial = 1, list(input_shape)
    kernel = 3 ** len(spatial)
    size = math.prod(spatial)
    params = kernel * in_ch * width + 2 * width
    macs = kernel * in_ch * width * size
    acts = 3 * width * size  # convolution, normalisation, ReLU
    cin = width
    for mult, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
        cout = width * mult
        for i in range(2):
            s = stride if i == 0 else 1
            spatial = [-(-d // s) for d in spatial]
            size = math.prod(spatial)
            params += kernel * (cin + cout) * cout + 4 * cout
            macs += kernel * (cin + cout) * cout * size
            acts += 6 * cout * size
            if s != 1 or cin != cout:
                params += cin * cout + 2 * cout
                macs += cin * cout * size
                acts += 2 * cout * size
            cin = cout
    p = 8 * width
    return params + (p + 1) * C, macs + p * C, acts + p + C, p


def feature_dimension(config: TrainConfig) -> int:
    """p, the width of the features the model of `config` captures."""
    if config.model == "resnet18":
        return 8 * int(config.resnet_width)
    return int(config.widths[-1])


def check_resources(config: TrainConfig, data: Dataset) -> None:
    """Refuse, before a model is built, a network that cannot collapse on this data (features
    narrower than C − 1) or whose training, captures and analysis would exceed the memory or
    work limits (`centralpath._run.resources`)."""
    from .._run.resources import check_memory, check_work
    from ..measurement._io import analysis_cost, check_p_over_n

    C, n, m = data.num_classes, data.num_samples, data.num_test_samples
    shape = tuple(int(s) for s in data.input_shape)
    if config.model == "cnn":
        require(
            1 <= len(shape) <= 3,
            f"the CNN takes samples of shape [L], [H, W] or [channels, H, W], got {list(shape)}; "
            "use --model mlp",
        )
    p = feature_dimension(config)
    resnet = config.model == "resnet18"
    if resnet:
        require(
            1 <= len(shape) <= 3,
            f"the ResNet18 takes samples of shape [L], [H, W] or [channels, H, W], got "
            f"{list(shape)}; use --model mlp",
        )
        require(
            not (len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4)),
            f"the samples of {data.name} have shape {list(shape)}, which looks like [H, W, "
            "channels]; the ResNet18 takes channels first — save the inputs transposed, "
            "numpy.transpose(inputs, (0, 3, 1, 2))",
        )
    require(
        p >= C - 1,
        f"the feature dimension {p} is below C-1 = {C - 1}; widen the last hidden layer "
        + ("(p = 8 × --resnet-width)" if resnet else "(the last of --widths)"),
    )
    params, macs, acts, feeding = _layers(config, shape, C)
    if config.model == "cnn":
        # The features are a dense layer of the last convolution's output: fewer numbers than
        # C - 1 there and the C class means cannot take C - 1 independent directions.
        require(
            feeding >= C - 1,
            f"the CNN's convolutions end in {feeding} values per sample (last of --channels "
            f"{config.channels[-1]} × the pooled image), below C-1 = {C - 1}; the features "
            "cannot hold C-1 class directions — raise the last of --channels",
        )
    K = len(capture_epochs(int(config.epochs), int(config.num_checkpoints))) + 1
    batch = min(int(config.batch_size), n)
    chunk = min(4096, n)
    analysis_bytes, analysis_flop = analysis_cost(K, n, p, C, itemsize=4, w_itemsize=4)
    captured = 4 * 2 * K * (n * p + C * p + C)  # the captures, and their stack
    if capture_statistics(K, n, p):  # statistics instead: streamed analysis, no features kept
        from ..measurement._stream import streamed_analysis_cost

        analysis_bytes, analysis_flop = streamed_analysis_cost(K, n, p, C)
        captured = 8 * 2 * K * (p * p + 2 * C * p + C) + 8 * 4 * n * p
    memory = (
        4 * 2 * (n + m) * math.prod(shape)  # inputs (training and test) on the host and device
        + 4 * 5 * params  # parameters, gradients, momentum, updates, a saved copy
        + 4 * 3 * batch * acts  # a minibatch's activations, kept for the backward pass
        + 4 * 2 * chunk * acts  # evaluation of the whole set, chunk by chunk
        + captured
        + analysis_bytes  # features file written, read back and analysed
    )
    epochs = int(config.epochs)
    # 6 per MAC to train, 2 to evaluate; the test set is evaluated at every capture.
    flop = 8 * epochs * n * macs + 2 * K * m * macs + K * analysis_flop
    model = {"mlp": "an MLP", "cnn": "a CNN", "resnet18": "a ResNet18"}[config.model]
    source = f"training {model} with p = {p} on {data.name} (n = {n}, input {list(shape)})"
    fix = (
        "use narrower --widths, fewer --channels or a smaller --resnet-width, fewer "
        "--num-checkpoints or --epochs, or "
        "fewer samples (--per-class)"
    )
    narrower = "a smaller --resnet-width" if resnet else "the last of --widths"
    check_p_over_n(n, p, analysis_flop, source, f"capture a narrower layer ({narrower})")
    check_memory(memory, source, fix)
    check_work(flop, source, fix)


def train_from_config(
    config: TrainConfig | Mapping[str, Any],
    *,
    data: Dataset | None = None,
    state_dir=None,
    progress: bool = False,
) -> Training:
    """`fit` with the data and network a `TrainConfig` names (`centralpath train`). A dict of
    its keys is typed once here (the defaults for keys not given; an unknown key refused),
    before any data is loaded."""
    from .models import make_model

    if not isinstance(config, TrainConfig):
        require(
            isinstance(config, Mapping),
            f"a training configuration is a TrainConfig or a dict of its keys, got "
            f"{type(config).__name__}",
        )
        config = TrainConfig.from_mapping(config, "training configuration")
    if data is None:
        data = load_configured_dataset(config)
    else:
        check_resources(config, data)
    model_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    model = make_model(
        config.model,
        data.input_shape,
        data.num_classes,
        widths=config.widths,
        channels=config.channels,
        resnet_width=config.resnet_width,
        key=model_key,
    )
    model, model_state = model if isinstance(model, tuple) else (model, None)
    return fit(
        model,
        data,
        config,
        model_state=model_state,
        key=train_key,
        state_dir=state_dir,
        progress=progress,
    )


def training_results(training: Training, records: list[dict]) -> dict[str, np.ndarray]:
    """Flat results of a run directory: `train/<quantity>` per capture (with `analyze`'s metrics,
    `perp_rel` = L_⊥LS/L, the network's own loss/accuracy, the test set's where there is one, and
    `ridge` = (λ/2)(‖W‖² + ‖b‖²)) and `history/<quantity>` per epoch."""
    out: dict[str, np.ndarray] = {"train/times": training.epochs.astype(np.float64)}
    for key in records[0]:
        if key == "epoch" or any(r[key] is None for r in records):
            continue
        out[f"train/{key}"] = np.asarray([r[key] for r in records], dtype=np.float64)
    loss, perp = out["train/loss"], out["train/loss_perp"]
    out["train/perp_rel"] = np.divide(perp, loss, out=np.zeros_like(perp), where=loss > 0)
    out["train/train_loss"] = training.loss
    out["train/train_accuracy"] = training.accuracy
    if training.test_accuracy is not None:
        out["train/test_loss"] = training.test_loss
        out["train/test_accuracy"] = training.test_accuracy
    # The ridge term of analyze's L: L = data loss + (λ/2)(‖W‖² + ‖b‖²) for the MSE loss.
    W, b = training.W.astype(np.float64), training.b.astype(np.float64)
    out["train/ridge"] = (
        0.5 * training.weight_decay * (np.sum(W**2, axis=(1, 2)) + np.sum(b**2, axis=1))
    )
    out["history/times"] = np.arange(training.history_loss.shape[0], dtype=np.float64)
    out["history/train_loss"] = training.history_loss
    out["history/train_accuracy"] = training.history_accuracy
    return out


__all__ = [
    "DEFAULTS",
    "LOSSES",
    "SCHEDULES",
    "Training",
    "capture_epochs",
    "check_resources",
    "cross_entropy_loss",
    "fit",
    "learning_rate_schedule",
    "make_optimizer",
    "mse_loss",
    "train_from_config",
    "training_results",
    "validate",
]
