"""`centralpath simulate --from FEATURES.npz [--epoch E]`: a flow started from a network's own
state at one checkpoint (`centralpath.measurement._initial_state`), instead of a random one.

With `--clock CLOCK --kappa K` (or `--kappa-from COMPARE.json`) the flow is saved at the model
times t_k = κ·S(e_k) of the network's checkpoints from the start on: the κ clock of `compare`
(`centralpath.measurement.predictive`), so the saved series line up with the network's epochs."""

from __future__ import annotations

from dataclasses import dataclass

from ._common import KAPPA_CLOCKS_HELP, add_kappa_options, check_kappa_scale


def _epoch(text: str):
    """--epoch: a checkpoint's epoch, or auto (compare's automatic start)."""
    import argparse

    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an epoch number or auto, got {text!r}"
        ) from None


def add_from_options(p) -> None:
    p.add_argument(
        "--from",
        dest="from_features",
        metavar="FEATURES.npz",
        help="start the flow from the class statistics (and W, b for ufm) of a features file's "
        "checkpoint, dead directions dropped; central-path and ufm use the file's weight decay "
        "unless --lam is given; ODE only",
    )
    p.add_argument(
        "--epoch",
        type=_epoch,
        metavar="{auto,E}",
        help="with --from: the checkpoint's epoch, or auto (compare's automatic start: the first "
        "checkpoint where the trend of L_perp/L is <= 0.2, docs/guides/predict.md); default: the "
        "last checkpoint, and with --clock auto (a clock needs checkpoints after the start, so "
        "E must be before the last)",
    )
    p.add_argument(
        "--clock",
        metavar="{lr,lr-loss,lr-grad,lr-loss-epoch}",
        help="with --from: save the flow at the network's checkpoints from --epoch on, at the "
        f"model times of compare's kappa clock from there, {KAPPA_CLOCKS_HELP}. It sets the "
        "save times (no --t-end, --num-saves); ode/epochs holds the checkpoints' epochs. "
        "--kappa-from reads the kappa of compare's model of --flow (renormalised: closed-form; "
        "whitened has none). Needs the training record (docs/guides/predict.md)",
    )
    add_kappa_options(
        p, kappa_default="with --from --clock: give it, or --kappa-from a compare JSON"
    )


def refuse_without_from(args) -> None:
    """The options of a start from a checkpoint, given without --from: one line, not ignored."""
    from .._errors import require

    given = [
        flag
        for flag, key in (
            ("--epoch", "epoch"),
            ("--clock", "clock"),
            ("--kappa", "kappa"),
            ("--kappa-from", "kappa_from"),
        )
        if getattr(args, key, None) is not None
    ]
    require(
        not given,
        f"{' and '.join(given)} go with --from FEATURES.npz (a flow started at a network's "
        f"checkpoint); add --from, or drop {'them' if len(given) > 1 else 'it'}",
    )


def run_from(args) -> int:
    """The whole `simulate --from` command: resolve, start from the checkpoint, solve, write."""

    from .._errors import require
    from .._float64 import set_precision
    from .._run.rundir import RunDir, default_run_path
    from ..measurement._initial_state import measured_state, simulate_measured
    from ..simulate import SimulationConfig
    from ._common import draw_figures, log

    require(args.resume is None, "--resume continues a saved run; drop --from (or --resume)")
    config = SimulationConfig.resolve(args, config_path=args.config)
    require(
        config.precision == "float64",
        "simulate --from runs in float64 (measured states are analysed in float64); drop "
        "--precision float32",
    )
    set_precision("float64")
    given = [f"--{k.replace('_', '-')}" for k in ("lam_w", "lam_h", "lam_b", "eta", "seed")]
    given = [flag for flag in given if getattr(args, flag[2:].replace("-", "_"), None) is not None]
    require(
        not given,
        f"simulate --from takes the ufm's decays from the file's weight decay (or --lam) and "
        f"its state from the file; drop {', '.join(given)}",
    )
    require(
        args.methods is None or list(args.methods) == ["ode"],
        "simulate --from solves the ODE (Diffrax) only; drop --methods or pass --methods ode",
    )
    require(
        config.representation == "reduced",
        "simulate --from starts from the class statistics (--representation reduced)",
    )
    clock = _check_clock_options(args, config.flow)
    if clock is not None:  # κ first: a JSON that has none is refused before any work
        kappa, kappa_source = _kappa(args, clock, config.flow)
    start = None
    if clock is not None or args.epoch == "auto":
        start = _start(args.from_features, "auto" if args.epoch is None else args.epoch)
        measured = measured_state(start.source, index=start.k0)
    else:
        measured = measured_state(args.from_features, args.epoch)
    if clock is None:
        times = dict(t_end=config.t_end, num_saves=config.num_saves)
    else:
        times = dict(ts=clock_times(start, clock, kappa, kappa_source))
    results = simulate_measured(
        measured,
        config.flow,
        **times,
        lam=args.lam,
        rtol=config.rtol,
        atol=config.atol,
        max_steps=config.max_steps,
    )
    saved = {
        "from": str(args.from_features),
        "epoch": measured.epoch,
        "flow": config.flow,
        "lam": measured.weight_decay if args.lam is None else args.lam,
        "rtol": config.rtol,
        "atol": config.atol,
        "max_steps": config.max_steps,
    }
    if start is not None:
        saved["epoch_rule"] = start.rule
    if clock is None:
        saved.update(t_end=config.t_end, num_saves=config.num_saves)
    else:
        # The epochs of the saves, beside their model times: what the network's checkpoints
        # are compared with.
        epochs = start.measurement.epochs[start.k0 :]
        for series in ("ode", "closed_form"):
            if f"{series}/times" in results:
                results[f"{series}/epochs"] = epochs
        saved.update(clock=clock, kappa=kappa, kappa_source=kappa_source)
        if args.kappa_from is not None:
            saved["kappa_from"] = str(args.kappa_from)
    run_dir = RunDir(
        args.out or default_run_path("simulate"),
        "simulate",
        saved,
        overwrite=args.overwrite,
        inputs=[args.config, args.from_features, args.kappa_from],
        figures=not args.no_figures,
    )
    with run_dir.running():
        run_dir.save_results(results)
        draw_figures("simulate", run_dir.partial, results, args)
        path = run_dir.finish()
    emit = log(args)
    emit(
        f"from epoch {measured.epoch:g} of {args.from_features} ({measured.dropped} dead "
        f"direction(s) dropped, p = {measured.stats.dim})"
        + ("" if start is None else f"; start {start.rule}")
    )
    if clock is not None:
        epochs, ts = results["ode/epochs"], results["ode/times"]
        emit(
            f"clock {clock}: t = kappa * S(e), kappa = {kappa:.6g} ({kappa_source}); "
            f"{len(epochs)} checkpoints, epochs {epochs[0]:g}..{epochs[-1]:g} -> t = "
            f"{ts[0]:g}..{ts[-1]:.4g}"
        )
    for series in ("ode", "closed_form"):
        if f"{series}/nc1" in results:
            omega = results[f"{series}/snr"][-1]
            at = "" if clock is None else f"epoch = {results[f'{series}/epochs'][-1]:g}  "
            emit(
                f"{series:>12}: {at}t = {results[f'{series}/times'][-1]:.4g}  "
                f"NC1 = {results[f'{series}/nc1'][-1]:.4g}  "
                f"omega = {', '.join(f'{w:.4g}' for w in omega)}"
            )
    print(path)
    return 0


def _check_clock_options(args, flow: str) -> str | None:
    """The clock of `--clock` (None without one), after one-line refusals of what does not go
    with it — before any work, so that a refusal writes nothing."""
    from .._errors import require
    from ..measurement.predictive import CLOCKS, FLOW_MODELS, KAPPA_CLOCKS

    clock = args.clock
    if clock is None:
        check_kappa_scale(args.kappa, args.kappa_from, clock)
        return None
    require(
        clock in CLOCKS,
        f"unknown clock {clock!r}; choose one of {', '.join(KAPPA_CLOCKS)}",
    )
    require(
        clock in KAPPA_CLOCKS,
        f"--clock {clock} is fitted to the network's whole record with the model solved beside "
        f"it, which simulate does not do: run compare --clock {clock} on the file, or use a "
        f"kappa clock here ({', '.join(KAPPA_CLOCKS)})",
    )
    given = [
        flag
        for flag, value in (("--t-end", args.t_end), ("--num-saves", args.num_saves))
        if value is not None
    ]
    require(
        not given,
        f"--clock sets the save times (the network's checkpoints from --epoch on); drop "
        f"{' and '.join(given)}",
    )
    check_kappa_scale(args.kappa, args.kappa_from, clock)
    require(
        args.kappa is not None or args.kappa_from is not None,
        f"--clock {clock} needs its scale: pass --kappa K, or --kappa-from the JSON of a "
        f"compare --clock {clock} --json run",
    )
    if args.kappa is None:
        choices = ", ".join(FLOW_MODELS)
        require(
            flow in FLOW_MODELS,
            f"--kappa-from reads the kappa compare fitted for a model, and compare has no model "
            f"of the {flow} flow; use --flow with one of {choices}, or give --kappa K",
        )
    return clock


def _kappa(args, clock: str, flow: str) -> tuple[float, str]:
    """(κ, where it came from): given, or read from a compare JSON for the flow's model."""
    from ..measurement.predictive import FLOW_MODELS, read_kappa

    if args.kappa is not None:
        return float(args.kappa), "given"
    return read_kappa(args.kappa_from, FLOW_MODELS[flow], clock)


@dataclass(frozen=True)
class Start:
    """The start checkpoint of a flow, chosen as compare chooses it (`choose_from_epoch`)."""

    source: object  # the streamed features file (`open_source`)
    measurement: object  # its `Measurement`
    k0: int
    rule: str


def _start(path, epoch) -> Start:
    """The checkpoint `epoch` (or `auto`) of the file at `path`, with the file's measurement."""
    from .._errors import InputError
    from ..measurement._stream import open_source
    from ..measurement.analysis import analyze
    from ..measurement.compare import check_epochs
    from ..measurement.predictive import Measurement, choose_from_epoch

    source = open_source(path)
    check_epochs(source.epochs)  # a clock runs forward in time: epochs must increase
    measurement = Measurement.from_records(source, analyze(source))
    k0, rule = choose_from_epoch(measurement, epoch, flag="--epoch", alternative=None)
    if k0 is None:
        raise InputError(rule)
    return Start(source, measurement, k0, rule)


def clock_times(start: Start, clock: str, kappa: float, kappa_source: str):
    """t_k = κ·S(e_k) at the start checkpoint and every later one (`clock_units`, as compare):
    0 at the start."""
    from ..measurement.predictive import check_kappa_time, clock_units

    instead = f"run compare --clock monotone on the file, or drop --clock {clock}"
    S = clock_units(start.measurement, start.k0, clock, instead=instead)[start.k0 :]
    check_kappa_time(kappa, S[1:], kappa_source)
    return kappa * S
