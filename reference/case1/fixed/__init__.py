"""Case 1, redesigned: send a directory of images for classification, streaming and bounded.

Run it as ``python -m reference.case1.fixed --input-dir DIR [--output FILE] [--workers N]
[--timeout S] URL``; see :mod:`.cli` for every option and the exit codes. The modules:

* :mod:`.discovery` - lazy ``os.scandir`` walk, image files chosen by Pillow's extensions;
* :mod:`.imaging` - decode, normalise the mode, rotate, resize, JPEG-encode;
* :mod:`.magic` - the vectorised, exact ``calc_magic_number``;
* :mod:`.client` - one ``requests.Session`` per worker thread, timeouts, status checks;
* :mod:`.pipeline` - bounded thread pool, JSON-lines output, progress and streaming statistics.

This package never imports ``reference.case1.as_given`` or ``reference.case1.patched``.
"""
from __future__ import annotations

from .magic import calc_magic_number

__all__ = ["calc_magic_number"]
