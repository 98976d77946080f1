"""``python -m oasis_lib``: the command line (:mod:`oasis_lib.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
