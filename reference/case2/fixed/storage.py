"""Task images on disk: staging, atomic placement, removal, and the listing the reconciler reads.

Files live in one absolute directory, named ``<task id>.<ext>``. An upload is first written to
a staged file ``.upload-<pid>-<random>.tmp`` in the same directory (so placing it is an atomic
rename) before any database work; it is placed under its final name inside the transaction
that inserts the row. Creating the directory is not an import-time side effect: it happens on
the first write (and in ``flask reconcile``).
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

STAGED_PREFIX = ".upload-"
STAGED_SUFFIX = ".tmp"
_PLACED = re.compile(r"([0-9]{1,18})\.([a-z0-9]{1,10})")
_STAGED = re.compile(rf"{re.escape(STAGED_PREFIX)}([0-9]+)-.*{re.escape(STAGED_SUFFIX)}")


class ImageStorage:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()

    @staticmethod
    def name(task_id: int, ext: str) -> str:
        return f"{task_id}.{ext}"

    def path(self, task_id: int, ext: str) -> Path:
        return self.root / self.name(task_id, ext)

    def ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def staged(self, data: bytes) -> Iterator[Path]:
        """A temporary file holding ``data`` in the storage directory; removed on exit unless it
        was placed. A full disk fails here, before the database is touched."""
        self.ensure_root()
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f"{STAGED_PREFIX}{os.getpid()}-",
                                   suffix=STAGED_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # on disk before the row that points at it commits
            yield Path(tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    def place(self, staged: Path, task_id: int, ext: str) -> Path:
        final = self.path(task_id, ext)
        os.replace(staged, final)
        return final

    def remove(self, files: Iterable[tuple[int, str | None]],
               strict: bool = True) -> list[tuple[int, str]]:
        """Delete the files of ``(task id, ext)`` pairs; a missing file is not an error.
        ``strict=False``: a file that cannot be removed now (storage read-only or failing) is
        returned rather than raised, the others are still removed (after a COMMIT the rows are
        gone whatever the disk says; the reconciler removes what is left)."""
        left = []
        for task_id, ext in files:
            if not ext:
                continue
            try:
                os.remove(self.path(task_id, ext))
            except FileNotFoundError:
                pass
            except OSError:
                if strict:
                    raise
                left.append((task_id, ext))
        return left

    def placed_files(self) -> dict[int, list[str]]:
        """Task id -> extensions of the placed files found (normally one)."""
        found: dict[int, list[str]] = {}
        for entry in self._entries():
            match = _PLACED.fullmatch(entry.name)
            if match:
                found.setdefault(int(match.group(1)), []).append(match.group(2))
        return found

    def staged_files(self) -> list[tuple[Path, int, float]]:
        """(path, writer pid, modification time) of every staged upload."""
        staged = []
        for entry in self._entries():
            match = _STAGED.fullmatch(entry.name)
            if match:
                with contextlib.suppress(FileNotFoundError):
                    staged.append((Path(entry.path), int(match.group(1)), entry.stat().st_mtime))
        return staged

    def _entries(self) -> list[os.DirEntry]:
        try:
            with os.scandir(self.root) as it:
                return [e for e in it if e.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            return []
