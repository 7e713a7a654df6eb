"""``python -m taskcheck``: see ``taskcheck.cli``."""
from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
