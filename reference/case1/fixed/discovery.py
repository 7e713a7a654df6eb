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
  the walk cannot leave the tree - and reported, so that its images are not silently missing;
* a subdirectory that cannot be listed (no permission, a path longer than the system allows, an I/O
  error), or an entry that cannot be examined: reported with the cause (key ``sub/dir/``), so the
  run ends with a failure instead of silently missing what is inside. A permission problem is
  retryable (``retryable``): once it is mended, the same command lists the directory.

Subdirectories are walked depth first when ``recursive`` is true (the CLI default), otherwise
skipped; a directory whose name looks like an image (``album.png/``) is still a directory. The walk
keeps one open ``scandir`` per level (up to :data:`MAX_OPEN_DIRS` levels, then the subdirectories of
a deeper directory are listed before they are entered), so 200 000 subdirectories of one directory
cost no memory either. Paths are joined by ``os.scandir`` itself (``entry.path``); each candidate
also carries its path relative to the input directory as bytes (``key``), the identity a resumed
run uses. Names that are not valid UTF-8 come through unchanged (``os.fsencode`` gives back their
bytes).
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image


MAX_OPEN_DIRS = 64  # directory levels walked with an open scandir (one file descriptor each)
_RETRYABLE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ESTALE}


@dataclass(frozen=True)
class Candidate:
    path: str  # as found: the input directory joined with the relative name
    key: bytes  # relative to the input directory, bytes
    problem: str | None = None  # why it is not processed; None when it is
    retryable: bool = False  # the problem is the environment's (a permission...), not the input's


def _unreadable(path: str, key: bytes, exc: OSError, what: str) -> Candidate:
    return Candidate(path, key, f"not processed: {what} cannot be read: {exc.strerror or exc}",
                     exc.errno in _RETRYABLE_ERRNOS)


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

    An unreadable subdirectory, or an entry that cannot be examined, is yielded as a candidate with
    its problem (and also passed to ``on_error``, if given); an unreadable ``root`` raises
    ``OSError`` at the first ``next()``.
    """
    root_real = os.path.realpath(root)
    # one frame per directory being listed: [its scandir (None once listed), its path, its key prefix,
    # subdirectories put off until it is listed]
    frames: list[list] = [[_listing(os.scandir(root)), root, b"", []]]
    try:
        while frames:
            iterator, directory, prefix, later = frames[-1]
            entry = _next_entry(iterator) if iterator is not None else None
            if entry is None:  # this directory is listed: close it, then enter what was put off
                if iterator is not None:
                    iterator.close()
                    frames[-1][0] = None
                if not later:
                    frames.pop()
                    continue
                path, key = later.pop()
                yield from _enter(frames, path, key, on_error)
                continue
            if isinstance(entry, OSError):  # the listing itself failed part-way
                yield from _report(on_error, entry, _unreadable(directory, prefix, entry, "the rest of this directory"))
                iterator.close()
                frames[-1][0] = None
                continue
            key = prefix + os.fsencode(entry.name)
            try:
                kind, problem = _classify(entry, root_real)
            except OSError as exc:  # the entry vanished or cannot be stat'ed
                if exc.errno == errno.ENOENT:
                    if on_error is not None:
                        on_error(exc)
                    continue
                yield from _report(on_error, exc, _unreadable(entry.path, key, exc, "this entry"))
                continue
            if kind == "candidate":
                yield Candidate(entry.path, key, problem)
            elif kind == "dir" and recursive:
                if len(frames) < MAX_OPEN_DIRS:
                    yield from _enter(frames, entry.path, key + b"/", on_error)
                else:  # deep enough: list it now, enter it when this directory is done
                    later.append((entry.path, key + b"/"))
    finally:
        for iterator, *_ in frames:
            if iterator is not None:
                iterator.close()


def _listing(entries) -> Iterator[os.DirEntry]:
    """The entries of an open ``os.scandir``, one at a time; closing the generator closes the scandir."""
    with entries:
        yield from entries


def _next_entry(iterator) -> os.DirEntry | OSError | None:
    """The next entry, None at the end, or the error that ended the listing."""
    try:
        return next(iterator, None)
    except OSError as exc:
        return exc


def _enter(frames: list, path: str, key: bytes, on_error) -> Iterator[Candidate]:
    """Open the subdirectory ``path`` as a new frame, or yield it with the reason it cannot be listed."""
    try:
        frames.append([_listing(os.scandir(path)), path, key, []])
    except OSError as exc:
        yield from _report(on_error, exc, _unreadable(path, key, exc, "directory"))


def _report(on_error, exc: OSError, candidate: Candidate) -> Iterator[Candidate]:
    if on_error is not None:
        on_error(exc)
    yield candidate
