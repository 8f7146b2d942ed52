"""``python -m ncap``: the same as the ``ncap`` command."""

import sys

from .selection.cli import main

# The guard matters: Dask's worker processes are spawned and re-import this module.
if __name__ == "__main__":
    sys.exit(main())
