"""The run: bounded concurrent processing, durable results, progress and statistics.

Why threads: per image the work is decoding, rotating, resizing and encoding (Pillow) and the
magic number (NumPy) - all of which release the GIL - plus two HTTP round trips, which wait on the
network. No stage is pure-Python CPU work any more (the per-pixel loop is gone, finding C1-09), so
a ``ThreadPoolExecutor`` scales with ``--workers`` until the CPU or the server is saturated, with
no pickling and no process start-up. ``--workers`` is a limit on concurrent requests, not a core
count (finding C1-02). Beyond one machine, :mod:`.distributed` runs this same loop per partition.

Bounded in-flight work (findings C1-03, C1-08): candidates come lazily from :mod:`.discovery`, are
looked up in the index in batches (:mod:`.journal`: what an earlier run finished is skipped), and at
most ``2 * workers`` are submitted and not yet recorded, so memory does not grow with the number of
files. Finished results are committed to the index in small batches (every :data:`COMMIT_EVERY`
results or :data:`COMMIT_SECONDS`) and appended to the JSON-lines output right after (C1-12, C1-27):
a run killed at any point keeps everything committed, and a rerun does only the rest (and retries
the failures of the server or the machine, see :mod:`.journal`). Ctrl-C cancels what has not
started, stops retry waits, lets the running requests finish (each is bounded by the timeout),
records them, and ends with :data:`EXIT_INTERRUPTED`; a second Ctrl-C stops that wait: the running
requests are cut at once and not recorded (a rerun does them again), only images being decoded are
waited for.

The progress bar and every message go to stderr best effort: a closed, full or broken stderr
(``2>&-``, ``2>/dev/full``, a pipe whose reader went away) costs the progress, never a result.

Every image gives exactly one result (see :mod:`.report`). Expected failures - a bad file, an error
answer, a timeout - become the result's ``error``. An unexpected exception is a bug of this program:
its traceback goes to stderr and the image still gets its line (``error`` starting with
``unexpected``), so one bad input cannot end a week-long run; the summary counts them.
"""
from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import TextIO

import requests
from tqdm import tqdm

from .budget import MemoryBudget, default_budget, return_freed_memory
from .client import DEFAULT_RETRY_BUDGET, Aborted, Client
from .discovery import Candidate
from .imaging import IMAGE_ERRORS, Prepared, prepare
from .report import EXIT_INTERRUPTED, BestEffortStream, Result, Summary, describe, is_retryable, warn

DEFAULT_WORKERS = 16
DEFAULT_TIMEOUT = 30.0
LOOKUP_BATCH = 256
COMMIT_EVERY = 64
COMMIT_SECONDS = 0.5
MAX_TRACEBACKS = 10

__all__ = ["EXIT_INTERRUPTED", "Options", "process_one", "run"]


@dataclass(frozen=True)
class Options:
    url: str
    workers: int = DEFAULT_WORKERS
    timeout: float = DEFAULT_TIMEOUT
    rotate: bool = True
    resize: bool = True
    progress: bool = True
    retry_budget: float = DEFAULT_RETRY_BUDGET
    memory_budget: int = field(default_factory=default_budget)
    verify: bool | str | None = None  # TLS: a CA bundle path, True, or None to read the environment


Preparer = Callable[..., Prepared]


def process_one(candidate: Candidate, client: Client, options: Options, budget: MemoryBudget,
                preparer: Preparer = prepare) -> tuple[Result, bool] | None:
    """Prepare, classify and report one image: ``(result, unexpected)``, or None when aborted."""
    path, key = candidate.path, candidate.key
    if candidate.problem is not None:
        return Result(path, key, error=candidate.problem, retryable=candidate.retryable), False
    try:
        try:
            prepared = preparer(path, rotate=options.rotate, resize=options.resize, budget=budget)
        except IMAGE_ERRORS as exc:
            return Result(path, key, error=describe(exc), retryable=is_retryable(exc)), False
        try:
            answer = client.classify(prepared.jpeg, prepared.magic)
        except requests.RequestException as exc:
            return Result(path, key, image_size=len(prepared.jpeg), error=describe(exc),
                          retryable=is_retryable(exc)), False
        stats_error = None
        try:  # in the worker, over the same session: stats scale with the workers (C1-11)
            client.send_stats(answer.elapsed, answer.cls, len(prepared.jpeg))
        except requests.RequestException as exc:
            stats_error = describe(exc)
        return Result(path, key, answer.cls, answer.score, answer.elapsed, len(prepared.jpeg), None,
                      stats_error), False
    except Aborted:
        return None
    except Exception as exc:  # a bug: keep the run going, keep the evidence
        return Result(path, key, error=f"unexpected {describe(exc)}"), _print_traceback(path, exc)


_tracebacks_printed = 0


def _print_traceback(path: str, exc: BaseException) -> bool:
    global _tracebacks_printed
    if _tracebacks_printed < MAX_TRACEBACKS:
        _tracebacks_printed += 1
        warn(f"unexpected error while processing {path!r}:\n" + "".join(traceback.format_exception(exc)).rstrip())
    return True


def _pending(candidates: Iterable[Candidate], journal, summary: Summary) -> Iterator[Candidate]:
    """The candidates the index does not hold yet, looked up in batches."""
    iterator = iter(candidates)
    while batch := list(islice(iterator, LOOKUP_BATCH)):
        done = journal.done([c.key for c in batch]) if journal is not None else set()
        summary.resumed += len(done)
        yield from (c for c in batch if c.key not in done)


class _Recorder:
    """Buffers finished results and commits them to the journal in small batches."""

    def __init__(self, journal, summary: Summary, bar, sink: Callable[[Result], None] | None):
        self.journal, self.summary, self.bar, self.sink = journal, summary, bar, sink
        self.buffer: list[tuple[bytes, str, bool, bool, bool]] = []
        self.last = time.monotonic()

    def add(self, result: Result, unexpected: bool) -> None:
        self.summary.add(result, unexpected)
        if self.sink is not None:
            self.sink(result)
        self.buffer.append((result.key, result.to_json(), result.error is not None, result.stats_error is not None,
                            result.retryable))
        if len(self.buffer) >= COMMIT_EVERY or time.monotonic() - self.last >= COMMIT_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.buffer and self.journal is not None:
            self.journal.record(self.buffer)
        self.bar.update(len(self.buffer))  # progress counts results that are recorded (C1-08)
        self.buffer, self.last = [], time.monotonic()


def run(candidates: Iterable[Candidate], options: Options, journal=None, progress_stream: TextIO = sys.stderr,
        preparer: Preparer = prepare, sink: Callable[[Result], None] | None = None) -> Summary:
    """Process every candidate not yet in ``journal`` with at most ``2 * workers`` in flight.

    ``journal`` is a :class:`~.journal.Journal` (None: results only go to ``sink``); ``sink`` sees
    every result as it is recorded; ``preparer`` replaces :func:`~.imaging.prepare` (the
    measurements run the same loop with emulated stages).
    """
    summary = Summary()
    window = 2 * options.workers
    return_freed_memory()
    budget = MemoryBudget(options.memory_budget)
    in_flight: set[Future] = set()
    # No percentage: the total is what discovery has found so far, not the size of the directory.
    bar = tqdm(total=0, unit="img", file=BestEffortStream(progress_stream), disable=not options.progress,
               bar_format="{n_fmt}/{total_fmt} images done [{elapsed}, {rate_fmt}]")
    recorder = _Recorder(journal, summary, bar, sink)

    def drain(done: Iterable[Future]) -> None:
        for future in done:
            if future.cancelled() or future.result() is None:
                continue  # not started, or aborted while waiting to retry: not finished, not recorded
            recorder.add(*future.result())

    with Client(options.url, options.timeout, options.retry_budget, verify=options.verify) as client, \
            ThreadPoolExecutor(options.workers, thread_name_prefix="classify") as executor:
        try:
            try:
                for candidate in _pending(candidates, journal, summary):
                    if len(in_flight) >= window:
                        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        drain(done)
                    in_flight.add(executor.submit(process_one, candidate, client, options, budget, preparer))
                    bar.total += 1
                while in_flight:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    drain(done)
            except KeyboardInterrupt:
                summary.interrupted = True
                client.abort()
                # a future cancelled in the queue is only "done" for wait() once a worker dequeues it: wait
                # for the running ones only
                running = {future for future in in_flight if not future.cancel()}
                try:
                    done, _ = wait(running)
                except KeyboardInterrupt:  # a second Ctrl-C: cut the running requests instead of waiting
                    client.cut()
                    done, _ = wait(running)  # only decoding is left: seconds at most
                drain(done)
        finally:
            recorder.flush()
            bar.close()
    return summary
