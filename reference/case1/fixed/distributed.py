"""Beyond one machine: the same job on a Dask cluster, partition by partition, exactly once.

* The client walks the input lazily (:mod:`.discovery`), drops what the index already holds, and
  cuts the rest into partitions of ``partition_size`` images as it goes: at most
  ``2 * workers`` partitions are submitted and not yet collected, so the client never holds all the
  names (the cluster's scheduler holds only the partitions in flight).
* A partition's identity is a hash of its keys, and its task key is derived from it: submitting
  the same partition twice is one task. A worker runs :func:`process_partition` - the
  single-machine loop (:func:`.pipeline.run`) over those images - and writes the results to
  ``<output>.parts/<id>.jsonl`` atomically (a temporary file, ``fsync``, ``os.replace``), its last line
  an HMAC-SHA256 of the rest under a key kept in the index (:attr:`.journal.Journal.secret`). If the
  file already exists, the task just returns it: processing a partition is idempotent.
* The client checks each finished part - its HMAC, then every row's shape and that its flags agree
  with its line - and imports it into the index (one transaction, a key with a final result is never
  touched: the index stays the source of truth and the output is appended from it), then deletes the
  part. At start it first imports parts left by a run that died between a worker's write and the
  client's import. A part that does not check out - truncated, edited, forged, or left by another
  index (after ``--restart``) - is set aside (renamed ``*.invalid-<time>``, never imported, never
  deleted) and its partition is processed again.
* A worker that dies costs only its running partition: the scheduler gives the task to another
  worker (its results were never written, or were written whole). A task that kills workers
  repeatedly (``KilledWorker``) is resubmitted once under a new key, then left for the next run:
  its images have no result yet, so a rerun picks them up.

For a real cluster (``--scheduler tcp://...``) the input directory and the output's directory must
be visible at the same paths to the workers (a shared file system); each worker needs this package.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from itertools import islice
from pathlib import Path

from .discovery import Candidate
from .imaging import prepare
from .pipeline import Options, Preparer, _pending, run
from .report import Result, Summary, warn

PART_SUFFIX = ".jsonl"
_LINE_KEYS = {"path", "class", "score", "elapsed", "image_size", "error", "stats_error", "retryable"}


class SchedulerError(Exception):
    """The Dask scheduler cannot be reached."""


class InvalidPart(ValueError):
    """A part file that is not what a worker of this run wrote."""


def partition_id(candidates: list[Candidate]) -> str:
    digest = hashlib.sha256()
    for candidate in candidates:
        digest.update(len(candidate.key).to_bytes(4, "big") + candidate.key)
    return digest.hexdigest()[:32]


def parts_dir_for(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def _row(result: Result) -> str:
    return json.dumps([base64.b64encode(result.key).decode("ascii"), result.error is not None,
                       result.stats_error is not None, result.retryable, result.to_json()])


def _mac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("ascii"), body, hashlib.sha256).hexdigest()


def process_partition(part: str, items: list[tuple[str, bytes, str | None, bool]], options: dict, parts_dir: str,
                      secret: str, preparer: Preparer = prepare) -> str:
    """Run on a worker: process the images of one partition into ``parts_dir/<part>.jsonl``."""
    final = os.path.join(parts_dir, part + PART_SUFFIX)
    if os.path.exists(final):
        return final  # done by an earlier attempt of this task
    rows: list[str] = []
    candidates = [Candidate(path, key, problem, retryable) for path, key, problem, retryable in items]
    run(candidates, Options(**{**options, "progress": False}), journal=None, preparer=preparer,
        sink=lambda r: rows.append(_row(r)))
    body = "".join(row + "\n" for row in rows).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{part}.", suffix=".tmp", dir=parts_dir)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(body + json.dumps({"mac": _mac(secret, body)}).encode("ascii") + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return final


def read_part(part_file: Path, secret: str) -> list[tuple[tuple, dict]]:
    """The rows of a part file, each ``((key, line, failed, stats_failed, retryable), result)``;
    :class:`InvalidPart` unless it is exactly what a worker of this index wrote."""
    data = part_file.read_bytes()
    body, _, last = data.rstrip(b"\n").rpartition(b"\n")
    body = body + b"\n" if body else b""
    try:
        mac = json.loads(last)["mac"]
    except (ValueError, TypeError, KeyError):
        raise InvalidPart("no authentication line at its end (truncated, or not written by a worker)") from None
    if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(secret, body)):
        raise InvalidPart("its HMAC does not match (edited, forged, or left by another index)")
    rows = []
    for number, text in enumerate(body.splitlines(), 1):
        try:
            encoded, failed, stats_failed, retryable, line = json.loads(text)
            key = base64.b64decode(encoded, validate=True)
            record = json.loads(line)
            flags = (failed, stats_failed, retryable)
            if not (key and all(isinstance(f, bool) for f in flags) and isinstance(record, dict)
                    and set(record) - {"path_bytes"} == _LINE_KEYS
                    and flags == (record["error"] is not None, record["stats_error"] is not None,
                                  record["retryable"])):
                raise ValueError("fields disagree")
        except (ValueError, TypeError, binascii.Error) as exc:
            raise InvalidPart(f"row {number} is malformed: {exc}") from None
        rows.append(((key, line, failed, stats_failed, retryable), record))
    return rows


def _set_aside(part_file: Path, reason: str) -> None:
    aside = part_file.with_name(f"{part_file.name}.invalid-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(part_file, aside)
    warn(f"part {part_file.name} is not valid ({reason}): kept as {aside.name}, its images are processed again")


def _import(journal, summary: Summary, part_file: Path) -> bool:
    """Commit a finished part to the index (and so to the output), then delete it; False when the
    part did not check out and was set aside."""
    try:
        rows = read_part(part_file, journal.secret)
    except (InvalidPart, OSError, UnicodeDecodeError) as exc:
        _set_aside(part_file, str(exc))
        return False
    new = journal.record([row for row, _ in rows])
    if new == len(rows):  # rows already present (an import repeated after a crash) are not counted twice
        for _, record in rows:
            summary.add(Result(record["path"], b"", record["class"], record["score"], record["elapsed"],
                               record["image_size"], record["error"], record["stats_error"], record["retryable"]),
                        unexpected=(record["error"] or "").startswith("unexpected "))
    part_file.unlink()
    return True


def _partitions(candidates: Iterable[Candidate], size: int) -> Iterator[list[Candidate]]:
    iterator = iter(candidates)
    while batch := list(islice(iterator, size)):
        yield batch


def _cluster(scheduler: str | None, n_workers: int):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="30s"), None
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise SchedulerError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


def run_distributed(candidates: Iterable[Candidate], options: Options, journal, scheduler: str | None = None,
                    n_workers: int = 2, partition_size: int = 1000, client=None,
                    preparer: Preparer = prepare) -> Summary:
    """Process every candidate not in ``journal`` on a Dask cluster; see the module docstring.

    ``client``: an existing ``dask.distributed.Client`` to use (tests, measurements); otherwise one
    is made for ``scheduler``, or a ``LocalCluster`` of ``n_workers`` processes when ``scheduler``
    is None. ``preparer`` replaces :func:`~.imaging.prepare` on the workers (it must be importable
    there).
    """
    from dask.distributed import as_completed
    from distributed import KilledWorker

    parts_dir = parts_dir_for(journal.output)
    summary = Summary()
    own_client, cluster = (None, None) if client is not None else _cluster(scheduler, n_workers)
    client = client or own_client
    task_options = {k: v for k, v in asdict(options).items() if k != "progress"}
    retried: set[str] = set()
    lost = 0
    try:
        parts_dir.mkdir(exist_ok=True)
        for leftover in sorted(parts_dir.glob("*" + PART_SUFFIX)):  # written, never imported
            _import(journal, summary, leftover)
        window = 2 * max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        queue = as_completed()
        in_flight = 0
        partitions = _partitions(_pending(candidates, journal, summary), partition_size)

        def submit(batch: list[Candidate], attempt: int = 0) -> None:
            part = partition_id(batch)
            items = [(c.path, c.key, c.problem, c.retryable) for c in batch]
            future = client.submit(process_partition, part, items, task_options, str(parts_dir), journal.secret,
                                   preparer, key=f"case1-partition-{part}-{attempt}", retries=0)
            future.batch = batch  # kept on the client only while the task is in flight
            queue.add(future)

        for batch in islice(partitions, window):
            submit(batch)
            in_flight += 1
        for future in queue:
            in_flight -= 1
            try:
                imported = _import(journal, summary, Path(future.result()))
                cause = "its part file did not check out twice"
            except KilledWorker:
                imported, cause = False, "killed its workers twice"
            if not imported:
                part = partition_id(future.batch)
                if part in retried:
                    lost += len(future.batch)
                    warn(f"partition {part} {cause}; its {len(future.batch)} images are left for the next run")
                else:
                    retried.add(part)
                    submit(future.batch, attempt=1)
                    in_flight += 1
            for batch in islice(partitions, max(0, window - in_flight)):
                submit(batch)
                in_flight += 1
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()
        try:
            parts_dir.rmdir()  # only when empty: nothing is left to import
        except OSError:
            pass
    summary.left_for_rerun = lost
    return summary
