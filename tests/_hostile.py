"""The command line run as a hostile or careless user runs it (issues 14 and 29), shared by the
test files that attack it (test_resource_guards.py, test_rundir_safety.py, …).

`run_cli` runs one command in a child process under RLIMIT_AS and returns its exit status, its
stderr, the CPU time and the peak resident memory it cost; `assert_refused` and `one_line`
check the answer: exit status 1 or 2, exactly one line, no traceback, within `TIME_LIMIT` CPU
seconds and `PEAK_LIMIT` bytes.

A fresh interpreter per case spent ~0.9 s of CPU importing centralpath (JAX, Equinox) before it
read its arguments, and the families run ~300 cases. So the children are forked from one server
process per test process that has imported what every `centralpath` process imports first
(`centralpath.cli`, hence `centralpath` and JAX, but no JAX backend: no XLA threads exist to be
lost in a fork). Each child then does what `python -m centralpath.cli ARGS` does after that:
sets its own RLIMIT_AS, takes its environment, working directory and stderr, and calls
`centralpath.cli.main()`. A child's seconds are its own CPU time plus the server's start-up
CPU time (what a fresh process would also have spent), and its peak the larger of its own
`ru_maxrss` and the server's: a forked child's high-water mark starts at the resident size it
shares with the server (so it counts the imports' pages), and the server's counts what the
imports held while they ran. Nothing a fresh process pays is left out.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

from centralpath._run.resources import MEMORY_ENV, WORK_ENV

GiB = 1 << 30
# Address-space limit of the children: Python + JAX map about 1.5 GiB; any array of the sizes
# the guards refuse would exceed what is left.
AS_LIMIT = 4 * GiB
# What a refusal may cost (issue 29): CPU seconds, and peak resident memory with JAX's start.
TIME_LIMIT = 20.0
PEAK_LIMIT = int(1.5e9)
# A child still running after this many wall-clock seconds is killed (and fails its test).
KILL_AFTER = 120.0

_SERVER = r"""
import json, os, resource, signal, sys, threading, traceback, warnings

import centralpath.cli  # what `python -m centralpath.cli` imports before reading its arguments

warnings.filterwarnings("ignore", message=".*fork.*")  # Python >= 3.12 warns of any thread
usage = resource.getrusage(resource.RUSAGE_SELF)
startup = usage.ru_utime + usage.ru_stime
# The imports' high-water mark. Not ru_maxrss: Linux keeps it across execve, so it would carry
# the peak of the pytest worker that started this server (1.9 GB after other test files).
try:
    with open("/proc/self/status") as status:
        startup_peak = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    startup_peak = usage.ru_maxrss
requests, replies = sys.stdin, sys.stdout
replies.write(json.dumps({"ready": True}) + "\n")
replies.flush()


def child(req):
    code = 1
    try:
        limit = req["as_limit"]
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDWR)
        for fd, to in ((0, null), (1, null), (2, err)):
            os.dup2(to, fd)
        sys.argv = ["centralpath", *req["args"]]
        from centralpath.cli import main

        code = main()  # with argv None it ends the process itself, as the program does
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()  # what the interpreter prints for an uncaught exception
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code if isinstance(code, int) else 1)


for line in requests:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(req)
    timer = threading.Timer(req["kill_after"], os.kill, (pid, signal.SIGKILL))
    timer.start()
    try:
        _, status, usage = os.wait4(pid, 0)
    finally:
        timer.cancel()
        timer.join()  # no thread outlives a child: the next fork copies none
    replies.write(json.dumps({
        "code": os.waitstatus_to_exitcode(status),
        "seconds": startup + usage.ru_utime + usage.ru_stime,
        "peak": max(startup_peak, usage.ru_maxrss) * 1024,
    }) + "\n")
    replies.flush()
"""


class Outcome(NamedTuple):
    """A child's exit status, stderr, CPU seconds (start-up included) and peak RSS in bytes."""

    code: int
    err: str
    seconds: float
    peak: int


def _base_env() -> dict[str, str]:
    """This process's environment without the limits a case sets itself."""
    env = dict(os.environ)
    env.pop(MEMORY_ENV, None)
    env.pop(WORK_ENV, None)
    return env


class _Server:
    """The forking server of this test process (started on first use, ended at exit)."""

    _lock = threading.Lock()
    _proc: subprocess.Popen | None = None

    @classmethod
    def ask(cls, request: dict) -> dict:
        with cls._lock:
            if cls._proc is None or cls._proc.poll() is not None:
                cls._proc = subprocess.Popen(
                    [sys.executable, "-c", _SERVER],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=_base_env(),
                    text=True,
                )
                ready = cls._proc.stdout.readline()
                assert ready, "the test's command-line server did not start"
                atexit.register(cls._stop, cls._proc)
            cls._proc.stdin.write(json.dumps(request) + "\n")
            cls._proc.stdin.flush()
            reply = cls._proc.stdout.readline()
            assert reply, "the test's command-line server died"
            return json.loads(reply)

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        """End of input ends the server; waited for, so that its children's CPU time counts
        in this process's (`time pytest` measures the whole family)."""
        try:
            proc.stdin.close()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()


def run_cli(*args, env=None, tmp_path=None, cwd=None, as_limit: int = AS_LIMIT) -> Outcome:
    """The command line (`centralpath ARGS`) in a child process under RLIMIT_AS `as_limit`, in
    `cwd` (default `tmp_path`, else this directory), with this process's environment without
    `CENTRALPATH_MEMORY_LIMIT` and `CENTRALPATH_WORK_LIMIT`, its compilation cache in
    `tmp_path`, and `env` on top."""
    e = _base_env()
    if tmp_path is not None:
        e["XDG_CACHE_HOME"] = str(Path(tmp_path) / "cache")
    e.update({k: str(v) for k, v in (env or {}).items()})
    where = cwd if cwd is not None else tmp_path if tmp_path is not None else os.getcwd()
    fd, err_path = tempfile.mkstemp(prefix="centralpath-stderr-")
    os.close(fd)
    try:
        reply = _Server.ask(
            {
                "args": [str(a) for a in args],
                "env": e,
                "cwd": str(where),
                "stderr": err_path,
                "as_limit": int(as_limit),
                "kill_after": KILL_AFTER,
            }
        )
        err = Path(err_path).read_bytes().decode(errors="replace")
    finally:
        os.unlink(err_path)
    return Outcome(reply["code"], err, reply["seconds"], reply["peak"])


def one_line(err: str, *needles: str) -> str:
    """The one line of a refusal, with each of `needles` in it; never a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


def assert_refused(code, err, seconds=0.0, peak=0, *, contains=(), codes=(2,)) -> str:
    """A refusal (`assert_refused(*run_cli(...))`): exit status in `codes`, one line of error
    holding each of `contains`, within the time and memory a refusal may cost; its line."""
    line = one_line(err, *contains)
    assert code in codes, err
    assert ": error:" in line or ": numerical failure:" in line, err
    assert seconds < TIME_LIMIT, f"refused after {seconds:.1f} s"
    assert peak < PEAK_LIMIT, f"refused at a peak of {peak / 1e9:.2f} GB"
    return line
