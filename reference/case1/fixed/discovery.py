"""Finding the image files in a directory, lazily (findings C1-03, C1-04, C1-05, C1-06).

``os.scandir`` streams directory entries and usually knows their type without an extra ``stat``;
nothing is collected into a list, so a directory of 100 million files costs no more memory than
one of ten. An entry is a candidate when its extension (any case) is one Pillow can open in this
installation (``Image.registered_extensions()`` restricted to formats with an opener). The name is
only a filter: the content is checked when the file is decoded, and a file that is not really an
image becomes an error line in the results rather than disappearing.

Every candidate is yielded exactly once, with the problem that keeps it from being processed, if
any, so that it still gets its result line with a cause:

* a regular file, or a symbolic link to a regular file inside the input directory: processed;
* a symbolic link that dangles, loops, or leads outside the input directory (its content would be
  sent to the API although it is not part of the input): not processed, the cause says which;
* a FIFO, socket or device with an image name: not processed (opening a FIFO would block forever);
* a symbolic link to a directory (whatever its name): not followed - a link cycle cannot loop and
  the walk cannot leave the tree - and reported, so that its images are not silently missing.

Subdirectories are walked depth first when ``recursive`` is true (the CLI default), otherwise
skipped; a directory whose name looks like an image (``album.png/``) is still a directory. Paths are
joined by ``os.scandir`` itself (``entry.path``); each candidate also carries its path relative to
the input directory as bytes (``key``), the identity a resumed run uses. Names that are not valid
UTF-8 come through unchanged (``os.fsencode`` gives back their bytes).
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image


@dataclass(frozen=True)
class Candidate:
    path: str  # as found: the input directory joined with the relative name
    key: bytes  # relative to the input directory, bytes
    problem: str | None = None  # why it is not processed; None when it is


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case extensions (with the dot) of the formats this Pillow can open."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in image_extensions()


def _within(path: str, root_real: str) -> bool:
    return os.path.commonpath([path, root_real]) == root_real


def _link_problem(entry: os.DirEntry, root_real: str) -> str | None:
    """Why a symbolic link to a non-directory is not processed (None: it leads to a file in the tree)."""
    try:
        target = os.stat(entry.path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "not processed: symbolic link loop"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"not processed: dangling symbolic link to {os.readlink(entry.path)!r}"
        return f"not processed: symbolic link cannot be followed: {exc.strerror}"
    if not stat.S_ISREG(target.st_mode):
        return f"not processed: symbolic link to a {_kind(target.st_mode)}"
    if not _within(os.path.realpath(entry.path), root_real):
        return "not processed: symbolic link leads outside the input directory"
    return None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory")):
        if test(mode):
            return name
    return "special file"


def _leads_to_directory(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows the link
    except OSError:  # a loop (ELOOP) or an unreadable target: not a directory we could walk
        return False


def _classify(entry: os.DirEntry, root_real: str) -> tuple[str, str | None]:
    """``("dir", None)``, ``("skip", None)`` or ``("candidate", problem)`` for one entry."""
    if entry.is_symlink():
        if _leads_to_directory(entry):  # a link to a directory is reported, never walked
            return "candidate", "not followed: symbolic link to a directory"
        if not is_image_name(entry.name):
            return "skip", None
        return "candidate", _link_problem(entry, root_real)
    if entry.is_dir(follow_symlinks=False):
        return "dir", None
    if not is_image_name(entry.name):
        return "skip", None
    if entry.is_file(follow_symlinks=False):
        return "candidate", None
    return "candidate", f"not processed: a {_kind(entry.stat(follow_symlinks=False).st_mode)}, not a regular file"


def iter_images(root: str, recursive: bool = True,
                on_error: Callable[[OSError], None] | None = None) -> Iterator[Candidate]:
    """Yield every candidate under ``root`` (see the module), in directory order, as it is found.

    An unreadable subdirectory is reported to ``on_error`` (and skipped) instead of ending the
    walk; an unreadable ``root`` raises ``OSError`` at the first ``next()``.
    """
    root_real = os.path.realpath(root)
    stack: list[tuple[str, bytes]] = [(root, b"")]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as entries:
                subdirs = []
                for entry in entries:
                    try:
                        kind, problem = _classify(entry, root_real)
                    except OSError as exc:  # the entry vanished or cannot be stat'ed
                        if on_error is None:
                            raise
                        on_error(exc)
                        continue
                    key = prefix + os.fsencode(entry.name)
                    if kind == "dir":
                        subdirs.append((entry.path, key + b"/"))
                    elif kind == "candidate":
                        yield Candidate(entry.path, key, problem)
        except OSError as exc:
            if directory == root or on_error is None:
                raise
            on_error(exc)
            continue
        if recursive:
            stack.extend(reversed(subdirs))
