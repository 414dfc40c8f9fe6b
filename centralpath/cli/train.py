"""`centralpath train`: train a network on an offline dataset, capture its features, analyse them.

The run directory (built under `.RUN.partial`, renamed into place when done) holds

    config.toml      the resolved configuration
    metadata.json    versions, seed, wall time, dataset, first zero-error epoch, NC1 drop
    features.npz     captured features, W, b, epochs, weight_decay (λ, paper scale), and the
                     training record (loss, learning_rate, momentum, steps_per_epoch,
                     train/test accuracy, test loss): the format of `centralpath analyze`
    results.npz/csv  per capture (`train/...`): NC1-NC4, L, L_NC1, L_NC2/3, L_⊥LS, L_⊥LS/L,
                     ‖W̃ − W̃_LS‖/‖W̃_LS‖, ω_j, the network's loss and accuracy, the test
                     set's loss and accuracy, the ridge term; per epoch (`history/...`):
                     training loss and accuracy
    analysis.json    the records of `centralpath analyze`
    model.eqx        the final parameters (equinox.tree_serialise_leaves; for resnet18 the pair
                     (model, batch-norm state) of eqx.nn.make_with_state)

While training, `.RUN.partial/state/` holds the training state, saved after every epoch; after
Ctrl-C or a kill, `centralpath train --resume RUN` continues it bit-identically.
"""

from __future__ import annotations

from ._common import add_run_options, draw_figures, enable_compilation_cache, log

HELP = (
    "Train an MLP/CNN/ResNet18 (MSE or cross-entropy) on an offline dataset and measure its "
    "collapse."
)
EXAMPLE = "centralpath train --dataset digits --model mlp --loss mse --epochs 400 --out runs/digits"


def register(p) -> None:
    from .._run.config import TrainConfig

    # Every key of a train configuration is a flag, from its one declaration (TrainConfig);
    # the same keys are the TOML keys of --config and of a run's config.toml.
    TrainConfig.add_arguments(p)
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the interrupted run RUN with its saved configuration",
    )
    add_run_options(p)


def run(args) -> int:
    from .._errors import require
    from .._run.config import TrainConfig
    from .._run.rundir import RunDir, default_run_path
    from ..networks.train import load_configured_dataset

    enable_compilation_cache()

    def load(config):
        data = load_configured_dataset(config)
        require(
            data.num_samples // min(config.batch_size, data.num_samples) >= 1,
            "the dataset is empty after subsampling; raise --per-class",
        )
        return data

    if args.resume:
        run_dir, config = _reopen(args)
        with run_dir.running():  # a bad dataset keeps the partial run and releases its lock
            data = load(config)
    else:
        config = TrainConfig.resolve(args, config_path=args.config)
        # Load the data before creating any directory: a bad dataset leaves nothing behind.
        data = load(config)
        dataset = config.dataset
        run_dir = RunDir(
            args.out or default_run_path("train"),
            "train",
            config.as_dict(),
            overwrite=args.overwrite,
            resumable=True,
            inputs=[args.config, dataset[4:] if dataset.startswith("npz:") else None],
            figures=not args.no_figures,
        )
    return _train(args, run_dir, config, data)


def _train(args, run_dir, config, data) -> int:
    import equinox as eqx

    from ..measurement._io import atomic_path, load_features, write_json
    from ..measurement.analysis import analyze
    from ..networks.train import train_from_config, training_results

    emit = log(args)
    # Any failure (Ctrl-C and SIGTERM included) keeps .RUN.partial: its saved state is what
    # --resume continues.
    with run_dir.running():
        training = train_from_config(
            config, data=data, state_dir=run_dir.file("state"), progress=not args.quiet
        )
        if training.stats is None:
            features_path = run_dir.file("features.npz")
            training.save_features(features_path)
            records = analyze(load_features(features_path))
        else:  # large data: statistics were captured instead of features (networks/train.py)
            from ..measurement._stream import open_source

            features_path = run_dir.file("stats.npz")
            training.save_features(features_path)
            records = analyze(open_source(features_path, "statistics file"))
        results = training_results(training, records)
        run_dir.save_results(results)
        write_json(run_dir.file("analysis.json"), {"checkpoints": records})
        with (
            atomic_path(run_dir.file("model.eqx"), suffix=".tmp.eqx") as tmp,
            open(tmp, "wb") as fh,
        ):
            # A model with batch norm is saved with its running statistics: (model, state).
            saved = training.model
            if training.model_state is not None:
                saved = (training.model, training.model_state)
            eqx.tree_serialise_leaves(fh, saved)
        summary = _summary(training, results, data)
        _draw(run_dir, results, args, emit)
        run_dir.discard("state")
        path = run_dir.finish(extra_metadata=summary)
    emit(_table(results, training))
    emit(_summary_line(summary, results))
    print(path)
    return 0


def _summary_line(summary: dict, results) -> str:
    """The closing line: accuracies, the first zero-error epoch and the collapse since then;
    what the run did not reach is said in words (no None)."""
    drop = summary["nc1_drop_from_first_zero_error"]
    test = summary["final_test_accuracy"]
    e0 = summary["first_zero_error_epoch"]
    if e0 is None:
        zero = "training accuracy never reached 1 (no zero-error epoch to measure NC1's drop from)"
    elif drop is None:
        zero = f"first zero-error epoch {e0} (not a checkpoint: NC1's drop since then not measured)"
    else:
        zero = f"first zero-error epoch {e0}; NC1 drop since then {drop:.3g}x"
    return (
        f"train accuracy {summary['final_train_accuracy']:.4f}"
        + ("" if test is None else f", test accuracy {test:.4f} ({summary['test_split']})")
        + f"; {zero}; L_perp/L {results['train/perp_rel'][0]:.3g} -> "
        f"{results['train/perp_rel'][-1]:.3g}"
    )


def _summary(training, results, data) -> dict:
    import numpy as np

    e0 = training.first_zero_error_epoch
    nc1 = results["train/nc1"]
    drop = None
    if e0 is not None and e0 in training.epochs:
        i = int(np.flatnonzero(training.epochs == e0)[0])
        drop = float(nc1[i] / nc1[-1]) if nc1[-1] > 0 else float("inf")
    return {
        "dataset": {
            "name": data.name,
            "num_samples": data.num_samples,
            "num_classes": data.num_classes,
            "input_shape": list(data.input_shape),
            "class_counts": data.class_counts().tolist(),
            "num_test_samples": data.num_test_samples,
            "test_split": data.split,
        },
        "weight_decay_paper_scale": training.weight_decay,
        "final_train_accuracy": float(training.accuracy[-1]),
        "final_train_loss": float(training.loss[-1]),
        "final_test_accuracy": None
        if training.test_accuracy is None
        else float(training.test_accuracy[-1]),
        "final_test_loss": None if training.test_loss is None else float(training.test_loss[-1]),
        "test_split": data.split,
        "first_zero_error_epoch": e0,
        "nc1_drop_from_first_zero_error": drop,
        "resumed_from_epoch": training.resumed_from,
    }


def _table(results, training) -> str:
    """Per capture: accuracies, the network's data loss and the ridge term that analyze's L adds
    to it, and the collapse measures; a legend line names the loss terms."""
    from ._table import table

    tested = "train/test_accuracy" in results
    rows = []
    for i, epoch in enumerate(results["train/times"]):
        snr = results["train/snr"][i]
        rows.append(
            {
                "epoch": int(epoch),
                "acc": float(results["train/train_accuracy"][i]),
                "test_acc": float(results["train/test_accuracy"][i]) if tested else None,
                "loss": float(results["train/train_loss"][i]),
                "ridge": float(results["train/ridge"][i]),
                "nc1": float(results["train/nc1"][i]),
                "nc3": float(results["train/nc3"][i]),
                "perp_rel": float(results["train/perp_rel"][i]),
                "w_ls": float(results["train/w_ls_distance"][i]),
                "omin": float(min(snr)),
                "omax": float(max(snr)),
            }
        )
    cols = ["epoch", "acc", "test_acc", "loss", "ridge", "nc1", "nc3", "perp_rel", "w_ls"]
    cols += ["omin", "omax"]
    heads = ["epoch", "train acc", "test acc", "data loss", "ridge", "NC1", "NC3", "L_perp/L"]
    heads += ["|W-W_LS|", "omega_min", "omega_max"]
    if not tested:
        cols.remove("test_acc")
        heads.remove("test acc")
    kind = {"mse": "½Ave‖Wh+b−y‖²", "ce": "cross-entropy"}[training.loss_name]
    legend = (
        f"data loss: the training loss without weight decay ({kind}); ridge: "
        f"(λ/2)(‖W‖²+‖b‖²) of the last layer, λ = {training.weight_decay:g}; "
        + (
            "analyze's L = data loss + ridge"
            if training.loss_name == "mse"
            else "analyze's L is the MSE of this classifier, not its training loss"
        )
    )
    return table(rows, cols, heads) + "\n" + legend


def _draw(run_dir, results, args, emit) -> None:
    """Figures are optional here: a plotting problem must not discard a finished training."""
    import importlib.util

    if importlib.util.find_spec("centralpath.plotting") is None:
        return
    try:
        draw_figures("train", run_dir.partial, results, args)
    except Exception as e:  # noqa: BLE001 - see the docstring
        emit(f"centralpath train: warning: figures were not drawn ({type(e).__name__}: {e})")


def _reopen(args):
    """The run directory in progress of an interrupted `train` (locked, its files verified), and
    its saved configuration (a config.toml of an earlier release loads; one with a key this
    release does not know is refused, naming the key)."""
    from .._errors import require
    from .._run.config import TrainConfig
    from .._run.rundir import RunDir, load_config
    from ._common import check_resume_flags

    require(args.config is None, "--resume continues the saved configuration; drop --config")
    run_dir, _ = RunDir.reopen(args.resume, "train")
    with run_dir.running():
        require(
            (run_dir.partial / "state" / "state.eqx").is_file(),
            f"no saved training state to resume in {run_dir.partial}; start again with "
            f"centralpath train --out {run_dir.path} --overwrite",
        )
        path = run_dir.file("config.toml")
        saved = {
            **TrainConfig.defaults(),
            **TrainConfig.parse(load_config(path), f"config file {path}"),
        }
        check_resume_flags(args, saved, saved, run_dir)
        config = TrainConfig(**saved)  # validated on construction
    run_dir.config = config.as_dict()
    return run_dir, config
