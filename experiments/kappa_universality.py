"""Does any clock carry its scale κ across networks, seeds and data sets? (docs/guides/predict.md)

Trains MSE networks offline on CPU (every [[runs]] of the TOML: data set × model × seed, SGD with
momentum and weight decay, the same schedule), starts the central-path model at each run's
stable start (`--from-epoch auto`), and for every clock:

- fits κ on the run (κ clocks) or uses none (`speed`, `displacement`, `monotone` is the fitted
  reference), and scores the prediction (median relative error of ω_j, skill against no change,
  NC1 factor);
- predicts every run with κ carried from the run of the *other network* on the same data set and
  seed, from the *same network on the other data set*, and from the *other seed*, and scores it.

Prints one table per quantity and writes `kappa.json` with every number, and `kappa.md` with the
tables of docs/guides/predict.md, into `<out>/kappa_universality/` (`--out DIR`, default runs/).
The model path from e0 is traced once per run; each clock then costs one solve at its checkpoint
times.

    python experiments/kappa_universality.py [experiments/kappa_universality.toml] [--out DIR]
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from _runner import enable_x64, parse_args

CLOCKS = ("monotone", "lr", "lr-loss", "lr-grad", "lr-loss-epoch", "speed", "displacement")


def train(spec: dict, common: dict, folder: Path) -> Path:
    """One run's features file (cached in `folder`: a rerun reuses what was trained)."""
    from centralpath.networks.train import DEFAULTS, train_from_config

    name = f"{spec['dataset']}-{spec['model']}-s{spec['seed']}"
    path = folder / f"{name}.npz"
    if not path.exists():
        t = time.perf_counter()
        training = train_from_config({**DEFAULTS, **common, **spec, "num_checkpoints": 40})
        training.save_features(path)
        print(f"trained {name} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return path


class Scored:
    """A run's central-path model from its start, its traced path, and its measurement."""

    def __init__(self, path: Path):
        import numpy as np

        from centralpath.measurement import predictive as pr
        from centralpath.measurement._initial_state import measured_state
        from centralpath.measurement._io import load_features
        from centralpath.measurement.analysis import analyze

        self.name = path.stem
        ff = load_features(path)
        self.m = m = pr.Measurement.from_records(ff, analyze(ff))
        self.k0, self.rule = pr.choose_from_epoch(m)
        self.reason = pr.applicability(m, self.k0, self.rule)
        self.kappa: dict[str, float] = {}
        if self.k0 is None:
            return
        states: dict = {}

        def state_at(k):
            if k not in states:
                states[k] = measured_state(ff, index=k)
            return states[k]

        self.state_at = state_at
        self.after = np.arange(self.k0 + 1, len(m.epochs))
        with np.errstate(divide="ignore"):
            self.target = np.log(m.omega[self.after])
        level = np.mean(self.target, axis=1)
        try:
            self.model = pr.build_model("central-path", state_at(self.k0), m)
            self.path = pr._trace_path(self.model, float(np.max(level[np.isfinite(level)])))
        except ValueError as e:  # the model cannot start here: the run is not scored
            self.k0, self.reason = None, str(e)

    def units(self, clock: str):
        from centralpath.measurement import predictive as pr

        if clock in pr.KAPPA_CLOCKS:
            return pr.clock_units(self.m, self.k0, clock)[self.after]
        if clock == "speed":
            return pr.measured_distance(self.m, self.k0)[self.after]
        return pr.measured_displacement(self.state_at, self.k0, len(self.m.epochs))[self.after]

    def times(self, clock: str, kappa: float | None = None):
        """The model times of the scored checkpoints under `clock` (κ fitted when None)."""
        from centralpath.measurement import predictive as pr

        if clock == "monotone":
            return pr.fit_monotone_clock(self.path, self.model, self.target)[0]
        if clock in ("speed", "displacement"):
            return pr.speed_matched_times(
                self.path, self.model, self.units(clock), net=clock == "displacement"
            )[0]
        S = self.units(clock)
        if kappa is None:
            kappa = self.kappa[clock] = pr.fit_kappa(self.path, self.model, self.target, S)
        return kappa * S

    def score(self, t) -> dict:
        import numpy as np

        from centralpath.measurement import predictive as pr

        m, k0, after = self.m, self.k0, self.after
        values = self.model.evaluate(np.asarray(t, float), full=True)
        out = pr.scores(values["omega"], m.omega[after], m.omega[k0])
        out["nc1_factor"] = pr.nc1_factor(values["nc1"], m.nc1[after])
        return out


def meets_target(score: dict) -> bool:
    """The issue's target for a prediction: median error of ω and skill within compare's
    `consistent` thresholds (`CONSISTENT_ERROR`, `CONSISTENT_SKILL`)."""
    from centralpath.measurement import predictive as pr

    err, skill = score["median_relative_error"], score["skill"]
    return bool(err <= pr.CONSISTENT_ERROR and skill >= pr.CONSISTENT_SKILL)


#: Per-checkpoint members of a features file (sliced to a window of checkpoints); the
#: per-epoch record (learning_rate, epoch_loss, ...) stays whole: the clocks index it by epoch.
PER_CHECKPOINT = ("features", "W", "b", "epochs", "train_accuracy", "test_accuracy", "test_loss")


def phase_kappas(path: Path, start_epoch: float | None) -> list[dict]:
    """κ of the lr clock fitted within each constant-learning-rate phase of the run: the
    central path started at the phase's first checkpoint (the run's automatic start, for the
    phase that holds it) and scored up to its last checkpoint before the next change. If the lr
    clock were the network's clock, κ would be one number across the phases."""
    import numpy as np

    from centralpath.measurement._io import validate_features_arrays
    from centralpath.measurement.predictive import compare_models

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    epochs, lr = arrays["epochs"].astype(float), arrays["learning_rate"].astype(float)
    # Epoch e (1-based) trains with lr[e - 1]; a phase ends at the epoch after which lr changes.
    ends = [int(e) for e in np.flatnonzero(np.diff(lr) != 0) + 1] + [int(epochs[-1])]
    out, begin = [], 0.0
    for end in ends:
        first = begin if start_epoch is None else max(begin, start_epoch)
        keep = np.flatnonzero((epochs >= first) & (epochs <= end))
        entry = {"epochs": [begin, end], "lr": float(lr[int(begin)]), "start": None, "kappa": None}
        if start_epoch is not None and start_epoch <= end and len(keep) >= 3:
            window = {k: (v[keep] if k in PER_CHECKPOINT else v) for k, v in arrays.items()}
            ff = validate_features_arrays(window, path.name)
            _, _, (p,) = compare_models(
                ff, ["central-path"], from_epoch=float(epochs[keep[0]]), clock="lr"
            )
            entry.update(
                start=float(epochs[keep[0]]),
                last=float(epochs[keep[-1]]),
                kappa=p.kappa,
                median_relative_error=p.numbers["median_relative_error"],
                skill=p.numbers["skill"],
                growth=p.numbers.get("growth"),
                checkpoints=int(len(keep) - 1),
            )
        out.append(entry)
        begin = float(end)
    return out


def main(cfg: dict, out_root) -> Path:
    from centralpath.measurement import predictive as pr

    out = Path(out_root) / cfg.get("name", "kappa_universality")
    folder = out / "features"
    folder.mkdir(parents=True, exist_ok=True)
    specs = cfg["runs"]
    paths = [train(spec, cfg.get("training", {}), folder) for spec in specs]
    runs = {}
    for spec, path in zip(specs, paths, strict=True):
        t = time.perf_counter()
        r = Scored(path)
        r.spec, r.path_on_disk = spec, path
        runs[r.name] = r
        print(f"traced {r.name} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    result: dict = {"runs": {}, "carried": {}, "thresholds": dict(pr.THRESHOLDS)}
    for r in runs.values():
        entry = {"start": r.rule, "not_applicable": r.reason, "fitted": {}}
        if r.k0 is not None:
            for clock in CLOCKS:
                try:
                    entry["fitted"][clock] = r.score(r.times(clock))
                    entry["fitted"][clock]["kappa"] = r.kappa.get(clock)
                except ValueError as e:  # a clock the record cannot drive: say so
                    entry["fitted"][clock] = {"error": str(e)}
        result["runs"][r.name] = entry

    def partner(r, **change):
        spec = {**r.spec, **change}
        return runs.get(f"{spec['dataset']}-{spec['model']}-s{spec['seed']}")

    datasets = sorted({s["dataset"] for s in specs})
    models = sorted({s["model"] for s in specs})
    seeds = sorted({s["seed"] for s in specs})

    def other(values, v):
        rest = [x for x in values if x != v]
        return rest[0] if rest else None

    for r in runs.values():
        if r.k0 is None:
            continue
        sources = {
            "other network": partner(r, model=other(models, r.spec["model"])),
            "other data set": partner(r, dataset=other(datasets, r.spec["dataset"])),
            "other seed": partner(r, seed=other(seeds, r.spec["seed"])),
        }
        carried = {}
        for clock in pr.KAPPA_CLOCKS:
            for how, src in sources.items():
                kappa = None if src is None else src.kappa.get(clock)
                if kappa is None or clock not in r.kappa:
                    continue
                s = r.score(r.times(clock, kappa))
                carried[f"{clock} from {how}"] = {"source": src.name, "kappa": kappa, **s}
        result["carried"][r.name] = carried
    result["phases"] = {
        r.name: phase_kappas(r.path_on_disk, None if r.k0 is None else float(r.m.epochs[r.k0]))
        for r in runs.values()
    }

    # --------------------------------------------------------------- the tables
    def pct(x):
        return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"

    print("\nstart (--from-epoch auto) and verdict-relevant facts per run:")
    for name, e in result["runs"].items():
        print(
            f"  {name}: {e['start']}" + (f" | {e['not_applicable']}" if e["not_applicable"] else "")
        )
    print("\nfitted on the run itself: kappa | median error of omega | skill | NC1 factor")
    for name, e in result["runs"].items():
        cells = []
        for clock in CLOCKS:
            f = e["fitted"].get(clock)
            if not f or "error" in f:
                cells.append(f"{clock}: -")
                continue
            k = "" if f.get("kappa") is None else f"k={f['kappa']:.3g} "
            cells.append(
                f"{clock}: {k}{pct(f['median_relative_error'])} s={f['skill']:.2f} "
                f"nc1x{f['nc1_factor']:.2f}"
            )
        print(f"  {name}: " + "; ".join(cells))
    print("\nkappa spread over the runs (max/min of the fitted kappa):")
    for clock in pr.KAPPA_CLOCKS:
        ks = [r.kappa[clock] for r in runs.values() if clock in r.kappa]
        if ks:
            print(
                f"  {clock}: {len(ks)} runs, {min(ks):.3g}..{max(ks):.3g} (x{max(ks) / min(ks):.2f})"
            )
            result.setdefault("spread", {})[clock] = [min(ks), max(ks)]
    print(
        f"\ncarried kappa: median error of omega | skill (target: <= "
        f"{100 * pr.CONSISTENT_ERROR:g}% and >= {pr.CONSISTENT_SKILL:g})"
    )
    for name, carried in result["carried"].items():
        for key, s in carried.items():
            ok = meets_target(s)
            print(
                f"  {name} <- {key} ({s['source']}, k={s['kappa']:.3g}): "
                f"{pct(s['median_relative_error'])}, skill {s['skill']:.2f}"
                + ("  [meets target]" if ok else "")
            )
    print(
        "\nkappa of the lr clock fitted within each constant-lr phase (from the automatic start):"
    )
    for name, phases in result["phases"].items():
        cells = [
            f"epochs {ph['start']:g}-{ph['last']:g} (lr {ph['lr']:g}): k={ph['kappa']:.3g} "
            f"{pct(ph['median_relative_error'])} over {ph['checkpoints']}, omega x{ph['growth']:.2f}"
            if ph.get("kappa") is not None
            else f"epochs {ph['epochs'][0]:g}-{ph['epochs'][1]:g} (lr {ph['lr']:g}): -"
            for ph in phases
        ]
        print(f"  {name}: " + "; ".join(cells))
    with open(out / "kappa.json", "w") as fh:
        json.dump(result, fh, indent=1, default=lambda x: None if x != x else float(x))
    (out / "kappa.md").write_text(markdown(result))
    return out


def markdown(result: dict) -> str:
    """The tables of docs/guides/predict.md ("Does κ carry?"), as this run measured them: fitted
    on each run, carried to it from its partners, and κ_lr within each constant-lr phase."""

    def cell(s):
        if not s or "error" in s:
            return "– / –"
        err, skill = s["median_relative_error"], s["skill"]
        if err is None or not math.isfinite(err):
            return "– / –"
        text = f"{100 * err:.1f}% / {skill:.2f}"
        return f"**{text}**" if meets_target(s) else text

    def kappa(s):
        return "–" if not s or s.get("kappa") is None else f"{s['kappa']:.3g}"

    lines = [
        "| run | start e0 | κ lr | κ lr-loss | κ lr-grad | fitted: monotone | fitted: lr | "
        "fitted: lr-loss | speed (= displacement) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in result["runs"].items():
        start = e["start"].split(",")[0].removeprefix("auto: ")
        why = e["not_applicable"] or ""
        label = name + (" (not-applicable: ω grows < ×1.1)" if "does not grow" in why else "")
        label += " (not-applicable)" if why and "does not grow" not in why else ""
        f = e["fitted"]
        lines.append(
            f"| {label} | {start} | {kappa(f.get('lr'))} | {kappa(f.get('lr-loss'))} | "
            f"{kappa(f.get('lr-grad'))} | {cell(f.get('monotone'))} | {cell(f.get('lr'))} | "
            f"{cell(f.get('lr-loss'))} | {cell(f.get('speed'))} |"
        )
    columns = [
        ("lr", "other network"),
        ("lr-loss", "other network"),
        ("lr-grad", "other network"),
        ("lr", "other seed"),
        ("lr-loss", "other seed"),
        ("lr", "other data set"),
        ("lr-loss", "other data set"),
    ]
    lines += [
        "",
        "| run | " + " | ".join(f"{c} ← {h}" for c, h in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, carried in result["carried"].items():
        cells = [cell(carried.get(f"{c} from {h}")) for c, h in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    phases = result.get("phases", {})
    if phases:
        count = max(len(v) for v in phases.values())
        first = next(v for v in phases.values() if len(v) == count)
        heads = [
            f"lr {ph['lr']:g} (epochs {ph['epochs'][0]:g}–{ph['epochs'][1]:g})" for ph in first
        ]
        lines += ["", "| run | " + " | ".join(heads) + " |", "|---" * (count + 1) + "|"]
        for name, v in phases.items():
            cells = [
                f"{ph['kappa']:.3g} ({100 * ph['median_relative_error']:.1f}%, ω ×"
                f"{ph['growth']:.2f}, {ph['start']:g}–{ph['last']:g})"
                if ph.get("kappa") is not None
                else "–"
                for ph in v
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for clock, (lo, hi) in result.get("spread", {}).items():
        lines.append(
            f"- κ spread of `{clock}` over the {len(result['runs'])} runs: {lo:.3g}..{hi:.3g} "
            f"(×{hi / lo:.1f})"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    enable_x64()
    print(main(*parse_args(__file__, sys.argv)))
