"""The `centralpath` command line: one module per subcommand, each with `register` and `run`.

Exit status: 0 success, 2 usage error or bad input (file-system faults at a path included), 1
runtime failure (numerical fault, a failed solve, a disk that filled mid-run), 130 interrupted
(Ctrl-C or SIGTERM). A user's mistake prints one line, never a traceback (`--debug`
shows it).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

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


def _on_sigterm(signum, frame):
    # SIGTERM (kill, a job scheduler's stop) takes the same way out as Ctrl-C: the partial run is
    # kept and one line says where. Later SIGTERMs during that clean-up are ignored.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt("SIGTERM")


def main(argv: list[str] | None = None) -> int:
    handled = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if handled else None
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before a command started: nothing was written
        print("centralpath: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    finally:
        if handled:
            signal.signal(signal.SIGTERM, previous)


def _kept(e: BaseException) -> str:
    """What a failing command kept of its run directory (set by `RunDir.running`), or ''."""
    return getattr(e, "centralpath_kept", "")


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .._errors import InputError, NumericalError
    from .._rundir import DISK_FULL, os_error_message
    from .._runtime import configure_cpu_runtime

    name = f"centralpath {args.command}"
    configure_cpu_runtime()  # before the JAX backend starts
    try:
        import jax

        precision = getattr(args, "precision", None) or "float64"
        jax.config.update("jax_enable_x64", precision == "float64")
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
        how = "terminated (SIGTERM)" if e.args == ("SIGTERM",) else "interrupted"
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
