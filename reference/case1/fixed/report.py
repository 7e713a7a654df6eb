"""What a run reports: one result per image, streaming statistics, the summary and the exit code.

Every image gives exactly one JSON line ``{"path", "class", "score", "elapsed", "image_size",
"error", "stats_error", "retryable"}`` (findings C1-10, C1-15, C1-25, C1-28): a failure has
``error`` set to its cause and no class; a stats report that failed has ``stats_error`` set.
``path`` is always valid Unicode: a file name that is not valid UTF-8 is shown with ``\\xNN``
escapes for the bad bytes, and its exact bytes are added as ``path_bytes`` (base64), so nothing is
lost and the output can always be encoded. Credentials of a URL (``user:password@``) never appear
in a cause (:func:`describe`).

A failure is *retryable* (:func:`is_retryable`) when it says nothing about the image but about
the environment - the server unreachable, slow, failing (5xx), throttling (429), answering garbage or
at the wrong address (404, 3xx), the machine out of file descriptors or memory, a permission - so
that running the same command again, once that is mended, retries it (:mod:`.journal`). A failure of
the input itself - not an image, truncated, a decompression bomb, a symbolic link loop, a 4xx that
refuses this image - is final.

Statistics are streamed (count, sum, min, max over float seconds and byte sizes): O(1) memory and
no crash when nothing succeeded (C1-13, C1-14). What the summary prints from the server (class
names) or the file system has its control characters escaped: a class name cannot drive the terminal.
"""
from __future__ import annotations

import base64
import errno
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

import requests

EXIT_OK = 0
EXIT_SOME_FAILED = 1  # some images failed (see their "error"), or some stats reports were not delivered
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def display_path(path: str) -> tuple[str, str | None]:
    """``(printable path, base64 of its bytes or None)``; the second only for non-UTF-8 names."""
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), base64.b64encode(raw).decode("ascii")


_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@'\"]*(?:@[^\s/?#@'\"]*)*@")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URL in it removed."""
    return _CREDENTIALS.sub(r"\1", text)


def printable(text: str) -> str:
    """``text`` safe for a terminal: control and direction-changing characters as ``\\xNN`` / ``\\uNNNN``."""
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


def warn(text: str) -> None:
    """A message on stderr, best effort: a closed (``2>&-``), full or broken stderr never ends a run
    (and ``print(file=None)`` would write to stdout)."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):
        pass


class BestEffortStream:
    """A text stream for progress: writes that fail (closed, full, broken pipe) are dropped from then on."""

    def __init__(self, stream: TextIO | None):
        self._stream = stream
        self.broken = stream is None

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        try:
            return not self.broken and self._stream.isatty()
        except (OSError, ValueError, AttributeError):
            return False


def describe(exc: BaseException) -> str:
    text = redact(str(exc)).encode("utf-8", "backslashreplace").decode("utf-8")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# statuses that say the server (or its address) is wrong, not the image: 3xx, 401/403 (credentials),
# 404/405 (wrong URL), 407, 408, 421, 425, 429 and every 5xx
_RETRYABLE_STATUSES = frozenset({401, 403, 404, 405, 407, 408, 421, 425, 429})
_RETRYABLE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EIO, errno.EACCES,
                               errno.EPERM, errno.ESTALE, errno.ETIMEDOUT, errno.ENOBUFS, errno.EINTR,
                               errno.EBUSY, errno.ENOSPC, errno.EDQUOT, errno.ENOTCONN, errno.EHOSTDOWN})


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` is a failure of the environment that a later run may not meet (see the module)."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        return not 400 <= status < 500 or status in _RETRYABLE_STATUSES
    if isinstance(exc, requests.RequestException):  # connection, timeout, garbage answers, bad redirects
        return True
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, OSError) and exc.errno in _RETRYABLE_ERRNOS


@dataclass(frozen=True)
class Result:
    path: str
    key: bytes  # the path relative to the input directory, as bytes: the identity used for resuming
    cls: str | None = None
    score: float | None = None
    elapsed: float | None = None  # seconds of the classification request, body included
    image_size: int | None = None  # bytes of the JPEG sent
    error: str | None = None
    stats_error: str | None = None
    retryable: bool = False  # a failure that a rerun retries (see is_retryable)

    def to_json(self) -> str:
        shown, raw = display_path(self.path)
        record = {"path": shown, "class": self.cls, "score": self.score, "elapsed": self.elapsed,
                  "image_size": self.image_size, "error": self.error, "stats_error": self.stats_error,
                  "retryable": self.retryable}
        if raw is not None:
            record["path_bytes"] = raw
        return json.dumps(record, ensure_ascii=False, allow_nan=False)


@dataclass
class RunningStats:
    """min/avg/max of a stream of numbers in O(1) memory."""

    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def summary(self, fmt: str = "{:.4f}") -> str:
        if not self.count:
            return "n/a"
        return "/".join(fmt.format(v) for v in (self.low, self.total / self.count, self.high))


@dataclass
class Summary:
    classes: Counter = field(default_factory=Counter)
    request_time: RunningStats = field(default_factory=RunningStats)
    image_size: RunningStats = field(default_factory=RunningStats)
    succeeded: int = 0
    failed: int = 0
    retryable: int = 0  # failures a rerun retries
    stats_failed: int = 0
    unexpected: int = 0  # failures that are bugs of this program, not of the input or the server
    resumed: int = 0  # images already done by an earlier run of the same output, skipped
    left_for_rerun: int = 0  # images whose Dask partition kept killing workers: no result yet
    interrupted: bool = False

    def add(self, result: Result, unexpected: bool = False) -> None:
        if result.error is not None:
            self.failed += 1
            self.retryable += result.retryable
            self.unexpected += unexpected
            return
        self.succeeded += 1
        self.stats_failed += result.stats_error is not None
        self.classes[result.cls] += 1
        self.request_time.add(result.elapsed)
        self.image_size.add(result.image_size)

    def report(self, out: TextIO) -> None:
        print(f"Images classified: {self.succeeded}, failed: {self.failed}"
              + (f", done by an earlier run: {self.resumed}" if self.resumed else "")
              + (" (interrupted)" if self.interrupted else ""), file=out)
        if self.retryable:
            print(f"Failures of the server or the machine, retried when the same command runs again: "
                  f"{self.retryable}", file=out)
        if self.left_for_rerun:
            print(f"Images left without a result (their partition kept failing): {self.left_for_rerun}; "
                  "run the same command again to finish", file=out)
        if self.stats_failed:
            print(f"Stats reports not delivered: {self.stats_failed} (see stats_error in the output)", file=out)
        if self.unexpected:
            print(f"Unexpected errors (bugs, tracebacks on stderr): {self.unexpected}", file=out)
        print("Classification results:", file=out)
        for cls, count in self.classes.most_common():
            print(printable(cls), "--", count, file=out)
        print(f"Request time min/avg/max: {self.request_time.summary()} s", file=out)
        print(f"Image size min/avg/max: {self.image_size.summary('{:.1f}')} bytes", file=out)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_SOME_FAILED if self.failed or self.stats_failed or self.left_for_rerun else EXIT_OK
