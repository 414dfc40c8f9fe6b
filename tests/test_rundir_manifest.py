"""The digest manifest of a partial run and a kill at the worst moment: between recording a new
file's digest and renaming it into place. The resume must not call the run damaged (it was
only killed); a file changed afterwards is still refused."""

from __future__ import annotations

import os

import pytest

from centralpath._errors import InputError
from centralpath._run.rundir import RunDir
from centralpath.measurement import _io


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (BaseException, so no handler catches it)."""


def _write_killed_before_rename(path, content: str, monkeypatch) -> None:
    real = os.replace

    def replace(src, dst):
        if os.fspath(dst) == os.fspath(path):  # the manifest's own write goes through
            raise _Killed
        real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", replace)
        with pytest.raises(_Killed):
            _io.write_text(path, content)


@pytest.mark.parametrize("first_write", [True, False])
def test_a_kill_before_a_files_rename_still_resumes(tmp_path, monkeypatch, first_write):
    run = RunDir(tmp_path / "r", "train", {"seed": 0}, resumable=True)
    capture = run.file("state/capture-000003.npz")
    if not first_write:
        _io.write_text(capture, "the old capture")
    _write_killed_before_rename(capture, "the new capture", monkeypatch)
    run.close()
    manifest = run._manifest[os.path.relpath(capture, run.partial)]
    assert len(manifest) == 2  # the kill came after the new digest was recorded
    resumed, _ = RunDir.reopen(tmp_path / "r", "train")  # no "is missing", no digest mismatch
    assert capture.exists() is (not first_write)
    resumed.close()


def test_a_file_changed_after_it_was_written_is_still_refused(tmp_path):
    run = RunDir(tmp_path / "r", "train", {"seed": 0}, resumable=True)
    capture = run.file("state/capture-000003.npz")
    _io.write_text(capture, "the capture")
    run.close()
    capture.write_text("edited")
    with pytest.raises(InputError, match="no longer matches"):
        RunDir.reopen(tmp_path / "r", "train")
    capture.unlink()
    with pytest.raises(InputError, match="is missing"):
        RunDir.reopen(tmp_path / "r", "train")
