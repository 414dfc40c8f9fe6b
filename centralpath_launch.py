"""The `centralpath` program's entry point, outside the package on purpose.

Importing `centralpath` loads JAX and Equinox (1–2 s). A Ctrl-C or SIGTERM in that window used to
end in a traceback, before the command line could install its handlers. This module imports
nothing heavy: it sets handlers that exit 130 with one true line, then imports the command line,
whose own handlers take over.
"""

import os
import signal
import sys


def _early_exit(signum, frame):  # nothing has been written yet: the command has not started
    sys.stderr.write("centralpath: interrupted while starting; nothing was written\n")
    sys.stderr.flush()
    os._exit(130)


def main() -> int:
    installed = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # a background job ignores SIGINT
            installed[sig] = signal.signal(sig, _early_exit)
    from centralpath.cli import main as cli_main

    for sig, previous in installed.items():
        signal.signal(sig, previous)
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
