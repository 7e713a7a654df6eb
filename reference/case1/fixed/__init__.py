"""Case 1, redesigned: send a directory of images for classification, streaming and bounded.

Run it as ``python -m reference.case1.fixed --input-dir DIR [--output FILE] [--workers N]
[--timeout S] URL``; see :mod:`.cli` for every option and the exit codes. The modules:

* :mod:`.discovery` - lazy ``os.scandir`` walk, image files chosen by Pillow's extensions, every
  odd entry (symlinks, FIFOs) reported with its cause;
* :mod:`.imaging` - decode under a memory budget (:mod:`.budget`), EXIF orientation, normalise the
  mode, rotate, resize, JPEG-encode;
* :mod:`.magic` - the vectorised, exact ``calc_magic_number``;
* :mod:`.client` - one ``requests.Session`` per worker thread, a deadline for each whole request,
  bounded and validated answers, 429/503 retried within a budget;
* :mod:`.pipeline` - bounded thread pool, batched durable recording, progress;
* :mod:`.journal` - the SQLite index that makes runs resumable and the output exactly-once;
* :mod:`.report` - result lines, streaming statistics, summary and exit code;
* :mod:`.distributed` - the same job on a Dask cluster, partition by partition.

This package never imports ``reference.case1.as_given`` or ``reference.case1.patched``. Importing the
package itself imports nothing heavy (``calc_magic_number`` is loaded on first use), so that
``python -m`` reaches :mod:`.__main__`, which turns a Ctrl-C during the imports into exit code 130
instead of a traceback.
"""
from __future__ import annotations

__all__ = ["calc_magic_number"]


def __getattr__(name: str):
    if name == "calc_magic_number":
        from .magic import calc_magic_number
        return calc_magic_number
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
