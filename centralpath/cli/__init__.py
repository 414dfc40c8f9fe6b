"""The `centralpath` command line: one module per subcommand, each with `register` and `run`.

Exit status: 0 success, 2 usage error or bad input (file-system faults at a path included), 1
runtime failure (numerical fault, a failed solve, a disk that filled mid-run), 130 interrupted
(Ctrl-C or SIGTERM). A user's mistake prints one line, never a traceback (`--debug`
shows it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time

# name -> module; each module defines HELP, EXAMPLE, register(parser) and run(args) -> int.
COMMANDS = {
    "demo": "centralpath.cli.demo",
    "simulate": "centralpath.cli.simulate",
    "sweep": "centralpath.cli.sweep",
    "predict": "centralpath.cli.predict",
    "analyze": "centralpath.cli.analyze",
    "train": "centralpath.cli.train",
    "compare": "centralpath.cli.compare",
    "plot": "centralpath.cli.plot",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and status 2, as argparse does, plus the fix
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    """The installed package's version, read from its metadata: importing centralpath itself
    would load JAX just to print a number."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("centralpath")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: argparse otherwise takes any unique prefix of a flag, so a
    # mistyped or unknown `--omega 1` or `--kap 2` was silently accepted as --omega0 / --kappa.
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser = _Parser(
        prog="centralpath",
        allow_abbrev=False,
        description="Neural collapse under MSE loss: simulate the central-path dynamics, measure "
        "networks, compare with the closed form.",
    )
    parser.add_argument("--version", action="version", version=f"centralpath {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, modname in COMMANDS.items():
        mod = importlib.import_module(modname)
        p = sub.add_parser(
            name,
            parents=[common],
            help=mod.HELP,
            description=mod.HELP,
            epilog=f"example:\n  {mod.EXAMPLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        mod.register(p)
        p.set_defaults(_module=mod)
    return parser


class _Interrupts:
    """SIGINT (Ctrl-C) and SIGTERM (kill, a job scheduler's stop) raise KeyboardInterrupt in the
    main thread, so both take the same way out: the partial run is kept and one line says where.

    Python runs a signal handler wherever the main thread happens to be, a garbage-collector
    callback included (JAX registers one), and there the exception is swallowed ("Exception
    ignored in: _xla_gc_callback") and the run went on to the end. So until the command line has
    seen the interrupt, it is delivered again every second.
    """

    def __init__(self):
        self.signum: int | None = None
        self.seen = False
        self.lock = threading.Lock()

    def handler(self, signum, frame):
        if self.seen:  # already on the way out: let it finish its one line
            return
        first = self.signum is None
        self.signum = signum
        if first:
            threading.Thread(target=self._redeliver, daemon=True).start()
        raise KeyboardInterrupt("SIGTERM" if signum == signal.SIGTERM else "SIGINT")

    def _redeliver(self) -> None:
        main = threading.main_thread().ident
        while True:
            time.sleep(1.0)
            with self.lock:
                if self.seen:
                    return
                signal.pthread_kill(main, self.signum)

    def done(self) -> None:
        with self.lock:
            self.seen = True


def main(argv: list[str] | None = None) -> int:
    """Run the command line; `argv=None` (the installed `centralpath` program) reads sys.argv."""
    interrupts = _Interrupts()
    installed = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            # A background job started by a shell ignores SIGINT; so does this command then.
            if signal.getsignal(sig) is not signal.SIG_IGN:
                installed[sig] = signal.signal(sig, interrupts.handler)
    try:
        code = _main(argv, interrupts)
    except KeyboardInterrupt:  # before a command started: nothing was written
        interrupts.done()
        print("centralpath: interrupted; no partial output was kept", file=sys.stderr)
        code = 130
    finally:
        interrupts.done()
        for sig, previous in installed.items():
            signal.signal(sig, previous)
    if argv is None and (code == 130 or not _distributed_running()):
        # The program ends here, without the interpreter's finalisation (except a multi-host
        # process after a normal end: jax.distributed's own shutdown must run). After an interrupt,
        # XLA's threads may still run the computation, and finalising under them crashed
        # (SIGSEGV) or turned the status into -2; after any command, tearing down JAX's modules
        # and XLA's client took ~0.6 s (6% of a paper-scale `simulate`). Every file is already
        # complete (atomic writes, closed); the run directory's lock dies with the process.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (`| head`): nothing more to say
                pass
        os._exit(code)
    return code


def _distributed_running() -> bool:
    """Whether this process joined a multi-host run (`jax.distributed.initialize()`)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import distributed
    except ImportError:  # pragma: no cover - private API moved: finalise, as before
        return True
    return getattr(distributed.global_state, "client", None) is not None


def _kept(e: BaseException) -> str:
    """What a failing command kept of its run directory (set by `RunDir.running`), or ''; also
    when a second interrupt replaced the first during the clean-up."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        kept = getattr(e, "centralpath_kept", "")
        if kept:
            return kept
        e = e.__context__
    return ""


def _one_line_warnings(name: str) -> None:
    """Print the package's warnings as one line each ("centralpath CMD: warning: …"), shown
    with --quiet too: they qualify a result, they are not progress."""
    import warnings

    from .._errors import CentralpathWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CentralpathWarning):
            print(f"{name}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always", CentralpathWarning)


def _empty_value(args) -> str | None:
    """The flag (or argument) given as an empty or blank string, if any: no option of any
    command means anything by one, and a falsy path read as "not given" chose a default."""
    positional = {"features": "the features argument", "run": "the run argument"}
    if args.command == "sweep":
        positional["config"] = "the sweep file argument"
    for dest, value in vars(args).items():
        if isinstance(value, str) and not value.strip() and not dest.startswith("_"):
            return positional.get(dest, "--" + dest.replace("_", "-"))
    return None


def _main(argv: list[str] | None, interrupts: _Interrupts) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    empty = _empty_value(args)
    if empty:
        # `--out ''` fell back to the default folder and `--json ''` wrote nothing, silently.
        print(
            f"centralpath {args.command}: error: {empty} is empty; give a path or value"
            + (", or leave the flag out for its default" if empty.startswith("--") else ""),
            file=sys.stderr,
        )
        return 2
    from .._errors import InputError, NumericalError
    from .._run.rundir import DISK_FULL, os_error_message
    from .._run.runtime import configure_cpu_runtime

    name = f"centralpath {args.command}"
    configure_cpu_runtime(quick_compile=True)  # before the JAX backend starts
    _one_line_warnings(name)
    try:
        from .._float64 import set_precision

        set_precision(getattr(args, "precision", None) or "float64")
        return int(args._module.run(args) or 0)
    except InputError as e:
        if args.debug:
            raise
        kept = _kept(e)
        print(f"{name}: error: {e}{'; ' + kept if kept else ''}", file=sys.stderr)
        return 2
    except NumericalError as e:
        if args.debug:
            raise
        kept = _kept(e)
        print(f"{name}: numerical failure: {e}{'; ' + kept if kept else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        interrupts.done()
        how = "terminated (SIGTERM)" if interrupts.signum == signal.SIGTERM else "interrupted"
        print(f"{name}: {how}; {_kept(e) or 'no partial output was kept'}", file=sys.stderr)
        return 130
    except OSError as e:
        # A file-system fault at a path the checks could not foresee (a disk filling up, a
        # folder changed underneath): one line naming the path, the cause and the fix.
        if args.debug:
            raise
        kept = _kept(e)
        if e.errno in DISK_FULL and kept:
            # Mid-run: not the user's input but the machine's state, and the run can go on.
            print(
                f"{name}: error: no space left on the device while writing "
                f"{e.filename or 'the run'}; free some space — {kept}",
                file=sys.stderr,
            )
            return 1
        print(f"{name}: error: {os_error_message(e)}{'; ' + kept if kept else ''}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        kept = _kept(e)
        print(
            f"{name}: internal error: {type(e).__name__}: {msg} "
            f"(re-run with --debug for the traceback and report it){'; ' + kept if kept else ''}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
