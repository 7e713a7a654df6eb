"""Command line: ``python -m reference.case1.fixed --input-dir DIR [options] URL``.

Each image under DIR (recursively unless ``--no-recursive``) is rotated 90 degrees counter-clockwise
and resized to half its size (``--skip-rotation`` and ``--skip-resize`` turn either step off,
independently), sent to ``URL/api/classify`` with its magic number, and reported to
``URL/api/stats``. One JSON line per image goes to ``--output`` (default ``results.jsonl``,
overwritten); a summary goes to stdout and the progress bar to stderr.

Exit codes: 0 every image classified (or none found); 1 some images failed (see their ``error``
in the output); 2 bad usage - missing or unreadable ``--input-dir``, bad URL, bad numbers, an
output file that cannot be opened; 130 interrupted with Ctrl-C (what was finished is written).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from itertools import chain
from urllib.parse import urlsplit

from .discovery import iter_images
from .pipeline import EXIT_INTERRUPTED, Options, run

DEFAULT_WORKERS = 16
DEFAULT_TIMEOUT = 30.0
DEFAULT_OUTPUT = "results.jsonl"


def api_url(value: str) -> str:
    """An http(s) base URL with a host, without a trailing slash."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL with a host, got {value!r}")
    if parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"the API base URL must not have a query or fragment: {value!r}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad port in {value!r}: {exc}") from None
    return value.rstrip("/")


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
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference.case1.fixed",
        description="Send images for classification after preprocessing (rotate 90 degrees, resize to half).",
        epilog="Exit codes: 0 all classified, 1 some images failed, 2 usage error, 130 interrupted.")
    parser.add_argument("url", type=api_url, help="base URL of the classification API, e.g. http://127.0.0.1:8000")
    parser.add_argument("--input-dir", required=True, help="directory with the images")
    parser.add_argument("--recursive", action=argparse.BooleanOptionalAction, default=True,
                        help="also process subdirectories (default: yes)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help=f"JSON-lines file, one line per image, overwritten (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--workers", type=positive_int, default=DEFAULT_WORKERS,
                        help=f"images processed concurrently, i.e. concurrent requests (default: {DEFAULT_WORKERS})")
    parser.add_argument("--timeout", type=positive_seconds, default=DEFAULT_TIMEOUT,
                        help=f"connect and read timeout of each HTTP request, seconds (default: {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--skip-rotation", action="store_true", help="do not rotate")
    parser.add_argument("--skip-resize", action="store_true", help="do not resize")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not os.path.isdir(args.input_dir):
        parser.error(f"--input-dir {args.input_dir!r} is not a directory")
    # Read the first entry now, so an unreadable directory is a usage error, not a crash later.
    paths = iter_images(args.input_dir, recursive=args.recursive,
                        on_error=lambda exc: print(f"skipped: {exc}", file=sys.stderr))
    try:
        first = next(paths, None)
    except OSError as exc:
        parser.error(f"--input-dir {args.input_dir!r} cannot be read: {exc.strerror or exc}")
    try:
        output = open(args.output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        parser.error(f"--output {args.output!r} cannot be written: {exc.strerror or exc}")
    options = Options(args.url, args.workers, args.timeout, rotate=not args.skip_rotation,
                      resize=not args.skip_resize, progress=not args.no_progress)
    with output:
        try:
            summary = run(chain([first] if first is not None else [], paths), options, output)
        except KeyboardInterrupt:  # outside the pool loop (e.g. at start-up): nothing to finish
            return EXIT_INTERRUPTED
    summary.report(sys.stdout)
    print(f"Results: {args.output}", file=sys.stdout)
    return summary.exit_code
