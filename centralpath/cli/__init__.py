"""The `centralpath` command line: one module per subcommand, each with `register` and `run`.

Exit status: 0 success, 2 usage error or bad input, 1 runtime failure (numerical fault, a
failed solve), 130 interrupted. A user's mistake prints one line, never a traceback (`--debug`
shows it).
"""

from __future__ import annotations

import argparse
import importlib
import sys

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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser = _Parser(
        prog="centralpath",
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
        )
        mod.register(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .._errors import InputError, NumericalError
    from .._runtime import configure_cpu_runtime

    configure_cpu_runtime()  # before the JAX backend starts
    try:
        import jax

        precision = getattr(args, "precision", None) or "float64"
        jax.config.update("jax_enable_x64", precision == "float64")
        return int(args._module.run(args) or 0)
    except InputError as e:
        if args.debug:
            raise
        print(f"centralpath {args.command}: error: {e}", file=sys.stderr)
        return 2
    except NumericalError as e:
        if args.debug:
            raise
        print(f"centralpath {args.command}: numerical failure: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"centralpath {args.command}: interrupted; no partial output was kept", file=sys.stderr
        )
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"centralpath {args.command}: internal error: {type(e).__name__}: {msg} "
            "(re-run with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
