"""The `centralpath` program's entry point, outside the package on purpose.

Importing `centralpath` loads JAX and Equinox (1–2 s). A Ctrl-C or SIGTERM in that window used to
end in a traceback, before the command line could install its handlers. This module imports
nothing heavy: it sets handlers that exit 130 with one true line, then imports the command line,
whose own handlers take over.

It also sets the BLAS thread counts before NumPy loads (`centralpath._run.runtime`: one thread for
everything but the large products, which get the user's count): OpenBLAS reads them only when
it loads, and the command line's modules load NumPy before any command runs.
"""

import importlib.util
import os
import signal
import sys


def _early_exit(signum, frame):  # nothing has been written yet: the command has not started
    sys.stderr.write("centralpath: interrupted while starting; nothing was written\n")
    sys.stderr.flush()
    os._exit(130)


def _set_blas_environment() -> None:
    """`centralpath._run.runtime.set_blas_environment()`, run from its file: importing it through
    the package would load NumPy (and JAX) first."""
    try:
        package = importlib.util.find_spec("centralpath")
        where = package.submodule_search_locations[0]
        spec = importlib.util.spec_from_file_location(
            "_centralpath_runtime", os.path.join(where, "_run", "runtime.py")
        )
        runtime = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(runtime)
    except (ImportError, AttributeError, OSError, TypeError):  # an odd install: the command
        return  # line's own configure_cpu_runtime() still limits the loaded libraries
    runtime.set_blas_environment()


def main() -> int:
    _set_blas_environment()
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
