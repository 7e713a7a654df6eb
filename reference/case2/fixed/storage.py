"""Task images on disk: format detection, atomic placement, removal."""
from __future__ import annotations

import contextlib
import mimetypes
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

_PREFIX = 64  # bytes Pillow's format signatures look at


@dataclass(frozen=True)
class ImageKind:
    mime: str
    ext: str


def detect_image(data: bytes) -> ImageKind | None:
    """The image format of ``data`` by Pillow's signature checks (any format Pillow knows that
    has an image/* MIME type); None when it is not a recognised image."""
    Image.init()
    prefix = data[:_PREFIX]
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        mime = Image.MIME.get(fmt, "")
        if accept is None or not mime.startswith("image/"):
            continue
        with contextlib.suppress(Exception):  # a signature check may choke on short input
            if accept(prefix):
                ext = mimetypes.guess_extension(mime) or next(
                    (e for e, f in Image.registered_extensions().items() if f == fmt), "")
                return ImageKind(mime, ext.lstrip(".") or "img")
    return None


class ImageStorage:
    """Files named ``<task id>.<ext>`` in one absolute directory (created at start)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def name(task_id: int, ext: str) -> str:
        return f"{task_id}.{ext}"

    def path(self, task_id: int, ext: str) -> Path:
        return self.root / self.name(task_id, ext)

    @contextlib.contextmanager
    def staged(self, data: bytes) -> Iterator[Path]:
        """A temporary file holding ``data`` in the storage directory (same file system, so
        ``place`` is an atomic rename); removed on exit unless it was placed."""
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            yield Path(tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    def place(self, staged: Path, task_id: int, ext: str) -> Path:
        final = self.path(task_id, ext)
        os.replace(staged, final)
        return final

    def remove(self, files: Iterable[tuple[int, str | None]]) -> None:
        """Delete the files of ``(task id, ext)`` pairs; a missing file is not an error."""
        for task_id, ext in files:
            if ext:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path(task_id, ext))
