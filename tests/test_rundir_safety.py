"""Run directories and output paths under attack (issue 14): --overwrite cannot delete user data,
every file-system fault is one line, a failure keeps the partial run, one process per run, a
tampered partial run is refused on --resume, SIGTERM is Ctrl-C, a run's config.toml is a config.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _hostile import assert_refused, one_line, run_cli

import centralpath.measurement._io as cio
import centralpath.simulate as sim
from centralpath._run.rundir import LOCK_FILE, MANIFEST, MARKER, RunDir
from centralpath.cli import main

SIM = [
    "simulate",
    "--flow",
    "central-path",
    "--classes",
    "3",
    "--per-class",
    "3",
    "--dim",
    "3",
    "--t-end",
    "10",
    "--num-saves",
    "6",
    "--eta",
    "0.5",
    "--methods",
    "gd",
    "--quiet",
    "--no-figures",
]


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` and its bytes (but the lock file, which names its last holder)."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in path.rglob("*")
        if p.is_file() and p.name != LOCK_FILE
    }


def _interrupt(monkeypatch, after: int, exc=KeyboardInterrupt):
    """Make simulate's checkpoint writer fail with `exc` right after its `after`-th save, each
    save written (no `interval_s` throttle: the tampering tests change what a save wrote)."""
    original = sim._Checkpoint.save
    monkeypatch.setattr(sim._Checkpoint, "interval_s", 0.0)
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == after:
            if isinstance(exc, BaseException):
                raise exc
            raised = exc()  # an exception class, or a function that sends a signal
            if isinstance(raised, BaseException):
                raise raised

    monkeypatch.setattr(sim._Checkpoint, "save", failing)
    return lambda: monkeypatch.setattr(sim._Checkpoint, "save", original)


def _partial_run(tmp_path, monkeypatch, capsys, name="run", after=3) -> Path:
    restore = _interrupt(monkeypatch, after)
    code, err = _run([*SIM, "--out", tmp_path / name], capsys)
    restore()
    assert code == 130, err
    partial = tmp_path / f".{name}.partial"
    assert (partial / "state" / "progress.npz").is_file()
    return tmp_path / name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """results.npz of an uninterrupted run of SIM."""
    out = tmp_path_factory.mktemp("ref") / "clean"
    assert main([*SIM, "--out", str(out)]) == 0
    return dict(np.load(out / "results.npz"))


def _assert_same_results(run: Path, reference: dict) -> None:
    got = dict(np.load(run / "results.npz"))
    assert sorted(got) == sorted(reference)
    for k in reference:
        np.testing.assert_array_equal(got[k], reference[k], err_msg=k)


@pytest.fixture
def features(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 5)
    H = rng.normal(size=(15, 4)) + 3.0 * np.eye(3, 4)[labels]
    path = tmp_path / "good.npz"
    np.savez(path, features=H, labels=labels)
    return path


# ------------------------------------------------------------------ --overwrite keeps user data


def test_overwrite_never_replaces_a_folder_that_is_not_a_run(tmp_path, capsys):
    mine = tmp_path / "mydir"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")
    code, err = _run([*SIM, "--out", mine, "--overwrite"], capsys)
    assert code == 2
    one_line(err, "not a centralpath run", MARKER)
    assert (mine / "keep.txt").read_text() == "precious"
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("out", [".", "..", "./", "sub/..", "HERE", "PARENT"])
def test_overwrite_never_touches_the_working_directory_or_its_parents(
    tmp_path, capsys, monkeypatch, out
):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "keep.txt").write_text("x")
    (tmp_path / "keep.txt").write_text("y")
    monkeypatch.chdir(work)
    out = {"HERE": str(work), "PARENT": str(tmp_path)}.get(out, out)
    before = _tree(tmp_path)
    code, err = _run([*SIM, "--out", out, "--overwrite"], capsys)
    assert code == 2
    one_line(err, "--out")
    assert _tree(tmp_path) == before


def test_overwrite_never_follows_a_symlink(tmp_path, capsys):
    real = RunDir(tmp_path / "real", "simulate", {"seed": 0})
    real.finish()
    before = _tree(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real", target_is_directory=True)
    code, err = _run([*SIM, "--out", link, "--overwrite"], capsys)
    assert code == 2
    one_line(err, "symbolic link")
    assert link.is_symlink() and _tree(tmp_path / "real") == before
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    code, err = _run([*SIM, "--out", dangling], capsys)
    assert code == 2
    one_line(err, "symbolic link (dangling)")
    assert dangling.is_symlink() and not (tmp_path / "nowhere").exists()


def test_overwrite_replaces_runs_old_and_new(tmp_path, capsys):
    """Runs written with the marker, and runs written before it (metadata.json of centralpath)."""
    new = RunDir(tmp_path / "new", "simulate", {"seed": 0})
    new.finish()
    assert (tmp_path / "new" / MARKER).is_file()
    assert not (tmp_path / "new" / LOCK_FILE).exists()
    assert not (tmp_path / "new" / MANIFEST).exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.toml").write_text("seed = 0\n")
    (old / "metadata.json").write_text(json.dumps({"versions": {"centralpath": "0.1"}}))
    for path in (new, old):
        path = Path(getattr(path, "path", path))
        RunDir(path, "simulate", {"seed": 1}, overwrite=True).finish()
        assert (path / "config.toml").read_text() == "seed = 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]  # no leftovers


def test_finish_replaces_only_what_the_start_was_allowed_to(tmp_path):
    from centralpath._errors import InputError

    RunDir(tmp_path / "r", "simulate", {"seed": 0}).finish()
    RunDir(tmp_path / "r", "simulate", {"seed": 1}, overwrite=True, resumable=True).close()
    resumed, _ = RunDir.reopen(tmp_path / "r", "simulate")
    resumed.finish()  # started with --overwrite: the resumed run replaces the old one
    assert (tmp_path / "r" / "config.toml").read_text() == "seed = 1\n"
    started = RunDir(tmp_path / "s", "simulate", {"seed": 0}, resumable=True)
    (tmp_path / "s").mkdir()  # appears while the run works
    (tmp_path / "s" / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="already exists"), started.running():
        started.finish()
    assert (tmp_path / "s" / "keep.txt").is_file() and (tmp_path / ".s.partial").is_dir()


def test_an_output_never_equals_or_holds_an_input(tmp_path, capsys, features):
    data = features.read_bytes()
    code, err = _run(["analyze", features, "--json", features, "--quiet"], capsys)
    assert code == 2
    one_line(err, "is the input file")
    assert features.read_bytes() == data
    # A run directory that holds the input would delete it when replaced.
    run = RunDir(tmp_path / "r", "compare", {"seed": 0})
    run.finish()
    inside = tmp_path / "r" / "f.npz"
    shutil.copy(features, inside)
    code, err = _run(["compare", inside, "--out", tmp_path / "r", "--overwrite"], capsys)
    assert code == 2
    one_line(err, "input file")
    assert inside.read_bytes() == data
    # So would a simulate run that holds its own --config.
    cfg = tmp_path / "r" / "c.toml"
    cfg.write_text("seed = 1\n")
    code, err = _run([*SIM, "--config", cfg, "--out", tmp_path / "r", "--overwrite"], capsys)
    assert code == 2 and cfg.is_file()
    one_line(err, "input file")


# ------------------------------------------------------------------ file-system faults


def _json_cases(tmp_path):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere.json")
    (tmp_path / "link.json").symlink_to(tmp_path / "afile")
    return {
        "adir": ("is a directory",),
        "afile/out.json": ("is a file, not a directory",),
        ".": ("names a directory",),
        "..": ("names a directory",),
        "/proc/centralpath-test/out.json": ("/proc",),
        "/sys/out.json": ("/sys/out.json",),
        "n" * 300 + ".json": ("name too long",),
        "d" * 300 + "/out.json": ("name too long",),
        "dangling.json": ("symbolic link (dangling)",),
        "link.json": ("symbolic link",),
    }


@pytest.mark.parametrize("command", ["analyze", "predict"])
def test_json_output_faults_are_one_line(tmp_path, capsys, features, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    argv = {
        "analyze": ["analyze", features, "--quiet"],
        "predict": ["predict", "--classes", "3", "--per-class", "5", "--omega0", "1,2"]
        + ["--times", "0,1", "--quiet"],
    }[command]
    for out, needles in _json_cases(tmp_path).items():
        code, err = _run([*argv, "--json", out], capsys)
        assert code == 2, (out, err)
        one_line(err, f"centralpath {command}: error:", *needles)
    assert (tmp_path / "afile").read_text() == "x" and (tmp_path / "adir").is_dir()


def test_out_faults_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    cases = {
        "afile": ("exists and is a file",),
        "afile/run": ("is a file, not a directory",),
        "/proc/centralpath-test": ("/proc",),
        "/sys/centralpath-test": ("/sys/centralpath-test",),
        "r" * 250: ("name too long",),
        "d" * 300 + "/run": ("name too long",),
    }
    for out, needles in cases.items():
        for extra in ([], ["--overwrite"]):
            code, err = _run([*SIM, "--out", out, *extra], capsys)
            assert code == 2, (out, err)
            one_line(err, "centralpath simulate: error:", *needles)
    assert (tmp_path / "afile").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("code_", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_unwritable_locations_name_the_cause(tmp_path, capsys, monkeypatch, features, code_):
    """Read-only file systems and permissions cannot be made as root: the OS error is injected
    where the output is first created."""
    import tempfile

    cause = {errno.EROFS: "read-only", errno.EACCES: "permission denied", errno.ENOSPC: "space"}
    real_mkdtemp, real_mkstemp = tempfile.mkdtemp, tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if str(tmp_path / "ro") in str(dir):
            raise OSError(code_, os.strerror(code_), str(dir))
        return (real_mkdtemp if refuse.dirs else real_mkstemp)(*args, dir=dir, **kwargs)

    (tmp_path / "ro").mkdir()
    refuse.dirs = True
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    code, err = _run([*SIM, "--out", tmp_path / "ro" / "run"], capsys)
    assert code == 2
    one_line(err, cause[code_], "ro")
    monkeypatch.setattr(tempfile, "mkdtemp", real_mkdtemp)
    refuse.dirs = False
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, err = _run(["analyze", features, "--json", tmp_path / "ro" / "a.json", "--quiet"], capsys)
    assert code == 2
    one_line(err, cause[code_], "a.json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_read_only_folder(tmp_path, capsys, features):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = _run([*SIM, "--out", ro / "run"], capsys)
        assert code == 2
        one_line(err, "permission denied")
        code, err = _run(["analyze", features, "--json", ro / "a.json"], capsys)
        assert code == 2
        one_line(err, "permission denied")
    finally:
        ro.chmod(0o755)


# ------------------------------------------------------------------ failures keep the partial run


def test_a_failed_run_and_a_failed_resume_keep_the_partial_run(
    tmp_path, capsys, monkeypatch, reference
):
    restore = _interrupt(monkeypatch, 3, RuntimeError("boom"))
    code, err = _run([*SIM, "--out", tmp_path / "a"], capsys)
    restore()
    assert code == 1
    one_line(err.replace("internal error", "INTERNAL"), "partial run is kept", "--resume")
    partial = tmp_path / ".a.partial"
    assert (partial / "state" / "progress.npz").is_file() and not (tmp_path / "a").exists()
    restore = _interrupt(monkeypatch, 1, sim.NumericalError("diverged"))
    code, err = _run(["simulate", "--resume", tmp_path / "a", "--quiet", "--no-figures"], capsys)
    restore()
    assert code == 1
    one_line(err, "numerical failure", "partial run is kept", "--resume")
    assert (partial / "state" / "progress.npz").is_file()
    code, err = _run(["simulate", "--resume", tmp_path / "a", "--quiet", "--no-figures"], capsys)
    assert code == 0, err
    _assert_same_results(tmp_path / "a", reference)
    assert not partial.exists()


def test_a_disk_that_fills_mid_run_leaves_a_resumable_partial_run(
    tmp_path, capsys, monkeypatch, reference
):
    real = np.savez
    calls = {"n": 0}

    def filling(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(cio.np, "savez", filling)
    code, err = _run([*SIM, "--out", tmp_path / "a"], capsys)
    monkeypatch.setattr(cio.np, "savez", real)
    assert code == 1
    one_line(err, "no space left", "partial run is kept", "--resume")
    assert not (tmp_path / "a").exists(), "a run that looks complete"
    assert (tmp_path / ".a.partial" / "state" / "progress.npz").is_file()
    assert not list((tmp_path / ".a.partial").rglob("*.tmp*")), "stray temporary files"
    code, err = _run(["simulate", "--resume", tmp_path / "a", "--quiet", "--no-figures"], capsys)
    assert code == 0, err
    _assert_same_results(tmp_path / "a", reference)


def test_sigterm_is_handled_like_ctrl_c(tmp_path, capsys, monkeypatch):
    restore = _interrupt(monkeypatch, 2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    previous = signal.getsignal(signal.SIGTERM)
    code, err = _run([*SIM, "--out", tmp_path / "a"], capsys)
    restore()
    assert code == 130
    line = one_line(err, "SIGTERM", f"kept in {tmp_path / '.a.partial'}", "--resume")
    assert "no partial output" not in line
    assert signal.getsignal(signal.SIGTERM) is previous
    code, err = _run(["simulate", "--resume", tmp_path / "a", "--quiet", "--no-figures"], capsys)
    assert code == 0, err


# ------------------------------------------------------------------ one process per run


def test_a_second_process_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "busy"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from centralpath._run.rundir import RunDir
        RunDir({str(run)!r}, "simulate", {{"seed": 0}}, resumable=True)
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        for argv in (
            ["simulate", "--resume", run, "--quiet"],
            [*SIM, "--out", run, "--overwrite"],
            [*SIM, "--out", run],
        ):
            code, err = _run(argv, capsys)
            assert code == 2, err
            one_line(err, "in use by another centralpath process", f"pid {proc.pid}")
        assert (tmp_path / ".busy.partial" / "config.toml").is_file()
    finally:
        proc.kill()
        proc.wait()
    # A dead holder leaves no stale lock.
    reopened, config = RunDir.reopen(run, "simulate")
    assert config == {"seed": 0}
    reopened.close()


# ------------------------------------------------------------------ tampered partial runs


def _rewrite_npz(path: Path, change) -> None:
    arrays = dict(np.load(path))
    change(arrays)
    with open(path, "wb") as fh:  # in place: the digest recorded for the file is the old one
        np.savez(fh, **arrays)


_TAMPER = {
    "config edited": lambda p: (p / "config.toml").write_text(
        (p / "config.toml").read_text().replace("seed = 0", "seed = 1")
    ),
    "checkpoint truncated": lambda p: (p / "state" / "progress.npz").write_bytes(
        (p / "state" / "progress.npz").read_bytes()[:200]
    ),
    "checkpoint lacks a key": lambda p: _rewrite_npz(
        p / "state" / "progress.npz", lambda a: a.pop("current/segment")
    ),
    "segment index altered": lambda p: _rewrite_npz(
        p / "state" / "progress.npz", lambda a: a.update({"current/segment": np.asarray(1)})
    ),
    "state altered": lambda p: _rewrite_npz(
        p / "state" / "progress.npz", lambda a: a.update({"state/0": a["state/0"] * 1.01})
    ),
    "checkpoint deleted": lambda p: (p / "state" / "progress.npz").unlink(),
    "manifest deleted": lambda p: (p / MANIFEST).unlink(),
}


@pytest.mark.parametrize("damage", sorted(_TAMPER))
def test_resume_refuses_a_tampered_partial_run(tmp_path, capsys, monkeypatch, damage):
    run = _partial_run(tmp_path, monkeypatch, capsys)
    partial = tmp_path / ".run.partial"
    _TAMPER[damage](partial)
    before = _tree(partial)
    code, err = _run(["simulate", "--resume", run, "--quiet", "--no-figures"], capsys)
    assert code == 2, err
    one_line(err, "--resume refused", "--overwrite")
    assert _tree(partial) == before, "a refused resume changes nothing"
    assert not run.exists()


@pytest.mark.parametrize("written_by", ["format 1", "another carry layout"])
def test_resume_refuses_a_checkpoint_of_another_release(tmp_path, capsys, monkeypatch, written_by):
    """A checkpoint whose format version or ODE-carry layout is not this release's (an older
    centralpath stored Diffrax's PID tuple by position; another Diffrax release may lay its
    controller state out differently) is refused in one line saying to start again, never
    misread; nothing in the partial run changes."""
    from centralpath import _solver

    if written_by == "format 1":
        monkeypatch.setattr(sim, "CHECKPOINT_FORMAT", 1)
    else:
        real = _solver.carry_description
        monkeypatch.setattr(_solver, "carry_description", lambda c: real(c) + " (other)")
    restore = _interrupt(monkeypatch, 3)
    ode = [a if a != "gd" else "ode" for a in SIM]  # the ODE's carry is what is checked
    code, err = _run([*ode, "--out", tmp_path / "run"], capsys)
    restore()
    assert code == 130, err
    monkeypatch.undo()
    partial, run = tmp_path / ".run.partial", tmp_path / "run"
    before = _tree(partial)
    code, err = _run(["simulate", "--resume", run, "--quiet", "--no-figures"], capsys)
    assert code in (1, 2), err
    one_line(err, "start the run again", "--overwrite")
    assert _tree(partial) == before, "a refused resume changes nothing"


def test_resume_with_changed_flags_is_refused(tmp_path, capsys, monkeypatch):
    run = _partial_run(tmp_path, monkeypatch, capsys)
    for flag, value, key in (
        ("--t-end", "20", "--t-end"),
        ("--precision", "float32", "--precision"),
        ("--out", tmp_path / "other", "--out"),
        ("--overwrite", None, "--overwrite"),
    ):
        extra = [flag] if value is None else [flag, value]
        code, err = _run(["simulate", "--resume", run, *extra, "--quiet"], capsys)
        assert code == 2, err
        one_line(err, key)
    code, err = _run(["simulate", "--resume", run, "--t-end", "10", "--quiet"], capsys)
    assert code == 0, err  # the saved value, given again, is no change


# ------------------------------------------------------------------ sweeps


SWEEP = """
flow = "central-path"
classes = 3
per_class = 3
dim = 3
methods = ["gd"]
eta = 0.5
t_end = 10.0
num_saves = 3

[sweep]
classes = [3, 4]
"""


@pytest.fixture
def fake_sweep(monkeypatch):
    """Groups that finish at once (the I/O is under test, not the numbers); the second call
    is interrupted when `fake_sweep["interrupt"]` is set."""
    import centralpath.sweep as sw

    state = {"calls": 0, "interrupt": False}

    def batched(configs, **kwargs):
        state["calls"] += 1
        if state["interrupt"] and state["calls"] == 2:
            raise KeyboardInterrupt
        t = np.array([0.0, 5.0, 10.0])
        return [{"gd/times": t, "gd/nc1": t * c["classes"]} for c in configs]

    monkeypatch.setattr(sw._write, "batched_simulate", batched)  # what run_sweep calls
    return state


def _interrupted_sweep(tmp_path, capsys, fake_sweep):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(SWEEP)
    fake_sweep["interrupt"] = True
    code, err = _run(["sweep", cfg, "--out", tmp_path / "sw", "--quiet"], capsys)
    fake_sweep["interrupt"] = False
    assert code == 130
    one_line(err, "interrupted", f"kept in {tmp_path / '.sw.partial'}", "--resume")
    groups = tmp_path / ".sw.partial" / "groups"
    assert [p.name for p in groups.glob("group-*.csv")] == ["group-00000.csv"]
    return cfg, groups


def test_sweep_resume_verifies_group_files(tmp_path, capsys, fake_sweep):
    cfg, groups = _interrupted_sweep(tmp_path, capsys, fake_sweep)
    good = (groups / "group-00000.csv").read_bytes()
    for damage in (good[:-10], good + b"3,1.0,gd/nc1,0,bad\n"):
        (groups / "group-00000.csv").write_bytes(damage)
        code, err = _run(["sweep", "--resume", tmp_path / "sw", "--quiet"], capsys)
        assert code == 2, err
        one_line(err, "--resume refused", "group-00000.csv")
    (groups / "group-00000.csv").write_bytes(good)
    (groups / "group-00001.csv").write_text("4,0.0,gd/nc1,0,1.0\n")  # not written by the sweep
    code, err = _run(["sweep", "--resume", tmp_path / "sw", "--quiet"], capsys)
    assert code == 2
    one_line(err, "--resume refused", "group-00001.csv", "not written by this sweep")
    (groups / "group-00001.csv").unlink()
    changed = tmp_path / "changed.toml"
    changed.write_text(SWEEP.replace("t_end = 10.0", "t_end = 20.0"))
    code, err = _run(["sweep", changed, "--resume", tmp_path / "sw", "--quiet"], capsys)
    assert code == 2
    one_line(err, "--resume with changed flags is refused", "t_end")
    code, err = _run(["sweep", "--resume", tmp_path / "sw", "--quiet"], capsys)
    assert code == 0, err
    rows = (tmp_path / "sw" / "results.csv").read_text().splitlines()
    assert rows[0] == "classes,time,quantity,index,value" and len(rows) == 1 + 2 * 3


# ------------------------------------------------------------------ configs


def test_a_runs_config_is_a_valid_config(tmp_path, capsys):
    assert main([*SIM, "--out", str(tmp_path / "a")]) == 0
    saved = tmp_path / "a" / "config.toml"
    assert 'precision = "float64"' in saved.read_text()
    code, err = _run(
        ["simulate", "--config", saved, "--out", tmp_path / "b", "--quiet", "--no-figures"], capsys
    )
    assert code == 0, err
    assert (tmp_path / "b" / "config.toml").read_text() == saved.read_text()
    # The file's precision is honoured, a flag overrides it.
    (tmp_path / "f32.toml").write_text(saved.read_text().replace("float64", "float32"))
    code, err = _run(
        [
            "simulate",
            "--config",
            tmp_path / "f32.toml",
            "--out",
            tmp_path / "c",
            "--quiet",
            "--no-figures",
        ],
        capsys,
    )
    assert code == 0, err
    assert 'precision = "float32"' in (tmp_path / "c" / "config.toml").read_text()


def test_compare_honours_config(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)
    base, means = rng.normal(size=(12, 3)), np.eye(3)[labels]
    feats = tmp_path / "flow.npz"
    np.savez(
        feats,
        features=np.stack([base + s * means for s in (1.0, 2.0, 4.0)]),
        labels=labels,
        epochs=np.array([0.0, 5.0, 50.0]),
    )
    toml = tmp_path / "cmp.toml"
    toml.write_text(f'features = "{feats}"\nfit = true\nflow = "whitened"\nrtol = 1e-9\n')
    quiet = ["--quiet", "--no-figures"]
    code, err = _run(["compare", "--config", toml, "--out", tmp_path / "c1", *quiet], capsys)
    assert code == 0, err
    saved = (tmp_path / "c1" / "config.toml").read_text()
    assert 'flow = "whitened"' in saved and "rtol = 1e-09" in saved
    code, err = _run(
        ["compare", "--config", tmp_path / "c1" / "config.toml", "--out", tmp_path / "c2", *quiet],
        capsys,
    )
    assert code == 0, err
    assert (tmp_path / "c2" / "config.toml").read_text() == saved
    toml.write_text('flow = "whitened"\nflwo = 1\n')
    code, err = _run(["compare", feats, "--config", toml, "--quiet"], capsys)
    assert code == 2
    one_line(err, "unknown key 'flwo'")


def test_demo_refuses_unknown_keys(tmp_path, capsys):
    for text, needle in (
        ("[simulation]\nclases = 3\n", "unknown key 'clases' in [simulation]"),
        ("[training]\nepoch = 3\n", "unknown key 'epoch' in [training]"),
        ('[convergence]\nt = "long"\n', "'t' must be float"),
    ):
        cfg = tmp_path / "demo.toml"
        cfg.write_text(text)
        code, err = _run(["demo", "--config", cfg, "--out", tmp_path / "d"], capsys)
        assert code == 2
        one_line(err, needle)
    assert not (tmp_path / "d").exists() and not (tmp_path / ".d.partial").exists()


def test_a_swallowed_interrupt_is_delivered_again():
    """Python may run the handler inside a gc callback (JAX has one), which swallows the
    KeyboardInterrupt; the command line delivers it again until it has seen it."""
    import time

    from centralpath.cli import _Interrupts

    interrupts = _Interrupts()
    previous = signal.signal(signal.SIGTERM, interrupts.handler)
    try:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
        except KeyboardInterrupt:
            pass  # swallowed, as "Exception ignored in: _xla_gc_callback" does
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            while time.monotonic() - start < 10:
                time.sleep(0.01)
        assert time.monotonic() - start < 3
    finally:
        interrupts.done()
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_to_the_program_exit_130_with_one_true_line(tmp_path, sig):
    import time

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    argv = [sys.executable, "-m", "centralpath.cli", *SIM, "--t-end", "1e4", "--num-saves", "400"]
    proc = subprocess.Popen(
        [*argv, "--out", str(tmp_path / "r")], stderr=subprocess.PIPE, text=True, env=env
    )
    progress = tmp_path / ".r.partial" / "state" / "progress.npz"
    deadline = time.time() + 300
    while not progress.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    one_line(err, "partial run is kept", "--resume")
    assert progress.exists() and not (tmp_path / "r").exists()


# ------------------------------------------------------------------ issue 29: finished runs checked


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished simulate run (ODE and GD), whose results `plot` draws."""
    d = tmp_path_factory.mktemp("finished")
    argv = [*SIM[:-4], "--methods", "ode,gd", "--quiet", "--no-figures", "--out", d / "run"]
    assert main([str(a) for a in argv]) == 0
    return d / "run"


def _rewrite_results(run: Path, change) -> None:
    with np.load(run / "results.npz") as f:
        arrays = dict(f)
    change(arrays)
    np.savez(run / "results.npz", **arrays)


def _legacy(run: Path) -> None:
    """A run as written before the finishing record (no digests, a marker without them)."""
    meta = json.loads((run / "metadata.json").read_text())
    for key in ("files", "results_members"):
        meta.pop(key)
    (run / "metadata.json").write_text(json.dumps(meta))
    (run / MARKER).write_text(json.dumps({"command": "simulate", "overwrite": False}))


def _set(key, value):
    return lambda a: a.__setitem__(key, value)


PLOT_TAMPER = {
    # Results changed after the run finished: refused by the digest metadata.json records.
    "nan": (lambda r: _rewrite_results(r, lambda a: a["ode/nc1"].fill(np.nan)), "changed since"),
    "complex": (
        lambda r: _rewrite_results(r, lambda a: a.__setitem__("ode/nc1", a["ode/nc1"] + 1j)),
        "changed since",
    ),
    "boolean": (
        lambda r: _rewrite_results(r, lambda a: a.__setitem__("ode/snr", a["ode/snr"] > 0)),
        "changed since",
    ),
    "member_removed": (lambda r: _rewrite_results(r, lambda a: a.pop("ode/times")), "changed"),
    "member_added": (lambda r: _rewrite_results(r, _set("junk", np.ones(3))), "changed since"),
    "shape_changed": (
        lambda r: _rewrite_results(r, lambda a: a.__setitem__("ode/snr", a["ode/snr"][:, 0])),
        "changed since",
    ),
    "truncated": (
        lambda r: (r / "results.npz").write_bytes((r / "results.npz").read_bytes()[:300]),
        "results",
    ),
    "garbage": (lambda r: (r / "results.npz").write_bytes(b"PK\x03\x04" + os.urandom(64)), "npz"),
    "results_removed": (lambda r: (r / "results.npz").unlink(), "is missing"),
    "results_symlink": (
        lambda r: (
            (r / "results.npz").rename(r / "elsewhere.npz"),
            (r / "results.npz").symlink_to(r / "elsewhere.npz"),
        ),
        "changed since",
    ),
    "config_edited": (lambda r: (r / "config.toml").write_text("seed = 3\n"), "changed since"),
    # metadata.json changed: refused by the digest the marker carries.
    "metadata_command": (
        lambda r: (r / "metadata.json").write_text(
            (r / "metadata.json").read_text().replace('"simulate"', '"train"', 1)
        ),
        "changed since",
    ),
    "metadata_removed": (lambda r: (r / "metadata.json").unlink(), "changed since"),
    "metadata_not_json": (lambda r: (r / "metadata.json").write_text("{"), "metadata"),
    "metadata_deep": (
        lambda r: (r / "metadata.json").write_text("[" * 100_000 + "]" * 100_000),
        "64 deep",
    ),
    "metadata_digests_forged": (
        lambda r: (
            (r / "metadata.json").write_text(
                json.dumps({**json.loads((r / "metadata.json").read_text()), "files": {"x": "0"}})
            ),
            (r / MARKER).write_text(json.dumps({"command": "simulate"})),
        ),
        "does not write",
    ),
    # Runs from before the record: the structural checks still refuse what no run writes.
    "legacy_complex": (
        lambda r: (
            _legacy(r),
            _rewrite_results(r, lambda a: a.__setitem__("ode/nc1", a["ode/nc1"] + 1j)),
        ),
        "complex128",
    ),
    "legacy_boolean": (
        lambda r: (_legacy(r), _rewrite_results(r, _set("ode/snr", np.ones((2, 2), bool)))),
        "bool",
    ),
    "legacy_text": (
        lambda r: (_legacy(r), _rewrite_results(r, _set("ode/times", np.array(["a", "b"])))),
        "<U1",
    ),
    "legacy_shape": (
        lambda r: (_legacy(r), _rewrite_results(r, _set("ode/snr", np.ones(3)))),
        "does not hold what",
    ),
    "legacy_command_not_a_name": (
        lambda r: (
            _legacy(r),
            (r / "metadata.json").write_text(json.dumps({"command": ["x"], "versions": {}})),
        ),
        "names the command",
    ),
}


@pytest.mark.parametrize("damage", sorted(PLOT_TAMPER))
def test_plot_refuses_a_run_changed_since_it_finished(finished_run, tmp_path, damage):
    """plot drew NaN, complex and boolean data with exit 0, and 9 tampered files ended in
    internal errors (issue 29): each is now one line, before anything is drawn."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    tamper, phrase = PLOT_TAMPER[damage]
    tamper(run)
    outcome = run_cli("plot", run, "--to", tmp_path / "to", "--quiet", tmp_path=tmp_path)
    assert_refused(*outcome, contains=[phrase])
    assert not (tmp_path / "to" / "figures").exists() or not any(
        (tmp_path / "to" / "figures").iterdir()
    )


def test_plot_draws_a_run_as_it_finished_and_an_older_one(
    finished_run, tmp_path, capsys, monkeypatch
):
    """A finished run is drawn; a run from before the record passes the checks and reaches the
    drawing with the same results (drawn once: its ten files take ~5 s of matplotlib)."""
    import centralpath.plotting as plotting

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    meta = json.loads((run / "metadata.json").read_text())
    assert set(meta["files"]) == {"config.toml", "results.npz", "results.csv"}
    assert meta["results_members"]["ode/snr"][1] == "<f8"
    drawn = []
    draw_run = plotting.draw_run

    def recording(kind, results, *args, **kwargs):
        drawn.append((kind, {k: np.asarray(v) for k, v in results.items()}))
        return draw_run(kind, results, *args, **kwargs) if len(drawn) == 1 else []

    monkeypatch.setattr(plotting, "draw_run", recording)
    assert main(["plot", str(run), "--quiet"]) == 0, capsys.readouterr().err
    assert len(list((run / "figures").glob("*.png"))) >= 3
    _legacy(run)  # a run from before the record is handed to the drawing as before
    assert main(["plot", str(run), "--to", str(tmp_path / "to"), "--quiet"]) == 0
    (kind, first), (legacy_kind, legacy) = drawn
    assert kind == legacy_kind == "simulate" and sorted(first) == sorted(legacy)
    for key in first:
        np.testing.assert_array_equal(first[key], legacy[key], err_msg=key)


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--out", ""],
        ["simulate", "--out", " "],
        ["simulate", "--config", ""],
        ["analyze", "{features}", "--json", ""],
        ["analyze", "{features}", "--save-stats", ""],
        ["analyze", ""],
        ["compare", "{features}", "--clock", "lr", "--kappa-from", ""],
        ["train", "--out", ""],
        ["sweep", ""],
        ["demo", "--out", ""],
        ["plot", ""],
        [
            "predict",
            "--classes",
            "3",
            "--per-class",
            "4",
            "--omega0",
            "1",
            "--times",
            "0,1",
            "--json",
            "",
        ],
    ],
)
def test_empty_paths_are_refused(tmp_path, capsys, monkeypatch, features, argv):
    """`--out ''` fell back to runs/<command>-<time> and `--json ''` wrote nothing, silently."""
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    code, err = _run([a.format(features=features) for a in argv], capsys)
    assert code == 2
    one_line(err, "is empty")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    "marker",
    ["", "{}", '{"overwrite": true}', '{"command": ["simulate"]}', "not json", "SYMLINK"],
)
def test_a_hand_made_marker_is_not_trusted_by_overwrite(tmp_path, capsys, marker):
    """An empty .centralpath-run made a user's folder replaceable by --overwrite (issue 29)."""
    mine = tmp_path / "mydir"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")
    if marker == "SYMLINK":
        real = RunDir(tmp_path / "real", "simulate", {"seed": 0})
        real.finish()
        (mine / MARKER).symlink_to(tmp_path / "real" / MARKER)
    else:
        (mine / MARKER).write_text(marker)
    code, err = _run([*SIM, "--out", mine, "--overwrite"], capsys)
    assert code == 2
    one_line(err, "not a centralpath run")
    assert (mine / "keep.txt").read_text() == "precious"


def test_a_marker_copied_into_another_folder_is_not_trusted(tmp_path, capsys):
    """The marker of a finished run carries its metadata.json's digest: copied beside other
    files (or with its metadata edited), it does not make them a run."""
    real = RunDir(tmp_path / "real", "simulate", {"seed": 0})
    real.finish()
    mine = tmp_path / "mydir"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")
    shutil.copy(tmp_path / "real" / MARKER, mine / MARKER)
    (mine / "metadata.json").write_text(json.dumps({"versions": {"centralpath": "0"}}))
    code, err = _run([*SIM, "--out", mine, "--overwrite"], capsys)
    assert code == 2 and "not a centralpath run" in err
    assert (mine / "keep.txt").read_text() == "precious"
    partial = tmp_path / ".p.partial"  # a hand-made partial run is not replaced either
    partial.mkdir()
    (partial / MARKER).write_text("{}")
    (partial / "keep.txt").write_text("precious")
    code, err = _run([*SIM, "--out", tmp_path / "p", "--overwrite"], capsys)
    assert code == 2 and "not a partial centralpath run" in err
    assert (partial / "keep.txt").read_text() == "precious"
