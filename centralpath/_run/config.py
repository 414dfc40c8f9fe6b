"""Typed configurations: one source of defaults, validation, TOML keys, flags and help text.

A configuration is a frozen dataclass (in the style of Diffrax's `PIDController`): each field is
an option with its default and help, declared once with `option`. From that one declaration
come the TOML keys of `--config` files and of a run's own `config.toml` (the field names), the
command-line flags (`--per-class` for `per_class`), their help text (with the default), and the
coercion of TOML values (an integer where a float is expected). Validation is the class's
`validate` function, run on construction, so an invalid configuration cannot exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from .._errors import InputError, require, require_seed

C = TypeVar("C", bound="Config")


def option(
    default,
    help: str,
    *,
    choices: tuple | None = None,
    flag: bool = True,
    batch: str | None = None,
):
    """A configuration field: its default, a one-line help, the allowed values (if a choice),
    whether it is a command-line flag (a few keys only make sense in files), and `batch`: how
    configurations that differ in this key alone run as one batch (a sweep's batch axis; None:
    they cannot, the key shapes the program). `batch` names the batch axis' role, e.g.
    "key" (a PRNG seed), "parameter" (a real number traced as an array) or "step"."""
    kw = {"default_factory": lambda: default} if isinstance(default, list) else {"default": default}
    meta = {"help": help, "choices": choices, "flag": flag, "batch": batch}
    return dataclasses.field(metadata=meta, **kw)


def batched_fields(cls: type[Config], *roles: str) -> tuple[str, ...]:
    """The keys declared with a `batch` role (any role, or one of `roles`), in declaration
    order."""
    return tuple(
        f.name
        for f in dataclasses.fields(cls)
        if f.metadata.get("batch") is not None and (not roles or f.metadata["batch"] in roles)
    )


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in _comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 256,256, got {text!r}"
        ) from None


class Config:
    """Base of the typed configurations (subclasses are frozen dataclasses of `option`s)."""

    #: The command whose configuration this is (for messages).
    command: ClassVar[str] = ""
    #: validate(the configuration) raises a one-line `InputError`.
    validator: ClassVar[Callable[[Any], None] | None] = None

    def __post_init__(self):
        if self.validator is not None:
            type(self).validator(self)

    # ------------------------------------------------------------------ views

    def as_dict(self) -> dict[str, Any]:
        """{key: value} for every field (lists as lists): the TOML a run writes."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self: C, **changes) -> C:
        return dataclasses.replace(self, **changes)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default of every key, without validating (dataclass defaults)."""
        out = {}
        for f in dataclasses.fields(cls):
            out[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
        return out

    # ------------------------------------------------------------------ construction

    @classmethod
    def parse(
        cls, mapping: Mapping[str, Any], source: str, *, table: str = "", exclude: tuple = ()
    ) -> dict[str, Any]:
        """The keys of a TOML table or a dict, each as the type of its field's default (an
        integer is accepted for a float), `-` in keys read as `_`; an unknown key (or one of
        `exclude`) is refused (a typo is an error, never silently ignored), named with its
        `table` (e.g. " in [training]")."""
        defaults = {k: v for k, v in cls.defaults().items() if k not in exclude}
        values = {}
        for k, v in mapping.items():
            key = k.replace("-", "_")
            require(
                key in defaults,
                f"{source}: unknown key {k!r}{table}; known keys: {', '.join(sorted(defaults))}",
            )
            values[key] = coerce(key, v, defaults[key], source)
        return values

    @classmethod
    def from_mapping(cls: type[C], mapping: Mapping[str, Any], source: str = "configuration") -> C:
        """From a TOML table or a dict (`parse`), the defaults for the keys not given."""
        return cls(**cls.parse(mapping, source))

    @classmethod
    def resolve(cls: type[C], args: argparse.Namespace, config_path=None) -> C:
        """defaults ← the `--config` TOML file ← the flags given (those not None)."""
        from .rundir import load_config

        merged: dict[str, Any] = {}
        if config_path is not None:
            loaded = load_config(config_path)
            merged.update(
                cls.from_mapping(loaded, f"config file {config_path}").as_dict() if loaded else {}
            )
        for f in dataclasses.fields(cls):
            v = getattr(args, f.name, None)
            if v is not None:
                merged[f.name] = v
        return cls.from_mapping(merged, "the flags")

    # ------------------------------------------------------------------ command line

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, *, exclude: tuple = ()) -> None:
        """One flag per field (`--per-class` for `per_class`), default None so that a
        `--config` file's value stands unless the flag is given; help shows the default."""
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if not meta.get("flag", True) or f.name in exclude:
                continue
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            flag = "--" + f.name.replace("_", "-")
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            help_text = f"{meta['help']} (default {shown})"
            kw: dict[str, Any] = dict(dest=f.name, default=None, help=help_text)
            if isinstance(default, bool):
                parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
                continue
            if isinstance(default, list):
                kw["type"] = _int_list if default and isinstance(default[0], int) else _comma_list
            elif isinstance(default, int):
                kw["type"] = int
            elif isinstance(default, float):
                kw["type"] = float
            if meta.get("choices"):  # shown, but checked by the validator: one-line errors
                kw["help"] = f"{' | '.join(meta['choices'])}: {help_text}"
            parser.add_argument(flag, **kw)


def coerce(key: str, v, default, source: str):
    """A TOML value as the type of the key's default (an int is accepted for a float)."""
    if default is None or isinstance(v, type(default)):
        if isinstance(default, int | float) and isinstance(v, bool) != isinstance(default, bool):
            raise InputError(f"{source}: {key!r} must be {type(default).__name__}, got {v!r}")
        return v
    if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(default, list) and isinstance(v, list | tuple):
        return list(v)
    raise InputError(
        f"{source}: {key!r} must be {type(default).__name__}, got {type(v).__name__} {v!r}"
    )


# --------------------------------------------------------------------------- train
# Declared here, not in centralpath.networks: building the command line's parser must not
# import the training stack (optax, the datasets), which loads only when a network is trained.
# The names are plain data; centralpath.networks builds what each names (tests/test_networks.py
# checks that its registries match these tables).

DATASETS = ("digits", "mnist", "mnist1d")
MODELS = ("mlp", "cnn", "resnet18")
LOSSES = ("mse", "ce")
SCHEDULES = ("cosine", "step", "constant")


def _is_int(x) -> bool:
    import numpy as np

    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def validate_training(config: dict[str, Any]) -> None:
    """One-line `InputError` for a bad configuration, before any data is loaded."""
    c = config
    ds = c["dataset"]
    require(
        isinstance(ds, str) and (ds in DATASETS or (ds.startswith("npz:") and len(ds) > 4)),
        f"unknown dataset {ds!r}; choose one of {', '.join(DATASETS)} or npz:PATH",
    )
    require(
        c["model"] in MODELS, f"unknown model {c['model']!r}; choose one of {', '.join(MODELS)}"
    )
    require(c["loss"] in LOSSES, f"unknown loss {c['loss']!r}; choose mse or ce")
    require(
        c["schedule"] in SCHEDULES,
        f"unknown schedule {c['schedule']!r}; choose one of {', '.join(SCHEDULES)}",
    )
    for key in (
        "epochs",
        "batch_size",
        "seed",
        "per_class",
        "num_checkpoints",
        "save_every",
        "resnet_width",
    ):
        require(_is_int(c[key]), f"{key.replace('_', '-')} must be an integer, got {c[key]!r}")
    require_seed(c["seed"])
    require(c["epochs"] >= 1, f"epochs must be >= 1, got {c['epochs']}")
    require(c["epochs"] <= 1_000_000, f"epochs = {c['epochs']} is too many; use at most 1000000")
    require(c["batch_size"] >= 1, f"batch-size must be >= 1, got {c['batch_size']}")
    require(
        c["per_class"] == 0 or c["per_class"] >= 2,
        f"per-class must be >= 2 (Sigma_W needs two samples per class) or 0 for the largest "
        f"balanced subset, got {c['per_class']}",
    )
    require(c["num_checkpoints"] >= 2, f"num-checkpoints must be >= 2, got {c['num_checkpoints']}")
    require(c["save_every"] >= 1, f"save-every must be >= 1, got {c['save_every']}")
    require(c["resnet_width"] >= 1, f"resnet-width must be >= 1, got {c['resnet_width']}")
    for key in ("lr", "weight_decay", "momentum"):
        require(
            isinstance(c[key], int | float)
            and not isinstance(c[key], bool)
            and math.isfinite(c[key]),
            f"{key.replace('_', '-')} must be a finite number, got {c[key]!r}",
        )
    require(c["lr"] > 0, f"lr must be > 0, got {c['lr']}")
    tf = c["test_fraction"]
    require(
        isinstance(tf, int | float) and not isinstance(tf, bool) and 0 <= tf < 1,
        f"test-fraction must be a number in [0, 1) (0: no test set), got {tf!r}",
    )
    require(c["weight_decay"] >= 0, f"weight-decay must be >= 0, got {c['weight_decay']}")
    require(0 <= c["momentum"] < 1, f"momentum must lie in [0, 1), got {c['momentum']}")
    for key in ("widths", "channels"):
        v = c[key]
        require(
            isinstance(v, list | tuple) and len(v) >= 1 and all(_is_int(w) and w >= 1 for w in v),
            f"{key} must be a non-empty list of positive integers like 256,256, got {v!r}",
        )
    require(
        isinstance(c["standardise"], bool),
        f"standardise must be true or false, got {c['standardise']!r}",
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """Everything `train` needs: the data, the network, the optimiser and the captures. One
    declaration per key gives its default, flag, help and TOML key (centralpath._run.config)."""

    command: ClassVar[str] = "train"

    dataset: str = option(
        "digits", "digits | mnist | mnist1d | npz:PATH (inputs [n, ...], labels [n])"
    )
    model: str = option(
        "mlp",
        "mlp | cnn | resnet18 (the paper's: 3×3 stride-1 stem, no max-pool, batch norm; "
        "p = 8 × --resnet-width)",
    )
    widths: list = option([256, 256, 128], "MLP hidden widths; the last is p")
    channels: list = option([32, 64], "CNN conv channels; its p is the last width")
    resnet_width: int = option(64, "ResNet18's first-stage channels (the paper's 64; p = 8 × this)")
    loss: str = option("mse", "mse (½ Ave‖Wh+b−y‖², the paper's scale) | ce (cross-entropy)")
    epochs: int = option(400, "training epochs")
    lr: float = option(0.2, "initial learning rate")
    schedule: str = option(
        "cosine", "learning-rate schedule: cosine | step (÷10 at 1/3, 2/3) | constant"
    )
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(
        2e-4, "weight decay on all parameters; = λ in the paper's scale for --loss mse"
    )
    batch_size: int = option(128, "minibatch size")
    seed: int = option(0, "PRNG seed of the initialisation, minibatch order and subset")
    per_class: int = option(
        0, "samples per class (balanced subset); 0 = as many as the smallest class has"
    )
    test_fraction: float = option(
        0.2,
        "held-out fraction of every class for test accuracy (stratified, fixed seed); mnist1d "
        "and an npz with test_inputs/test_labels use their own test split; 0 = no test set",
    )
    standardise: bool = option(
        True, "inputs to mean 0, standard deviation 1 (--no-standardise: the raw scale)"
    )
    num_checkpoints: int = option(30, "about how many log-spaced epochs to capture")
    save_every: int = option(1, "save the training state every N epochs")

    validator: ClassVar = staticmethod(lambda c: validate_training(c.as_dict()))


# --------------------------------------------------------------------------- compare


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompareConfig(Config):
    """The keys of a `compare` run's config.toml, which is a valid `--config` for compare (the
    flags are the command's own, with their choices; its checks are the command's, after the
    features are known). None: not given (the file's weight decay; every model, unless `fit`)."""

    command: ClassVar[str] = "compare"

    features: str | None = option(None, "features or statistics file", flag=False)
    fit: bool = option(
        False, "fit the closed form's free time map instead of predicting", flag=False
    )
    flow: str = option("renormalised", "closed form to fit (with fit)", flag=False)
    weight_decay: float | None = option(None, "ridge λ of the decomposition", flag=False)
    rtol: float = option(1e-10, "pseudo-inverse cutoff", flag=False)
    model: str | None = option(
        None, "the model predicting ω_j and NC1 (None: all, unless fit)", flag=False
    )
    from_epoch: str | float | None = option(None, "start e0 of the prediction", flag=False)
    clock: str | None = option(None, "epochs -> model time", flag=False)
    kappa: float | None = option(None, "a κ clock's scale", flag=False)
    kappa_from: str | None = option(None, "compare JSON to read kappa from", flag=False)
