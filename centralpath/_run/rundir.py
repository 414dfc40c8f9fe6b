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

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError, require
from ..measurement import _io
from ..measurement._io import atomic_path, save_npz, write_json, write_text

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
    require(path.exists(), f"config file {path} does not exist; check the --config path")
    return _io.read_toml(
        path,
        "config file",
        fix="give a TOML file of the keys in docs/reference/cli.md (fix its syntax)",
    )


# --------------------------------------------------------------------------- metadata

#: A run's own small records (marker, metadata.json) are a few kilobytes.
RECORD_BYTES = 1 << 20


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


# --------------------------------------------------------------------------- paths and errors

MARKER = ".centralpath-run"  # written into every run directory: --overwrite replaces only these
LOCK_FILE = ".lock"  # flock'ed by the one process working on a partial run
MANIFEST = ".digests.json"  # sha256 of every file written into a partial run
_NAME_MAX = 255

# errno -> (cause, fix) for a path that could not be read or written.
_CAUSES = {
    errno.EISDIR: ("is a directory", "name a file, not a directory"),
    errno.ENOTDIR: (
        "is not a directory (a part of the path is a file)",
        "choose a path whose parent folders are directories",
    ),
    errno.EROFS: ("is on a read-only file system", "choose a location on a writable file system"),
    errno.EACCES: (
        "permission denied",
        "choose a location you may write, or change its permissions",
    ),
    errno.EPERM: (
        "operation not permitted (permission denied)",
        "choose a location on an ordinary file system you may write",
    ),
    errno.ENAMETOOLONG: ("name too long", "choose a name of at most 255 bytes per path component"),
    errno.ENOSPC: ("no space left on the device", "free some space or choose another location"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose another location"),
    errno.ENOENT: (
        "does not exist or cannot be created there",
        "check the path; outputs need an ordinary file system (not /proc or /sys)",
    ),
    errno.ELOOP: ("has too many levels of symbolic links", "pass the real path"),
    errno.EEXIST: ("already exists", "choose another name"),
    errno.ENOTEMPTY: ("is a directory that is not empty", "choose another name"),
}
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def os_error_message(e: OSError, path=None, what: str = "path") -> str:
    """One line for an OS error at a path: the path, the cause and the fix."""
    path = path if path is not None else (e.filename if e.filename is not None else "(unknown)")
    cause, fix = _CAUSES.get(e.errno, (e.strerror or str(e), "check the path and try again"))
    return f"{what} {path}: {cause}; {fix}"


def _real(path) -> str:
    return os.path.realpath(os.path.abspath(path))


def _within(inner: str, outer: str) -> bool:
    """`inner` is `outer` or lies below it (both real, absolute paths)."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _name_max(directory: Path) -> int:
    d = Path(os.path.abspath(directory))
    while not os.path.exists(d) and d != d.parent:  # os.path: False, not an error, for long names
        d = d.parent
    try:
        return int(os.pathconf(d, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return _NAME_MAX


def _check_parent(path: Path, what: str) -> None:
    """The first existing folder above `path` must be a directory we may write in."""
    d = Path(os.path.abspath(path)).parent
    while not os.path.lexists(d) and d != d.parent:
        d = d.parent
    if not d.is_dir():
        raise InputError(
            f"{what} {path}: {d} is a file, not a directory, so nothing can be created under it; "
            "choose a path whose parent folders are directories"
        )
    if not os.access(d, os.W_OK | os.X_OK):
        try:
            readonly = bool(os.statvfs(d).f_flag & os.ST_RDONLY)
        except OSError:
            readonly = False
        cause = "is on a read-only file system" if readonly else f"permission denied (in {d})"
        raise InputError(f"{what} {path}: {cause}; choose a location you may write")


def check_output_file(path, *, flag: str = "--json", inputs=()) -> Path:
    """Refuse, before any work, an output file that cannot or must not be written: a directory,
    a symbolic link, an input of the command, a name too long, an unwritable location."""
    path = Path(path)
    what = f"{flag} {path}"
    require(
        path.name not in ("", ".", ".."),
        f"{what} names a directory, not a file; pass a file name such as out.json",
    )
    # First: stat() of a name over the limit raises instead of answering.
    limit = _name_max(path.parent)
    for part in path.parts:
        require(
            len(os.fsencode(part)) <= limit,
            f"{what}: name too long ({len(os.fsencode(part))} bytes in one component, the file "
            f"system allows {limit}); choose a shorter name",
        )
    if os.path.islink(path):
        dangling = " (dangling)" if not path.exists() else ""
        raise InputError(
            f"{what} is a symbolic link{dangling}; centralpath does not write through links — "
            "pass the real path or a new name"
        )
    require(
        not path.is_dir(), f"{what} is a directory; pass a file name such as {path / 'out.json'}"
    )
    real = _real(path)
    for source in inputs:
        if source is not None and _real(source) == real:
            raise InputError(
                f"{what} is the input file {source}; writing it would destroy the input — "
                "choose another output path"
            )
    _check_parent(path, flag)
    return path


def partial_path(run) -> Path:
    run = Path(run)
    return run.parent / f".{run.name}.partial"


def is_run(path) -> bool:
    """A directory that holds a centralpath run: the marker this module writes, or (runs made
    before the marker existed) a metadata.json of `metadata()` beside a config.toml."""
    path = Path(path)
    if os.path.islink(path) or not path.is_dir():
        return False
    meta = path / "metadata.json"
    if _trusted_marker(path):
        # A finished run's marker carries metadata.json's digest (an older one does not: its
        # metadata must then read as this package's), so a hand-made marker is not enough.
        recorded = _marker(path).get("metadata")
        if isinstance(recorded, str):
            return meta.is_file() and not meta.is_symlink() and _sha256(meta) == recorded
    elif not (path / "config.toml").is_file():
        return False
    if not meta.is_file():
        return False
    try:
        data = _io.read_json(meta, "run metadata", fix="-", limit=RECORD_BYTES)
    except InputError:
        return False
    return isinstance(data, dict) and "centralpath" in (data.get("versions") or {})


def _trusted_marker(path: Path) -> bool:
    """A marker as this package writes it: a file (not a link) naming the command that made
    the run. An empty or hand-made marker does not make a folder replaceable."""
    marker = Path(path) / MARKER
    if not marker.is_file() or marker.is_symlink():
        return False
    command = _marker(path).get("command")
    return isinstance(command, str) and command.isidentifier()


def check_run_path(path, *, overwrite: bool, inputs=(), flag: str = "--out") -> Path:
    """Refuse a run directory that must not be written or replaced (see `RunDir`)."""
    path = Path(path)
    what = f"{flag} {path}"
    require(
        path.name not in ("", ".", ".."),
        f"{what} names the current or a parent directory; a run needs a folder of its own — "
        "pass a new name such as runs/NAME",
    )
    real, cwd = _real(path), _real(os.getcwd())
    require(
        not _within(cwd, real),
        f"{what} is the working directory or one of its parents; a run needs a folder of its "
        "own — pass a new name such as runs/NAME",
    )
    for p in (path, partial_path(path)):
        if os.path.islink(p):
            raise InputError(
                f"{flag} {path}: {p} is a symbolic link{' (dangling)' if not p.exists() else ''}; "
                "centralpath never writes or deletes through links — pass the real directory or a "
                "new name"
            )
    limit = _name_max(path.parent)
    size = len(os.fsencode(path.name))
    require(
        size + len(".partial") + 1 <= limit,
        f"{what}: name too long ({size} bytes; the folder it is built in, .NAME.partial, must fit "
        f"in {limit}); choose a name of at most {limit - len('.partial') - 1} bytes",
    )
    for source in inputs:
        if source is None:
            continue
        for target in (real, _real(partial_path(path))):
            if _within(_real(source), target):
                raise InputError(
                    f"{what} would hold (and, replaced, delete) the input file {source}; choose "
                    "another --out, or copy the input elsewhere first"
                )
    if os.path.lexists(path):
        require(
            path.is_dir(),
            f"{what} exists and is a file, not a run directory; centralpath never replaces it — "
            "choose another --out",
        )
        require(
            overwrite,
            f"output directory {path} already exists; pass --overwrite or choose another --out",
        )
        require(
            is_run(path),
            f"{what} exists and is not a centralpath run (no {MARKER} marker naming its "
            "command and metadata); --overwrite "
            "replaces only run directories — choose another --out, or move it away yourself",
        )
    _check_parent(path, flag)
    return path


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- locks


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536).decode())
        cmd = " ".join(str(a) for a in info.get("argv", []))[:200]
        return f"pid {info.get('pid')} on {info.get('host')}, {info.get('command')}: {cmd}"
    except (OSError, ValueError, AttributeError):
        return "a process that has not recorded itself yet"


def _acquire(lock: Path, run: Path, command: str) -> int:
    """Hold `lock` (flock, exclusive) for this process, or refuse naming the holder.

    flock is tied to the open file: it is released when the descriptor closes — also when the
    process dies, so a killed run never leaves a stale lock behind.
    """
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _holder(fd)
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise InputError(
            f"run {run} is in use by another centralpath process ({holder}); one process at a "
            "time per run directory — wait for it to finish or stop it"
        ) from None
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "argv": ["centralpath", *sys.argv[1:]],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    return fd


# --------------------------------------------------------------------------- run directories


def _kept_note(e: BaseException, note: str) -> None:
    """Say on the exception what happened to the partial run; the command line prints it."""
    try:
        e.centralpath_kept = note
    except AttributeError:  # an exception type with __slots__: the message goes without it
        pass


class RunDir:
    """A run directory under construction; `finish()` moves it into place atomically.

    While it is built, `.NAME.partial` holds
      .centralpath-run  the marker that makes it (and the finished run) replaceable by --overwrite
      .lock             held (flock) by the one process working on it; names that process
      .digests.json     sha256 of config.toml and of every file written into it atomically
                        (checkpoints, group files), verified by `reopen` before anything is trusted

    `resumable=True` (commands with --resume) keeps the partial run after any failure; other
    commands remove the partial output they made.
    """

    def __init__(
        self,
        path,
        command: str,
        config: dict,
        *,
        overwrite: bool = False,
        figures: bool = True,
        resumable: bool = False,
        inputs=(),
    ):
        """Check that `path` may be written and start `.NAME.partial` beside it with the config
        (`figures=False`: without a figures/ folder). `inputs`: files the command reads, which
        the run directory must neither hold nor replace."""
        self.path = Path(path)
        self.command = command
        self.config = config
        self.resumable = resumable
        self.inputs = tuple(str(p) for p in inputs if p is not None)
        self.created = False
        self._fd: int | None = None
        self._manifest: dict[str, list[str | None]] = {}
        self.start = time.perf_counter()
        self.overwrite = overwrite
        check_run_path(self.path, overwrite=overwrite, inputs=self.inputs)
        self.partial = partial_path(self.path)
        if os.path.lexists(self.partial):
            self._clear_partial(overwrite)
        self._create(config, figures)

    def _clear_partial(self, overwrite: bool) -> None:
        """An earlier partial run is in the way: refuse, or (--overwrite) remove it — only when no
        process works on it and it is a centralpath partial run (or empty)."""
        p = self.partial
        require(
            p.is_dir(),
            f"{p} is in the way of the run directory and is not a folder; remove it or choose another --out",
        )
        fd = None
        if (p / LOCK_FILE).is_file() or (p / MARKER).is_file():
            fd = _acquire(p / LOCK_FILE, self.path, self.command)
        try:
            if not overwrite:
                hint = (
                    f"continue it with --resume {self.path}, or pass --overwrite to start afresh"
                    if self.resumable
                    else "pass --overwrite to start afresh"
                )
                raise InputError(f"an interrupted {self.command} is waiting in {p}; {hint}")
            require(
                _trusted_marker(p) or not any(p.iterdir()),
                f"{p} is not a partial centralpath run (no {MARKER} marker naming its command); "
                "--overwrite replaces "
                "only centralpath's own folders — remove it yourself or choose another --out",
            )
            trash = _trash_name(self.path.parent)
            os.rename(p, trash)
            shutil.rmtree(trash, ignore_errors=True)
        finally:
            if fd is not None:
                os.close(fd)

    def _create(self, config: dict, figures: bool) -> None:
        """Build the partial run under a private name, then rename it into place: another
        process sees no partial run or a complete, locked one, never one half made."""
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".centralpath-new-", dir=parent))
        except OSError as e:
            raise InputError(os_error_message(e, self.path, "output directory")) from None
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a run reads like any folder
            # The marker also remembers --overwrite: a resumed run may replace RUN only if the
            # command that started it was allowed to.
            marker = {"command": self.command, "overwrite": bool(self.overwrite)}
            (tmp / MARKER).write_text(json.dumps(marker) + "\n")
            self._fd = _acquire(tmp / LOCK_FILE, self.path, self.command)
            if figures:
                (tmp / "figures").mkdir()
            text = dumps_toml(config)
            (tmp / "config.toml").write_text(text)
            self._manifest = {"config.toml": [hashlib.sha256(text.encode()).hexdigest()]}
            self._write_manifest(tmp)
            try:
                os.rename(tmp, self.partial)
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                raise InputError(
                    f"another centralpath process has just started a run at {self.path}; one "
                    "process at a time per run directory — wait for it or choose another --out"
                ) from None
        except BaseException as e:
            self._release()
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):
                raise InputError(os_error_message(e, self.path, "output directory")) from None
            raise
        self.created = True
        self._observe()

    @classmethod
    def attach(cls, path, command: str, config: dict) -> RunDir:
        """A handle on a run directory that another process creates and writes (the other
        processes of a multi-host job): it checks nothing and writes nothing itself."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.command, self.config, self.start = command, config, time.perf_counter()
        self.resumable, self.created, self.inputs = True, False, ()
        self._fd, self._manifest, self.overwrite = None, {}, False
        return self

    @classmethod
    def reopen(cls, run, command: str, *, inputs=()) -> tuple[RunDir, dict[str, Any]]:
        """Continue an interrupted run: RUN (or its `.RUN.partial`) must hold a partial directory
        that no other process works on, whose files all match their recorded digests.

        Returns the run directory (locked by this process) and the configuration saved in it.
        """
        run = Path(run)
        if run.name.startswith(".") and run.name.endswith(".partial"):
            run = run.parent / run.name[1 : -len(".partial")]
        partial = partial_path(run)
        require(
            not os.path.islink(partial),
            f"{partial} is a symbolic link; centralpath resumes only its own folders — pass the "
            "real run directory",
        )
        require(
            partial.is_dir() and (partial / "config.toml").is_file(),
            f"no interrupted {command} to resume at {run} (looked for {partial}); "
            + (
                "that run is already finished"
                if run.is_dir()
                else f"start one with centralpath {command} --out RUN"
            ),
        )
        for source in inputs:
            require(
                source is None or not _within(_real(source), _real(partial)),
                f"the input file {source} lies inside the partial run {partial}; copy it elsewhere",
            )
        self = cls.__new__(cls)
        self.path, self.partial, self.command = run, partial, command
        self.resumable, self.created = True, False
        self.inputs = tuple(str(p) for p in inputs if p is not None)
        self._fd = None
        try:
            self._fd = _acquire(partial / LOCK_FILE, run, command)
        except OSError as e:
            raise InputError(os_error_message(e, partial, "partial run")) from None
        try:
            self._manifest = self._read_manifest()
            self.verify()
            self.config = load_config(partial / "config.toml")
            self.overwrite = _marker(partial).get("overwrite") is True
        except BaseException:
            self._release()
            raise
        self.start = time.perf_counter()
        self._observe()
        return self, dict(self.config)

    # ----------------------------------------------------------------- digests

    def _refuse(self, problem: str) -> InputError:
        return InputError(
            f"--resume refused: {problem}; the partial run cannot be trusted (it is kept) — start "
            f"afresh with centralpath {self.command} --out {self.path} --overwrite"
        )

    def _read_manifest(self) -> dict[str, list[str | None]]:
        path = self.partial / MANIFEST
        if not path.is_file():
            raise self._refuse(
                f"{self.partial} has no {MANIFEST} (made by an older centralpath, or damaged), "
                "so its checkpoints cannot be verified"
            )
        try:
            data = _io.read_json(path, "digest manifest", fix="-")
            ok = isinstance(data, dict) and all(
                isinstance(k, str)
                and isinstance(v, list)
                and all(d is None or isinstance(d, str) for d in v)
                for k, v in data.items()
            )
        except InputError:
            ok = False
        if not ok:
            raise self._refuse(f"{path} is not a readable digest manifest")
        for rel in data:
            parts = Path(rel).parts
            if Path(rel).is_absolute() or ".." in parts or not parts:
                raise self._refuse(f"{path} names a file outside the run ({rel!r})")
        return data

    def verify(self) -> None:
        """Every file recorded in the manifest is there (or was being removed) and unchanged."""
        for rel, accepted in self._manifest.items():
            path = self.partial / rel
            if os.path.islink(path):
                raise self._refuse(f"{path} was replaced by a symbolic link")
            if not path.is_file():
                if None in accepted:
                    continue
                raise self._refuse(f"{path} is missing (it was written by the run)")
            if _sha256(path) not in accepted:
                raise self._refuse(
                    f"{path} no longer matches the sha256 recorded when it was written "
                    "(truncated, edited or replaced)"
                )

    def tracked(self, rel: str) -> bool:
        """Whether `rel` (a path inside the partial run) was written by the run and verified."""
        return rel in self._manifest

    def _write_manifest(self, base: Path | None = None) -> None:
        base = self.partial if base is None else base
        tmp = base / f"{MANIFEST}.tmp"
        tmp.write_text(json.dumps(self._manifest, indent=0, sort_keys=True))
        os.replace(tmp, base / MANIFEST)

    def _observe(self) -> None:
        """Record a digest of every file written atomically into the partial run.

        Two steps around the rename (see `_io.atomic_path`): before it, the new digest joins the
        old one; after it, the old one goes. A kill between the two leaves the old file or the
        new one, and either matches: a resume never refuses a run only because it was killed.
        A file written for the first time has no old one: until its rename it may be absent.
        """
        root = os.path.abspath(self.partial)

        def observer(tmp, path) -> None:
            rel = os.path.relpath(os.path.abspath(path), root)
            if rel.startswith("..") or rel == MANIFEST or os.path.isabs(rel):
                return
            old = self._manifest.get(rel, [])
            if tmp is not None:
                self._manifest[rel] = [*(old[-1:] or [None]), _sha256(tmp)]
            elif old:
                self._manifest[rel] = old[-1:]
            else:
                return
            self._write_manifest()

        self._observer = observer
        _io._write_observers.append(observer)

    def _unobserve(self) -> None:
        observer = getattr(self, "_observer", None)
        if observer is not None and observer in _io._write_observers:
            _io._write_observers.remove(observer)

    def _release(self) -> None:
        self._unobserve()
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    # ----------------------------------------------------------------- writing

    @property
    def figures(self) -> Path:
        return self.partial / "figures"

    def file(self, name: str) -> Path:
        return self.partial / name

    def discard(self, name: str) -> None:
        """Remove `name` (a file or folder of the partial run, e.g. the checkpoints once the
        results are saved) and its digests: they are marked "may be absent" first, so a kill in
        between leaves a run that still resumes."""
        prefix = name.rstrip("/")
        keys = [k for k in self._manifest if k == prefix or k.startswith(prefix + "/")]
        for k in keys:
            self._manifest[k] = [*self._manifest[k][-1:], None]
        if keys:
            self._write_manifest()
        target = self.partial / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif os.path.lexists(target):
            target.unlink()
        for k in keys:
            del self._manifest[k]
        if keys:
            self._write_manifest()

    def save_results(self, results: dict[str, np.ndarray]) -> None:
        save_npz(self.partial / "results.npz", **results)
        write_text(self.partial / "results.csv", results_csv(results))

    def finish(self, extra_metadata: dict | None = None) -> Path:
        meta = metadata(self.command, self.config, time.perf_counter() - self.start)
        meta.update(extra_metadata or {})
        meta.update(_finished_files(self.partial))
        write_json(self.partial / "metadata.json", meta)
        # The marker carries the command and metadata.json's digest: `plot` verifies the
        # metadata by it, and --overwrite trusts only a marker that carries the command.
        digest = _sha256(self.partial / "metadata.json")
        marker = {"command": self.command, "overwrite": bool(self.overwrite), "metadata": digest}
        write_text(self.partial / MARKER, json.dumps(marker) + "\n")
        self._unobserve()
        old = None
        if os.path.lexists(self.path):
            # Checked again now: the folder may have appeared or changed while the command ran.
            check_run_path(self.path, overwrite=self.overwrite, inputs=self.inputs)
            old = _trash_name(self.path.parent)
            os.rename(self.path, old)
        os.rename(self.partial, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for name in (MANIFEST, LOCK_FILE):  # they describe a run in progress
            with contextlib.suppress(OSError):
                (self.path / name).unlink()
        self._release()
        return self.path

    def abandon(self) -> None:
        """After a failure: keep a resumable partial run (its checkpoints are what --resume
        continues); remove the partial output of a command that cannot resume, if it made it."""
        if self.created and not self.resumable:
            shutil.rmtree(self.partial, ignore_errors=True)
        self._release()

    def close(self) -> None:
        """Release the lock without removing anything."""
        self._release()

    def kept_note(self, resume_helps: bool = True) -> str:
        """What became of the partial run, and what to do. `resume_helps`: False for a failure
        that a resume would meet again (bad input found mid-run, a numerical failure, a fault
        of the program: the resumed run replays the same configuration bit for bit, and changed
        flags are refused), which is then not advised."""
        if self.resumable and resume_helps:
            return (
                f"the partial run is kept in {self.partial}; continue it with "
                f"`centralpath {self.command} --resume {self.path}`"
            )
        if self.resumable:
            return (
                f"the partial run is kept in {self.partial}, but a --resume would meet the same "
                f"failure: change what the message names and start afresh with `centralpath "
                f"{self.command} ... --out {self.path} --overwrite`"
            )
        return "no partial output was kept"

    @contextlib.contextmanager
    def running(self):
        """Around the work of a command: on any failure (Ctrl-C and SIGTERM included), keep or
        remove the partial run (see `abandon`) and tell the command line which, on the error."""
        try:
            yield self
        except BaseException as e:
            # An interrupt, a full disk or a lack of memory passes; anything else recurs.
            helps = isinstance(e, KeyboardInterrupt | OSError | MemoryError)
            _kept_note(e, self.kept_note(helps))  # first: a second interrupt may cut the clean-up
            self.abandon()
            raise


# --------------------------------------------------------------------------- finished runs

#: The files of a finished run whose sha256 its metadata.json records (`plot` reads them).
DIGESTED_FILES = ("config.toml", "results.npz", "results.csv")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _finished_files(partial: Path) -> dict:
    """metadata.json's record of what the run wrote: the sha256 of `DIGESTED_FILES` and the
    shape and dtype of every member of results.npz, checked by `verify_run`."""
    files = {name: _sha256(partial / name) for name in DIGESTED_FILES if (partial / name).is_file()}
    out: dict[str, Any] = {"files": files}
    if (partial / "results.npz").is_file():
        headers = _io.npz_headers(partial / "results.npz", "results file")
        out["results_members"] = {
            k: [list(h.shape), h.dtype.str] for k, h in sorted(headers.items())
        }
    return out


def verify_run(run) -> tuple[str, dict[str, np.ndarray]]:
    """(the command that wrote it, its results) of a finished run directory, checked against
    what the run recorded when it finished: metadata.json against the marker's digest, every
    file of `DIGESTED_FILES` against metadata.json's, then results.npz's members (keys, shapes,
    dtypes) against the record, before any of it is used. Runs written before the record
    existed get the structural checks only (real numbers, the command known)."""
    run = Path(run)
    fix = "re-run the command that made it (or restore the file)"
    results_path = run / "results.npz"
    require(
        run.is_dir(), f"run directory {run} does not exist; pass a directory written by centralpath"
    )
    meta_path = run / "metadata.json"
    meta: dict = {}
    if meta_path.is_file():
        meta = _io.read_json(meta_path, "run metadata", fix=fix, limit=RECORD_BYTES)
        require(
            isinstance(meta, dict), f"{meta_path} is not a run's metadata (not an object); {fix}"
        )
    recorded = _marker(run).get("metadata")
    if isinstance(recorded, str):
        require(
            meta_path.is_file() and _sha256(meta_path) == recorded,
            f"{meta_path} changed since the run finished (its sha256 differs from the one "
            f"recorded in {run / MARKER}); {fix}",
        )
    command = meta.get("command", "run")
    require(
        # "experiment NAME": a run an experiment script wrote (experiments/, figures/)
        isinstance(command, str) and command.removeprefix("experiment ").isidentifier(),
        f"{meta_path} names the command {command!r}, which is not one of centralpath's; {fix}",
    )
    digests = meta.get("files")
    if isinstance(digests, dict):
        for name, digest in digests.items():
            require(
                name in DIGESTED_FILES and isinstance(digest, str),
                f"{meta_path} records a digest for {name!r}, which a run does not write; {fix}",
            )
            path = run / name
            require(
                os.path.lexists(path),
                f"{path} is missing, though the run wrote it when it finished; {fix}",
            )
            require(
                path.is_file() and not path.is_symlink() and _sha256(path) == digest,
                f"{path} changed since the run finished (its sha256 differs from the one "
                f"recorded in {meta_path}); {fix}",
            )
    load_results(run)  # results.npz is there (one-line errors), and the run is not a sweep
    headers = _io.npz_headers(results_path, "results file")
    members = meta.get("results_members")
    if isinstance(members, dict):
        found = {k: [list(h.shape), h.dtype.str] for k, h in headers.items()}
        for key in sorted(set(members) | set(found)):
            require(
                members.get(key) == found.get(key),
                f"{results_path} member {key!r} is {_member_text(found.get(key))} but the run "
                f"recorded {_member_text(members.get(key))}; {fix}",
            )
    for key, h in headers.items():
        require(
            h.dtype.kind in "fiu",
            f"{results_path} member {key!r} holds {h.dtype} data, which no run writes (real "
            f"numbers only); {fix}",
        )
    return command, _io.load_npz(results_path, "results file")


def _member_text(member) -> str:
    if member is None:
        return "absent"
    shape, dtype = member
    return f"{tuple(shape)} {np.dtype(dtype).name}"


def _marker(path: Path) -> dict:
    try:
        data = _io.read_json(Path(path) / MARKER, "run marker", fix="-", limit=RECORD_BYTES)
    except InputError:
        return {}
    return data if isinstance(data, dict) else {}


def _trash_name(parent: Path) -> Path:
    """A fresh hidden name beside a run for a folder on its way out (short: long run names
    must still fit)."""
    return Path(parent) / f".centralpath-old-{os.getpid()}-{os.urandom(4).hex()}"


def default_run_path(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_results(run) -> dict[str, np.ndarray]:
    from ..measurement._io import load_npz

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


__all__ = ["RunDir", "atomic_path", "dumps_toml", "load_config", "load_results"]
