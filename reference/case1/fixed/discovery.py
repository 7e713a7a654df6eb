"""Finding the image files in a directory, lazily (findings C1-03, C1-04, C1-05, C1-06).

``os.scandir`` streams directory entries and usually knows their type without an extra ``stat``;
nothing is collected into a list, so a directory of 100 million files costs no more memory than
one of ten. A file is a candidate when its extension (any case) is one Pillow can open in this
installation (``Image.registered_extensions()`` restricted to formats with an opener). The name is
only a filter: the content is checked when the file is decoded, and a file that is not really an
image becomes an error line in the results rather than disappearing.

Paths are joined by ``os.scandir`` itself (``entry.path``), so ``--input-dir in/`` gives
``in/a.jpg``. Subdirectories are walked depth first when ``recursive`` is true (the CLI default),
otherwise skipped; a directory whose name looks like an image (``album.png/``) is still a directory.
Symbolic links to directories are not followed, so a link cycle cannot loop forever.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import lru_cache

from PIL import Image


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case extensions (with the dot) of the formats this Pillow can open."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in image_extensions()


def iter_images(root: str, recursive: bool = True,
                on_error: Callable[[OSError], None] | None = None) -> Iterator[str]:
    """Yield the path of every candidate image under ``root``, in directory order, as it is found.

    An unreadable subdirectory is reported to ``on_error`` (and skipped) instead of ending the
    walk; an unreadable ``root`` raises ``OSError`` at the first ``next()``.
    """
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as entries:
                subdirs = []
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(entry.path)
                        elif entry.is_file() and is_image_name(entry.name):
                            yield entry.path
                    except OSError as exc:  # the entry vanished or cannot be stat'ed
                        if on_error is None:
                            raise
                        on_error(exc)
        except OSError as exc:
            if directory == root or on_error is None:
                raise
            on_error(exc)
            continue
        if recursive:
            stack.extend(reversed(subdirs))
