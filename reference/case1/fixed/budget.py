"""A memory budget shared by the workers: images are decoded only while their bytes fit in it.

Pillow's decompression-bomb check limits the *pixels* of one image (``Image.MAX_IMAGE_PIXELS``,
about 89 million: an error above twice that), but sixteen workers decoding sixteen images just under
the limit need sixteen times the memory - gigabytes. Each worker reserves the working set of its
image before decoding (:func:`.imaging.working_set`: the peak of the images alive at once along the
conversion path of that image's mode, plus the metadata read), and waits while the reservations of
the others would exceed the budget. An image larger than the whole budget is decoded alone (it
reserves the whole budget), so it is slow, not lost. What is not reserved is bounded per worker:
the metadata Pillow reads before an image's size is known (at most
:data:`.imaging.MAX_METADATA_BYTES`) and the buffers of one request.

A budget only bounds memory if freed memory leaves the process: glibc keeps freed blocks below its
(adaptive, up to 32 MiB) mmap threshold in per-thread arenas, so four threads that decode one huge
image each *in turn* still end with four arenas full of it. :func:`return_freed_memory` pins the
threshold at 1 MiB, so every image-sized allocation is its own mapping, unmapped when freed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from contextlib import contextmanager
from collections.abc import Iterator

MIN_DEFAULT = 256 << 20
MAX_DEFAULT = 4 << 30


M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc malloc.h)
MMAP_THRESHOLD = 1 << 20


def return_freed_memory() -> bool:
    """Make large freed allocations go back to the OS at once (glibc only); True when set."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc and hasattr(libc, "mallopt") and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except OSError:
        return False


def default_budget() -> int:
    """A quarter of the physical memory, between 256 MiB and 4 GiB."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return MIN_DEFAULT
    return max(MIN_DEFAULT, min(MAX_DEFAULT, physical // 4))


class MemoryBudget:
    """A counting semaphore over bytes; ``peak`` is the most ever reserved at once (for the tests)."""

    def __init__(self, limit: int):
        if limit <= 0:
            raise ValueError(f"the memory budget must be positive, got {limit}")
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[int]:
        amount = max(0, min(int(nbytes), self.limit))
        with self._cond:
            self._cond.wait_for(lambda: self.used + amount <= self.limit)
            self.used += amount
            self.peak = max(self.peak, self.used)
        try:
            yield amount
        finally:
            with self._cond:
                self.used -= amount
                self._cond.notify_all()
