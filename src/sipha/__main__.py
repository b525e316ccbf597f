"""``python -m sipha``: the same as the ``sipha`` command."""

import sys

from sipha.cli import main

sys.exit(main())
