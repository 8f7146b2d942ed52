"""``python -m ncap``: the same as the ``ncap`` command."""

import sys

from .cli import main

sys.exit(main())
