"""``python -m reference.case1.fixed``: see :mod:`reference.case1.fixed.cli`."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
