"""Run directories: every command's resolved config, metadata, results and figures in one place.

A run directory is built under a hidden `.NAME.partial` sibling and renamed into place only when
the command finishes, so an interrupted command never leaves a directory that looks complete.

    RUN/
      config.toml     the resolved configuration (defaults ← --config file ← flags)
      metadata.json   versions, seed, device, git revision, wall time, command line
      results.npz     every series as arrays ("<series>/<quantity>")
      results.csv     the same, tidy: time, quantity, index, value
      figures/        PNG and PDF, drawn from results.npz only (`centralpath plot RUN`)
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputError, require
from ._io import atomic_path, save_npz, write_json, write_text

# --------------------------------------------------------------------------- configuration


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        v = float(v)
        if np.isnan(v):
            return "nan"
        if np.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps_toml(config: dict[str, Any]) -> str:
    """TOML for a flat dict of scalars and lists, plus one level of tables (None is omitted)."""
    lines, tables = [], []
    for k, v in config.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif v is not None:
            lines.append(f"{k} = {_toml_value(v)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None)
    return "\n".join(lines) + "\n"


def load_config(path) -> dict[str, Any]:
    path = Path(path)
    require(path.is_file(), f"config file {path} does not exist; check the --config path")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"config file {path} is not valid TOML ({e}); fix the syntax") from None


def resolve_config(defaults: dict[str, Any], args, *, config_path=None) -> dict[str, Any]:
    """defaults ← the TOML file ← flags given on the command line (flags whose value is not None).

    Keys of the file must be known (a typo is an error, not silently ignored) and of the type
    of the default.
    """
    config = dict(defaults)
    if config_path is not None:
        loaded = load_config(config_path)
        for k, v in loaded.items():
            key = k.replace("-", "_")
            require(
                key in defaults,
                f"config file {config_path}: unknown key {k!r}; known keys: {', '.join(sorted(defaults))}",
            )
            config[key] = _coerce(key, v, defaults[key], config_path)
    for key in defaults:
        v = getattr(args, key, None)
        if v is not None:
            config[key] = v
    return config


def _coerce(key, v, default, source):
    if default is None or isinstance(v, type(default)):
        return v
    if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(default, list | tuple) and isinstance(v, list):
        return v
    raise InputError(
        f"config file {source}: {key!r} must be {type(default).__name__}, got {type(v).__name__} {v!r}"
    )


# --------------------------------------------------------------------------- metadata


def git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def metadata(command: str, config: dict, wall_time: float) -> dict:
    import importlib.metadata as im

    versions = {}
    for pkg in (
        "centralpath",
        "jax",
        "jaxlib",
        "equinox",
        "diffrax",
        "numpy",
        "optax",
        "matplotlib",
    ):
        try:
            versions[pkg] = im.version(pkg)
        except im.PackageNotFoundError:
            versions[pkg] = None
    try:
        import jax

        devices = [str(d) for d in jax.devices()]
        x64 = bool(jax.config.jax_enable_x64)
    except Exception:  # noqa: BLE001 - metadata must never fail a run
        devices, x64 = [], None
    return {
        "command": command,
        "argv": sys.argv,
        "seed": config.get("seed"),
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "devices": devices,
        "float64": x64,
        "git_revision": git_revision(),
        "wall_time_s": wall_time,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------- results


def tidy_rows(results: dict[str, np.ndarray]) -> list[tuple]:
    """(time, quantity, index, value) for every series "<series>/<quantity>" with "<series>/times"."""
    rows = []
    for key, arr in results.items():
        series, _, quantity = key.rpartition("/")
        if quantity == "times" or not series:
            continue
        times = results.get(f"{series}/times")
        arr = np.asarray(arr)
        if times is None or arr.ndim == 0 or arr.shape[0] != len(times):
            continue
        flat = arr.reshape(arr.shape[0], -1)
        for i, t in enumerate(np.asarray(times)):
            for j, v in enumerate(flat[i]):
                rows.append((float(t), key, j, float(v)))
    return rows


def results_csv(results: dict[str, np.ndarray]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["time", "quantity", "index", "value"])
    for t, q, j, v in tidy_rows(results):
        w.writerow([repr(t), q, j, repr(v)])
    return buf.getvalue()


class RunDir:
    """A run directory under construction; `finish()` moves it into place atomically."""

    def __init__(
        self,
        path,
        command: str,
        config: dict,
        *,
        overwrite: bool = False,
        figures: bool = True,
    ):
        """Check that `path` may be written and start `.NAME.partial` beside it with the config
        (`figures=False`: without a figures/ folder)."""
        self.path = Path(path)
        self.command = command
        self.config = config
        self.start = time.perf_counter()
        if self.path.exists() and not overwrite:
            raise InputError(
                f"output directory {self.path} already exists; pass --overwrite or choose another --out"
            )
        self.partial = self.path.parent / f".{self.path.name}.partial"
        if self.partial.exists() and not overwrite:
            raise InputError(
                f"an interrupted {command} is waiting in {self.partial}; continue it with "
                f"--resume {self.path}, or pass --overwrite to start afresh"
            )
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        if figures:
            (self.partial / "figures").mkdir()
        write_text(self.partial / "config.toml", dumps_toml(config))

    @classmethod
    def attach(cls, path, command: str, config: dict) -> RunDir:
        """A handle on a run directory that another process creates and writes (the other
        processes of a multi-host job): it checks nothing and writes nothing itself."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.partial = self.path.parent / f".{self.path.name}.partial"
        self.command, self.config, self.start = command, config, time.perf_counter()
        return self

    @classmethod
    def reopen(cls, run, command: str) -> tuple[RunDir, dict[str, Any]]:
        """Continue an interrupted run: RUN (or its `.RUN.partial`) must hold a partial directory.

        Returns the run directory and the configuration saved in it.
        """
        run = Path(run)
        if run.name.startswith(".") and run.name.endswith(".partial"):
            run = run.parent / run.name[1 : -len(".partial")]
        partial = run.parent / f".{run.name}.partial"
        require(
            partial.is_dir() and (partial / "config.toml").is_file(),
            f"no interrupted {command} to resume at {run} (looked for {partial}); "
            + (
                "that run is already finished"
                if run.is_dir()
                else f"start one with centralpath {command} --out RUN"
            ),
        )
        self = cls.__new__(cls)
        self.path, self.partial, self.command = run, partial, command
        self.config = load_config(partial / "config.toml")
        self.start = time.perf_counter()
        return self, dict(self.config)

    @property
    def figures(self) -> Path:
        return self.partial / "figures"

    def file(self, name: str) -> Path:
        return self.partial / name

    def save_results(self, results: dict[str, np.ndarray]) -> None:
        save_npz(self.partial / "results.npz", **results)
        write_text(self.partial / "results.csv", results_csv(results))

    def finish(self, extra_metadata: dict | None = None) -> Path:
        meta = metadata(self.command, self.config, time.perf_counter() - self.start)
        meta.update(extra_metadata or {})
        write_json(self.partial / "metadata.json", meta)
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.partial, self.path)
        return self.path

    def abandon(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def default_run_path(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_results(run) -> dict[str, np.ndarray]:
    from ._io import load_npz

    run = Path(run)
    require(
        run.is_dir(), f"run directory {run} does not exist; pass a directory written by centralpath"
    )
    if not (run / "results.npz").is_file() and (run / "results.csv").is_file():
        # A sweep writes one tidy table of many configurations and no arrays to draw.
        raise InputError(
            f"{run} holds a sweep (results.csv only), which has no figures to draw; read its "
            "results.csv (one row per configuration, time, quantity and index)"
        )
    require(
        (run / "results.npz").is_file(),
        f"{run} has no results.npz; it is not a finished centralpath run directory",
    )
    return load_npz(run / "results.npz", "results file")


__all__ = ["RunDir", "atomic_path", "dumps_toml", "load_config", "resolve_config", "load_results"]
