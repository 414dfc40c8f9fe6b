"""`python -m centralpath …`: the `centralpath` program (same commands, output and exit status).

Python imports the package before it runs this module, so the installed `centralpath` program
(`centralpath_launch`) is the one that also turns a Ctrl-C during that import into one line
and status 130; from here on both behave alike.
"""

import sys

from centralpath.cli import main

if __name__ == "__main__":
    sys.exit(main())
