"""``python -m reference.case1.fixed``: see :mod:`reference.case1.fixed.cli`.

The imports are inside the ``try``: a Ctrl-C while NumPy, Pillow and requests load (most of the
start-up time) ends with exit code 130 like any other Ctrl-C, not with a traceback.
"""
from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130

if __name__ == "__main__":
    try:
        from .cli import main

        code = main()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)
