"""The run: bounded concurrent processing, streamed results, progress and statistics.

Why threads: per image the work is decoding, rotating, resizing and encoding (Pillow) and the
magic number (NumPy) - all of which release the GIL - plus two HTTP round trips, which wait on the
network. No stage is pure-Python CPU work any more (the per-pixel loop is gone, finding C1-09), so
a ``ThreadPoolExecutor`` scales with ``--workers`` until the CPU or the server is saturated, with
no pickling and no process start-up. ``--workers`` is a limit on concurrent requests, not a core
count (finding C1-02).

Bounded in-flight work (findings C1-03, C1-08): paths come lazily from :mod:`.discovery` and at
most ``2 * workers`` are submitted and not yet written, so memory does not grow with the number
of files. Each result is written to the JSON-lines output as soon as it completes and flushed
(C1-12, C1-27): an interrupted or crashed run keeps every line written so far. Ctrl-C cancels
what has not started, lets the running requests finish (each is bounded by the timeout), writes
them, and ends with :data:`EXIT_INTERRUPTED` (a second Ctrl-C stops that wait; the requests
still running then are not written).

Every image gives exactly one line ``{"path", "class", "score", "elapsed", "image_size",
"error", "stats_error"}``; a failure has ``error`` set to its cause (exception type and message,
with the HTTP status for error responses) and is never sent to the stats (C1-10, C1-15, C1-25,
C1-28). Unexpected exceptions (bugs) are not caught: they end the run with a traceback.

Statistics are streamed (count, sum, min, max over float seconds and byte sizes), O(1) memory
and no crash when nothing succeeded (C1-13, C1-14). The progress bar counts completed images
against the images found so far (the total grows while the directory is still being read).
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import IO, TextIO

import requests
from tqdm import tqdm

from .client import Client
from .imaging import IMAGE_ERRORS, prepare

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Options:
    url: str
    workers: int = 16
    timeout: float = 30.0
    rotate: bool = True
    resize: bool = True
    progress: bool = True


@dataclass(frozen=True)
class Result:
    path: str
    cls: str | None = None
    score: float | None = None
    elapsed: float | None = None  # seconds of the classification request
    image_size: int | None = None  # bytes of the JPEG sent
    error: str | None = None
    stats_error: str | None = None

    def to_json(self) -> str:
        record = {"path": self.path, "class": self.cls, **asdict(self)}
        del record["cls"]
        return json.dumps(record, ensure_ascii=False)


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
    interrupted: bool = False

    def add(self, result: Result) -> None:
        if result.error is not None:
            self.failed += 1
            return
        self.succeeded += 1
        self.classes[result.cls] += 1
        self.request_time.add(result.elapsed)
        self.image_size.add(result.image_size)

    def report(self, out: TextIO) -> None:
        print(f"Images classified: {self.succeeded}, failed: {self.failed}"
              + (" (interrupted)" if self.interrupted else ""), file=out)
        print("Classification results:", file=out)
        for cls, count in self.classes.most_common():
            print(cls, "--", count, file=out)
        print(f"Request time min/avg/max: {self.request_time.summary()} s", file=out)
        print(f"Image size min/avg/max: {self.image_size.summary('{:.1f}')} bytes", file=out)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_SOME_FAILED if self.failed else EXIT_OK


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def process_one(path: str, client: Client, options: Options) -> Result:
    """Prepare, classify and report one image; expected failures become the result's ``error``."""
    try:
        prepared = prepare(path, rotate=options.rotate, resize=options.resize)
    except IMAGE_ERRORS as exc:
        return Result(path, error=describe(exc))
    try:
        answer = client.classify(prepared.jpeg, prepared.magic)
    except requests.RequestException as exc:
        return Result(path, image_size=len(prepared.jpeg), error=describe(exc))
    stats_error = None
    try:  # in the worker, over the same session: stats scale with the workers (C1-11)
        client.send_stats(answer.elapsed, answer.cls, len(prepared.jpeg))
    except requests.RequestException as exc:
        stats_error = describe(exc)
    return Result(path, answer.cls, answer.score, answer.elapsed, len(prepared.jpeg), None, stats_error)


def run(paths: Iterable[str], options: Options, output: IO[str], progress_stream: TextIO = sys.stderr) -> Summary:
    """Process every path with at most ``2 * workers`` in flight; write one line per image."""
    summary = Summary()
    window = 2 * options.workers
    in_flight: set[Future[Result]] = set()
    # No percentage: the total is what discovery has found so far, not the size of the directory.
    bar = tqdm(total=0, unit="img", file=progress_stream, disable=not options.progress,
               bar_format="{n_fmt}/{total_fmt} images done [{elapsed}, {rate_fmt}]")

    def drain(done: Iterable[Future[Result]]) -> None:
        for future in done:
            if future.cancelled():
                continue
            result = future.result()  # a bug in a worker re-raises here and ends the run
            output.write(result.to_json() + "\n")
            output.flush()
            summary.add(result)
            bar.update(1)

    with Client(options.url, options.timeout) as client, \
            ThreadPoolExecutor(options.workers, thread_name_prefix="classify") as executor:
        try:
            for path in paths:
                if len(in_flight) >= window:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    drain(done)
                in_flight.add(executor.submit(process_one, path, client, options))
                bar.total += 1
            while in_flight:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                drain(done)
        except KeyboardInterrupt:
            summary.interrupted = True
            for future in in_flight:
                future.cancel()
            done, in_flight = wait(in_flight)
            drain(done)
        finally:
            bar.close()
    return summary
