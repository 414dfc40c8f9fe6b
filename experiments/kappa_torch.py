"""Does κ carry from centralpath's own training to a PyTorch network? (docs/guides/predict.md)

`experiments/kappa_universality.py` fits every clock's κ on networks that centralpath trained
itself (JAX). This script trains the same MLP with PyTorch (CPU, offline) on the same images —
`load_dataset` with the run's `dataset`, `per_class` and seed, as the JAX trainer loads them —
with the same paper-scale η and λ, schedule, momentum, batch and checkpoint epochs, records it
with `centralpath.torch.FeatureRecorder` (`nn.MSELoss()` on one-hot targets: torch lr = C·η/2
and weight decay 2λ/C give the paper's η and λ), and scores it with the central-path model at its
automatic start (`kappa_universality.Scored`):

- κ fitted on the torch run for every κ clock (and the fitted monotone clock, for reference);
- κ carried from the JAX run of the *same network, data set and seed* (another framework and
  initialisation), from the *JAX CNN* of the same data set and seed, and from the *JAX MLP of the
  other data set*.

Prints one line per run (start, final training accuracy, torch vs JAX κ_lr) and the table, and
writes `kappa_torch.json` with every number into `<out>/kappa_torch/` (`--out DIR`, default
runs/). The torch features files are cached in its `features/`: a rerun reuses them.

    python experiments/kappa_torch.py [experiments/kappa_torch.toml] [--out DIR]
                                      [--kappa-json PATH/TO/kappa_universality/kappa.json]
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from _runner import ROOT, enable_x64, parse_args
from kappa_universality import Scored, meets_target

#: The fitted monotone clock is the reference (no κ); the others are the κ clocks.
FITTED = ("monotone", "lr", "lr-loss", "lr-grad", "lr-loss-epoch")
#: Where κ is carried from, for a torch MLP on data set D with seed s.
SOURCES = ("JAX same network", "JAX CNN", "JAX MLP other data set")
FIX_KAPPA = (
    "run python experiments/kappa_universality.py first (it writes "
    "runs/kappa_universality/kappa.json), or point --kappa-json (or the TOML's kappa_json) at "
    "the kappa.json it wrote"
)


def split_kappa_json(argv: list[str]) -> tuple[list[str], str | None]:
    """(argv without `--kappa-json PATH`, PATH or None): the one option `_runner` does not know."""
    rest, path = [], None
    args = iter(argv)
    for a in args:
        if a == "--kappa-json":
            path = next(args, "")
            if not path:
                raise SystemExit(
                    "kappa_torch.py: --kappa-json needs a file, e.g. --kappa-json "
                    "runs/kappa_universality/kappa.json"
                )
        elif a.startswith("--kappa-json="):
            path = a[len("--kappa-json=") :]
            if not path:
                raise SystemExit(
                    "kappa_torch.py: --kappa-json needs a file, e.g. "
                    "--kappa-json=runs/kappa_universality/kappa.json"
                )
        else:
            rest.append(a)
    return rest, path


def load_jax(path: Path) -> dict:
    """kappa_universality.py's kappa.json (plain JSON), or a one-line refusal naming the fix."""
    if not path.is_file():
        raise SystemExit(f"kappa_torch.py: no JAX results at {path}; {FIX_KAPPA}")
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(
            f"kappa_torch.py: {path} is not readable JSON ({type(e).__name__}); {FIX_KAPPA}"
        ) from None
    if not (isinstance(result, dict) and isinstance(result.get("runs"), dict)):
        raise SystemExit(
            f"kappa_torch.py: {path} is not kappa_universality.py's kappa.json (no 'runs'); "
            f"{FIX_KAPPA}"
        )
    return result


def jax_kappa(jax: dict, name: str, clock: str) -> tuple[float | None, str | None]:
    """(κ of `clock` fitted on the JAX run `name`, None) or (None, why there is none)."""
    entry = jax["runs"].get(name)
    if entry is None:
        return None, f"{name} is not in the JAX kappa.json"
    kappa = (entry.get("fitted") or {}).get(clock, {}).get("kappa")
    if kappa is None or not math.isfinite(kappa):
        why = entry.get("not_applicable") if not entry.get("fitted") else None
        return None, f"{name} has no fitted kappa for {clock}" + (f" ({why})" if why else "")
    return float(kappa), None


def source_names(jax: dict, dataset: str, seed: int) -> dict[str, str | None]:
    """The JAX run each source names (None where kappa.json has no such run)."""
    mlps = sorted(
        n.rsplit("-", 2)[0]
        for n in jax["runs"]
        if n.rsplit("-", 2)[1:] == ["mlp", f"s{seed}"] and n.rsplit("-", 2)[0] != dataset
    )
    return {
        "JAX same network": f"{dataset}-mlp-s{seed}",
        "JAX CNN": f"{dataset}-cnn-s{seed}",
        "JAX MLP other data set": f"{mlps[0]}-mlp-s{seed}" if mlps else None,
    }


def plan(config, data, jax_features: Path) -> tuple[list[int], bool]:
    """(capture epochs, whether they are the JAX run's). The JAX run's own epochs when its
    features file is there — checked against this run's η, λ, momentum and steps per epoch, so
    that a κ carried between the two means the same clock — else the trainer's log-spaced ones
    (the first zero-error epoch is then added during training, as the trainer does)."""
    import numpy as np

    from centralpath.networks.train import capture_epochs

    if not jax_features.is_file():
        return capture_epochs(config.epochs, config.num_checkpoints).tolist(), False
    with np.load(jax_features, allow_pickle=False) as f:
        jax = {
            k: f[k]
            for k in ("epochs", "learning_rate", "weight_decay", "momentum", "steps_per_epoch")
            if k in f.files
        }
    eta = step_sizes(config, data).reshape(config.epochs, -1)  # [epochs, steps per epoch]
    ours = {
        "learning_rate": eta.mean(1),
        "weight_decay": config.weight_decay,
        "momentum": config.momentum,
        "steps_per_epoch": eta.shape[1],
    }
    for key, value in ours.items():
        theirs = jax.get(key)
        if (
            theirs is None
            or np.shape(theirs) != np.shape(value)
            or not np.allclose(theirs, value, rtol=1e-6, atol=0)
        ):
            raise SystemExit(
                f"kappa_torch.py: the JAX run {jax_features.stem} was trained with another "
                f"{key} than this TOML's [training] asks for; make its [training] the same as "
                "kappa_universality.toml's"
            )
    return [int(e) for e in jax["epochs"]], True


def step_sizes(config, data):
    """[epochs · steps_per_epoch] the paper-scale η of every SGD step, from the trainer's own
    schedule (so the ÷10 steps fall on the same steps as in the JAX run)."""
    import jax.numpy as jnp
    import numpy as np

    from centralpath.networks.train import learning_rate_schedule

    spe = data.num_samples // min(config.batch_size, data.num_samples)
    total = config.epochs * spe
    schedule = learning_rate_schedule(config.lr, schedule=config.schedule, total_steps=total)
    return np.broadcast_to(np.asarray(schedule(jnp.arange(total)), np.float64), (total,)).copy()


def train_torch(config, path: Path, jax_features: Path) -> dict:
    """Train the MLP with PyTorch and write its features file; what the table needs of it."""
    import numpy as np

    try:
        import torch
        from torch import nn
    except ImportError:
        raise SystemExit(
            'kappa_torch.py trains with PyTorch: pip install "centralpath[torch]"'
        ) from None

    from centralpath.networks.train import load_configured_dataset
    from centralpath.torch import FeatureRecorder

    data = load_configured_dataset(config)  # the images the JAX trainer trains on
    epochs_at, from_jax = plan(config, data, jax_features)
    C, n = data.num_classes, data.num_samples
    batch = min(config.batch_size, n)
    spe = n // batch
    # nn.MSELoss() is (2/C)·the paper's L: torch lr = C·η/2 and weight decay 2λ/C take the
    # paper's steps η on L + (λ/2)‖θ‖² (docs/guides/pytorch.md, "The paper's scale").
    lrs = C * step_sizes(config, data) / 2
    wd = 2 * config.weight_decay / C
    X = torch.as_tensor(np.asarray(data.inputs, np.float32).reshape(n, -1))
    y = torch.as_tensor(np.asarray(data.labels, np.int64))
    widths = [X.shape[1], *(int(w) for w in config.widths)]

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            layers = []
            for a, b in zip(widths[:-1], widths[1:], strict=True):
                layers += [nn.Linear(a, b), nn.ReLU()]
            self.features = nn.Sequential(*layers)
            # PyTorch's default init of nn.Linear, U(±1/√fan_in) for W and b, is Equinox's.
            self.classifier = nn.Linear(widths[-1], C)

        def forward(self, x):
            return self.classifier(self.features(x))

    with torch.random.fork_rng(devices=[]):  # the seed's initialisation, globals untouched
        torch.manual_seed(config.seed)
        model = MLP()
    order = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.SGD(
        model.parameters(), lr=float(lrs[0]), momentum=config.momentum, weight_decay=wd
    )
    rec = FeatureRecorder(
        model.classifier,
        loss="mse",
        weight_decay=wd,
        capture_at=epochs_at,
        momentum=config.momentum,
    )
    train_set = [(X, y)]  # the training set in a fixed order: one batch of n

    @torch.no_grad()
    def accuracy():
        model.eval()
        try:
            return float((model(X).argmax(1) == y).float().mean())
        finally:
            model.train()

    reached = accuracy() >= 1.0
    rec.end_epoch(0, model, train_set)
    t = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        # A fresh permutation per epoch and the last partial minibatch dropped, as the trainer.
        perm = torch.randperm(n, generator=order)[: spe * batch].reshape(spe, batch)
        for s, idx in enumerate(perm):
            opt.param_groups[0]["lr"] = float(lrs[(epoch - 1) * spe + s])
            opt.zero_grad()
            nn.functional.mse_loss(
                model(X[idx]), nn.functional.one_hot(y[idx], C).to(X.dtype)
            ).backward()
            opt.step()
            rec.step(y[idx], opt)
        if not from_jax and not reached and accuracy() >= 1.0:
            reached = True  # the first zero-error epoch is captured, as the trainer does
            rec.capture_at.add(epoch)
        rec.end_epoch(epoch, model, train_set)
    rec.save(path)
    print(f"trained {path.stem} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return {"epochs_from": "the JAX run's features file" if from_jax else "log-spaced"}


def main(cfg: dict, out_root, kappa_json=None) -> Path:
    import numpy as np

    from centralpath._run.config import TrainConfig
    from centralpath.measurement import predictive as pr
    from centralpath.networks.train import DEFAULTS

    given = kappa_json if kappa_json is not None else cfg.get("kappa_json")
    if not given:
        raise SystemExit(f"kappa_torch.py: no kappa_json in the TOML; {FIX_KAPPA}")
    # A relative TOML path is the repository's (runs/ is where kappa_universality.py writes).
    kappa_path = Path(given) if kappa_json is not None else ROOT / Path(given)
    jax = load_jax(kappa_path)
    out = Path(out_root) / cfg.get("name", "kappa_torch")
    folder = out / "features"
    folder.mkdir(parents=True, exist_ok=True)
    common = cfg.get("training", {})
    runs, meta = {}, {}
    for spec in cfg["runs"]:
        if spec.get("model", "mlp") != "mlp":
            raise SystemExit(
                f"kappa_torch.py: a run asks for model {spec['model']!r}; this script trains the "
                "MLP of the JAX runs only: drop model from its [[runs]]"
            )
        config = TrainConfig.from_mapping(
            {**DEFAULTS, "num_checkpoints": 40, **common, **spec, "model": "mlp"},
            "kappa_torch.toml's [training] and [[runs]]",
        )
        partner = f"{config.dataset}-mlp-s{config.seed}"
        path = folder / f"torch-{partner}.npz"
        jax_features = kappa_path.parent / "features" / f"{partner}.npz"
        info = {"epochs_from": "cached features file"}
        if not path.exists():
            info = train_torch(config, path, jax_features)
        t = time.perf_counter()
        r = Scored(path)
        r.config, r.partner = config, partner
        runs[r.name] = r
        meta[r.name] = info
        print(f"traced {r.name} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)

    result: dict = {
        "kappa_json": str(kappa_path),
        "runs": {},
        "thresholds": dict(pr.THRESHOLDS),
    }
    for r in runs.values():
        with np.load(folder / f"{r.name}.npz", allow_pickle=False) as f:
            accuracy = float(f["train_accuracy"][-1])
            epochs = [int(e) for e in f["epochs"]]
        sources = source_names(jax, r.config.dataset, r.config.seed)
        entry = {
            "jax_partner": r.partner,
            "capture_epochs": epochs,
            "capture_epochs_from": meta[r.name]["epochs_from"],
            "train_accuracy": accuracy,
            "start": r.rule,
            "not_applicable": r.reason,
            # Why the run has no score at all (no start, or the model cannot start there).
            "not_scored": None if r.k0 is not None else (r.reason or r.rule),
            "fitted": {},
            "carried": {},
            "not_carried": {},
        }
        result["runs"][r.name] = entry
        if r.k0 is None:
            continue
        for clock in FITTED:
            try:
                entry["fitted"][clock] = r.score(r.times(clock))
                entry["fitted"][clock]["kappa"] = r.kappa.get(clock)
            except ValueError as e:  # a clock the record cannot drive: say so
                entry["fitted"][clock] = {"error": str(e)}
        for clock in pr.KAPPA_CLOCKS:
            for how in SOURCES:
                key, src = f"{clock} from {how}", sources[how]
                if src is None:
                    entry["not_carried"][key] = (
                        f"the JAX kappa.json has no MLP of seed {r.config.seed} on another data set"
                    )
                    continue
                kappa, why = jax_kappa(jax, src, clock)
                if why is None and clock not in r.kappa:
                    why = f"the torch run has no fitted {clock} clock to carry into"
                if why is not None:
                    entry["not_carried"][key] = why
                    continue
                try:
                    s = r.score(r.times(clock, kappa))
                except ValueError as e:  # the carried κ runs the model off its path
                    entry["not_carried"][key] = str(e)
                    continue
                entry["carried"][key] = {"source": src, "kappa": kappa, **s}

    # --------------------------------------------------------------- the table
    def pct(x):
        return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"

    def num(x, fmt):
        return "-" if x is None or not math.isfinite(x) else format(x, fmt)

    print("\nPyTorch MLP runs: start | training accuracy at the end | kappa_lr torch vs JAX")
    for name, e in result["runs"].items():
        r = runs[name]
        k_torch = r.kappa.get("lr")
        k_jax, _ = jax_kappa(jax, r.partner, "lr")
        other = f"{r.config.dataset}-mlp-s{1 - r.config.seed}" if r.config.seed in (0, 1) else None
        k_seed = jax_kappa(jax, other, "lr")[0] if other else None
        ratio = k_torch / k_jax if k_torch and k_jax else None
        e["kappa_lr"] = {
            "torch": k_torch,
            "jax": k_jax,
            "torch_over_jax": ratio,
            "jax_other_seed": k_seed,
            "jax_seed_ratio": k_jax / k_seed if k_jax and k_seed else None,
        }
        print(
            f"  {name}: {e['start']} | acc {e['train_accuracy']:.3f} | kappa_lr torch "
            f"{num(k_torch, '.3g')} vs JAX {r.partner} {num(k_jax, '.3g')} "
            f"(x{num(ratio, '.2f')}; JAX seeds {r.partner} / {other}: "
            f"x{num(e['kappa_lr']['jax_seed_ratio'], '.2f')})"
            + (
                ""
                if not e["not_scored"]
                else " | not scored (no start)"
                if e["not_scored"] == e["start"]
                else f" | not scored: {e['not_scored']}"
            )
            + (f" | {e['not_applicable']}" if e["not_applicable"] and not e["not_scored"] else "")
        )
    print(
        f"\nmedian error of omega | skill | NC1 factor (meets target: error <= "
        f"{100 * pr.CONSISTENT_ERROR:g}% and skill >= {pr.CONSISTENT_SKILL:g})"
    )
    head = f"  {'run':<22} {'kappa':<38} {'clock':<14} {'value':>9} {'error':>7} "
    print(head + f"{'skill':>6} {'NC1x':>6}")
    for name, e in result["runs"].items():
        rows = [("fitted on the torch run", c, f) for c, f in e["fitted"].items()]
        rows += [
            (f"{key.split(' from ')[1]} ({s['source']})", key.split(" from ")[0], s)
            for key, s in e["carried"].items()
        ]
        for how, clock, s in rows:
            if "error" in s:
                print(f"  {name:<22} {how:<38} {clock:<14} {'-':>9} (no score: {s['error']})")
                continue
            ok = meets_target(s)
            print(
                f"  {name:<22} {how:<38} {clock:<14} {num(s.get('kappa'), '.3g'):>9} "
                f"{pct(s['median_relative_error']):>7} {num(s['skill'], '.2f'):>6} "
                f"{num(s['nc1_factor'], '.2f'):>6}" + ("  meets target" if ok else "")
            )
        for key, why in e["not_carried"].items():
            print(f"  {name:<22} {key}: not carried ({why})")
    with open(out / "kappa_torch.json", "w") as fh:
        json.dump(_finite(result), fh, indent=1, allow_nan=False)
    return out


def _finite(x):
    """NaN and ±inf as null, NumPy scalars as Python's: strict JSON, which every reader loads."""
    import numpy as np

    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


if __name__ == "__main__":
    enable_x64()
    argv, kappa_json = split_kappa_json(sys.argv)
    cfg, out = parse_args(__file__, argv, "[--kappa-json KAPPA.json]")
    print(main(cfg, out, None if kappa_json is None else Path(kappa_json)))
