"""Command line: ``python -m reference.case1.fixed --input-dir DIR [options] URL``.

Each image under DIR (recursively unless ``--no-recursive``) is rotated 90 degrees counter-clockwise
and resized to half its size (``--skip-rotation`` and ``--skip-resize`` turn either step off,
independently), sent to ``URL/api/classify`` with its magic number, and reported to
``URL/api/stats``. One JSON line per image goes to ``--output`` (default ``results.jsonl``); a
summary goes to stdout and the progress bar to stderr.

Runs are resumable: progress is recorded durably in ``<output>.index.sqlite`` as it goes, and running
the same command again - after Ctrl-C, kill -9, a crash or a reboot - processes only the images that
have no result yet, appending to the same output; no image ever gets a second line and no earlier
result is overwritten. Failures of the server or the machine (unreachable, timeouts, 5xx, 429, a
wrong URL, no file descriptors left, a permission) are *retryable*: their lines wait at the end of
the output, and the same command retries them (``--no-retry-failed`` keeps them as they are); a
failure of the image itself is final. The settings (input directory, flags, server URL without its
credentials) are stored with the index: a rerun with others is refused, except a moved server with
``--change-url``. ``--restart`` discards the previous output and index instead. An output that exists
without its index (or with an index that holds none of it) is refused (it is not ours to overwrite);
one that disagrees with its index is set aside, never truncated (see :mod:`.journal`).

``--dask`` runs the same job on a local Dask cluster (``--dask-workers`` processes), ``--scheduler
tcp://HOST:PORT`` on an existing one; see :mod:`.distributed`.

Progress and messages go to stderr and the summary to stdout, best effort: a closed or full stream
(``2>&-``, ``>/dev/full``, a pipe closed by ``head``) loses that text, never a result or the exit code.

Exit codes: 0 every image classified and reported to the stats (or none found); 1 some images failed
(see their ``error`` in the output; those with ``"retryable": true`` are retried by a rerun) or some
stats reports were not delivered (``stats_error``); 2 bad usage - missing or unreadable
``--input-dir``, bad URL, bad numbers, a CA bundle that does not exist, an output that cannot be
written or belongs to another run, an index that cannot be read, a Dask scheduler that is malformed or
cannot be reached; 3 results could not be recorded (a full or vanished disk, at start or later: what
was committed is kept, run again to continue); 130 interrupted with Ctrl-C, also during start-up (what
was finished is recorded; run again to continue).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sqlite3
import sys
from collections.abc import Sequence
from itertools import chain
from urllib.parse import urlsplit

from .budget import default_budget
from .client import DEFAULT_RETRY_BUDGET, MAX_SECONDS, split_credentials, tls_verify
from .discovery import iter_images
from .journal import CannotRecord, Journal, JournalError, disk_trouble
from .pipeline import DEFAULT_TIMEOUT, DEFAULT_WORKERS, Options, run
from .report import EXIT_INTERRUPTED, EXIT_SOME_FAILED, EXIT_USAGE, Summary, printable, redact, warn

DEFAULT_OUTPUT = "results.jsonl"
EXIT_CANNOT_RECORD = 3
DEFAULT_PARTITION = 1000
DEFAULT_DASK_WORKERS = 2
MAX_BUDGET = 1 << 50  # a pebibyte: beyond any machine, still an int
SCHEDULER_SCHEMES = ("tcp", "tls", "ucx", "inproc", "ws", "wss")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def api_url(value: str) -> str:
    """An http(s) base URL with a host, without a trailing slash."""
    shown = redact(value)  # an error message never repeats a password
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL, got {shown!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL with a host, got {shown!r}")
    if parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"the API base URL must not have a query or fragment: {shown!r}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad port in {shown!r}: {exc}") from None
    return value.rstrip("/")


def scheduler_address(value: str) -> str:
    """A Dask scheduler address: ``tcp://HOST:PORT`` (or tls, ucx, ws, wss, inproc)."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad scheduler address {value!r}: {exc}") from None
    if parts.scheme not in SCHEDULER_SCHEMES or not (parts.hostname or parts.scheme == "inproc") \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"expected a scheduler address such as tcp://10.0.0.5:8786, got {value!r}")
    if parts.scheme != "inproc" and port is None:
        raise argparse.ArgumentTypeError(f"the scheduler address {value!r} has no port (e.g. tcp://HOST:8786)")
    return value


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return number


def positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {value!r}")
    if number > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SECONDS:g} seconds (a week), got {value!r}")
    return number


def byte_size(value: str) -> int:
    """``512M``, ``2G``, ``1.5GiB``, ``1048576``: a positive number of bytes."""
    match = _SIZE.match(value)
    number = float(match[1]) * 1024 ** " KMGT".index(match[2].upper() or " ") if match else 0
    if not number >= 1:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M or 2G, got {value!r}")
    if number > MAX_BUDGET:  # also inf, from hundreds of digits
        raise argparse.ArgumentTypeError(f"expected a size of at most 1P, got {value[:40]!r}")
    return int(number)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference.case1.fixed",
        description="Send images for classification after preprocessing (rotate 90 degrees, resize to half). "
                    "Resumable: run the same command again to finish an interrupted run.",
        epilog="Exit codes: 0 all classified and reported, 1 some images or stats reports failed, 2 usage error, "
               "3 results could not be recorded, 130 interrupted (run again to continue).")
    parser.add_argument("url", type=api_url, help="base URL of the classification API, e.g. http://127.0.0.1:8000")
    parser.add_argument("--input-dir", required=True, help="directory with the images")
    parser.add_argument("--recursive", action=argparse.BooleanOptionalAction, default=True,
                        help="also process subdirectories (default: yes)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help=f"JSON-lines file, one line per image; resumed if it exists (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--restart", action="store_true",
                        help="discard the output and its index from an earlier run and start again")
    parser.add_argument("--retry-failed", action=argparse.BooleanOptionalAction, default=True,
                        help="when resuming, retry the images that failed because of the server or the machine "
                             "(connection, timeout, 5xx, 429, wrong URL, no file descriptors...; default: yes)")
    parser.add_argument("--change-url", action="store_true",
                        help="resume an output that was started against another server URL")
    parser.add_argument("--workers", type=positive_int, default=DEFAULT_WORKERS,
                        help=f"images processed concurrently, i.e. concurrent requests (default: {DEFAULT_WORKERS})")
    parser.add_argument("--timeout", type=positive_seconds, default=DEFAULT_TIMEOUT,
                        help=f"bound of each HTTP request as a whole, seconds (default: {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--retry-budget", type=positive_seconds, default=DEFAULT_RETRY_BUDGET,
                        help="seconds an image may spend waiting to retry 429/503 answers "
                             f"(Retry-After is honoured within it; default: {DEFAULT_RETRY_BUDGET:g})")
    parser.add_argument("--memory-budget", type=byte_size, default=None,
                        help="memory the workers may use at once for decoded images, e.g. 512M "
                             f"(default: a quarter of RAM, now {default_budget() >> 20} MiB)")
    parser.add_argument("--skip-rotation", action="store_true", help="do not rotate")
    parser.add_argument("--skip-resize", action="store_true", help="do not resize")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    dask = parser.add_argument_group("beyond one machine (Dask)")
    dask.add_argument("--dask", action="store_true", help="run on a local Dask cluster (processes on this machine)")
    dask.add_argument("--scheduler", metavar="ADDRESS", type=scheduler_address,
                      help="run on the Dask cluster of this scheduler, e.g. tcp://10.0.0.5:8786 "
                           "(the input directory and the output's directory must be shared with the workers)")
    dask.add_argument("--dask-workers", type=positive_int, default=DEFAULT_DASK_WORKERS,
                      help=f"worker processes of the local cluster (default: {DEFAULT_DASK_WORKERS})")
    dask.add_argument("--partition-size", type=positive_int, default=DEFAULT_PARTITION,
                      help=f"images per Dask task (default: {DEFAULT_PARTITION})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the run started or while it ends: nothing is lost
        warn("interrupted")
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not os.path.isdir(args.input_dir):
        parser.error(f"--input-dir {args.input_dir!r} is not a directory")
    try:
        verify = tls_verify(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    # Read the first entry now, so an unreadable directory is a usage error, not a crash later.
    candidates = iter_images(args.input_dir, recursive=args.recursive)
    try:
        first = next(candidates, None)
    except OSError as exc:
        parser.error(f"--input-dir {args.input_dir!r} cannot be read: {exc.strerror or exc}")
    options = Options(args.url, args.workers, args.timeout, rotate=not args.skip_rotation,
                      resize=not args.skip_resize, progress=not args.no_progress, retry_budget=args.retry_budget,
                      memory_budget=args.memory_budget or default_budget(), verify=verify)
    config = {"input_dir": os.path.realpath(args.input_dir), "recursive": args.recursive,
              "rotate": options.rotate, "resize": options.resize, "url": split_credentials(args.url)[0]}
    try:
        journal = Journal(args.output, config, restart=args.restart, retry=args.retry_failed,
                          changeable=("url",) if args.change_url else ()).__enter__()
    except CannotRecord as exc:
        warn(f"cannot record results in {args.output}: {exc}")
        return EXIT_CANNOT_RECORD
    except (JournalError, OSError) as exc:
        parser.error(f"--output {args.output!r} cannot be written or resumed: {getattr(exc, 'strerror', None) or exc}")
    stream = chain([first] if first is not None else [], candidates)
    try:
        if journal.set_aside is not None:
            warn(f"{args.output} disagreed with its index: kept as {journal.set_aside}, rewritten from the index")
        if args.dask or args.scheduler:
            from .distributed import SchedulerError, run_distributed  # Dask is imported only when asked for
            try:
                summary = run_distributed(stream, options, journal, scheduler=args.scheduler,
                                          n_workers=args.dask_workers, partition_size=args.partition_size)
            except SchedulerError as exc:
                warn(f"{parser.prog}: error: {exc}")
                return EXIT_USAGE
        else:
            summary = run(stream, options, journal)
        totals = journal.totals()
    except KeyboardInterrupt:  # outside the pool loop (e.g. at start-up): what was recorded stays
        return EXIT_INTERRUPTED
    except (OSError, sqlite3.Error) as exc:  # the disk is full or gone: stop cleanly, nothing committed is lost
        cause = getattr(exc, "strerror", None) or str(exc)
        kind = "" if disk_trouble(exc) or isinstance(exc, OSError) else " (the index failed)"
        warn(f"cannot record results in {args.output}{kind}: {cause}; what was recorded is kept, run the same "
             "command again to continue")
        return EXIT_CANNOT_RECORD
    finally:
        journal.close()
    _print_summary(summary, totals, args.output)
    return _exit_code(summary, totals)


def _print_summary(summary: Summary, totals, output: str) -> None:
    """The summary on stdout, best effort: the results are recorded already."""
    try:
        summary.report(sys.stdout)
        print(f"Results: {printable(output)} ({totals.results} images in total, {totals.failed} failed"
              + (f" ({totals.retryable} retryable)" if totals.retryable else "")
              + f", {totals.stats_failed} stats reports not delivered)", file=sys.stdout, flush=True)
    except (OSError, ValueError):  # stdout closed, full, or a pipe whose reader went away
        try:  # and the interpreter's own flush at exit must not report it again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass


def _exit_code(summary: Summary, totals) -> int:
    """This run's outcome; a resumed run that had nothing left to do reports the earlier failures."""
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.exit_code or totals.failed or totals.stats_failed:
        return EXIT_SOME_FAILED
    return 0
