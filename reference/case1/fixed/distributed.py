"""Beyond one machine: the same job on a Dask cluster, partition by partition, exactly once.

* The client walks the input lazily (:mod:`.discovery`), drops what the index already holds, and
  cuts the rest into partitions of ``partition_size`` images as it goes: at most
  ``2 * workers`` partitions are submitted and not yet collected, so the client never holds all the
  names (the cluster's scheduler holds only the partitions in flight).
* A partition's identity is a hash of its keys, and its task key is derived from it: submitting
  the same partition twice is one task. A worker runs :func:`process_partition` - the
  single-machine loop (:func:`.pipeline.run`) over those images - and writes the results to
  ``<output>.parts/<id>.jsonl`` atomically (a temporary file, ``fsync``, ``os.replace``). If the file
  already exists, the task just returns it: processing a partition is idempotent.
* The client imports each finished part into the index (one transaction, ``INSERT OR IGNORE`` by
  key: the index stays the source of truth and the output is appended from it), then deletes the
  part. At start it first imports parts left by a run that died between a worker's write and the
  client's import.
* A worker that dies costs only its running partition: the scheduler gives the task to another
  worker (its results were never written, or were written whole). A task that kills workers
  repeatedly (``KilledWorker``) is resubmitted once under a new key, then left for the next run:
  its images have no result yet, so a rerun picks them up.

For a real cluster (``--scheduler tcp://...``) the input directory and the output's directory must
be visible at the same paths to the workers (a shared file system); each worker needs this package.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from itertools import islice
from pathlib import Path

from .discovery import Candidate
from .imaging import prepare
from .pipeline import Options, Preparer, _pending, run
from .report import Result, Summary

PART_SUFFIX = ".jsonl"


def partition_id(candidates: list[Candidate]) -> str:
    digest = hashlib.sha256()
    for candidate in candidates:
        digest.update(len(candidate.key).to_bytes(4, "big") + candidate.key)
    return digest.hexdigest()[:32]


def parts_dir_for(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def _row(result: Result) -> str:
    return json.dumps([base64.b64encode(result.key).decode("ascii"), result.error is not None,
                       result.stats_error is not None, result.to_json()])


def process_partition(part: str, items: list[tuple[str, bytes, str | None]], options: dict, parts_dir: str,
                      preparer: Preparer = prepare) -> str:
    """Run on a worker: process the images of one partition into ``parts_dir/<part>.jsonl``."""
    final = os.path.join(parts_dir, part + PART_SUFFIX)
    if os.path.exists(final):
        return final  # done by an earlier attempt of this task
    rows: list[str] = []
    candidates = [Candidate(path, key, problem) for path, key, problem in items]
    run(candidates, Options(**{**options, "progress": False}), journal=None, preparer=preparer,
        sink=lambda r: rows.append(_row(r)))
    fd, tmp = tempfile.mkstemp(prefix=f".{part}.", suffix=".tmp", dir=parts_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write("".join(row + "\n" for row in rows))
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


def _import(journal, summary: Summary, part_file: Path) -> None:
    """Commit a finished part to the index (and so to the output), then delete it."""
    rows, results = [], []
    with open(part_file, encoding="utf-8") as file:
        for text in file:
            key, failed, stats_failed, line = json.loads(text)
            rows.append((base64.b64decode(key), line, failed, stats_failed))
            results.append(json.loads(line))
    new = journal.record(rows)
    if new == len(rows):  # rows already present (an import repeated after a crash) are not counted twice
        for record in results:
            summary.add(Result(record["path"], b"", record["class"], record["score"], record["elapsed"],
                               record["image_size"], record["error"], record["stats_error"]),
                        unexpected=(record["error"] or "").startswith("unexpected "))
    part_file.unlink()


def _partitions(candidates: Iterable[Candidate], size: int) -> Iterator[list[Candidate]]:
    iterator = iter(candidates)
    while batch := list(islice(iterator, size)):
        yield batch


def _cluster(scheduler: str | None, n_workers: int):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="30s"), None
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
    parts_dir.mkdir(exist_ok=True)
    summary = Summary()
    for leftover in sorted(parts_dir.glob("*" + PART_SUFFIX)):  # written, never imported
        _import(journal, summary, leftover)
    own_client, cluster = (None, None) if client is not None else _cluster(scheduler, n_workers)
    client = client or own_client
    task_options = {k: v for k, v in asdict(options).items() if k != "progress"}
    window = 2 * max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    retried: set[str] = set()
    lost = 0
    try:
        queue = as_completed()
        in_flight = 0
        partitions = _partitions(_pending(candidates, journal, summary), partition_size)

        def submit(batch: list[Candidate], attempt: int = 0) -> None:
            part = partition_id(batch)
            items = [(c.path, c.key, c.problem) for c in batch]
            future = client.submit(process_partition, part, items, task_options, str(parts_dir), preparer,
                                   key=f"case1-partition-{part}-{attempt}", retries=0)
            future.batch = batch  # kept on the client only while the task is in flight
            queue.add(future)

        for batch in islice(partitions, window):
            submit(batch)
            in_flight += 1
        for future in queue:
            in_flight -= 1
            try:
                _import(journal, summary, Path(future.result()))
            except KilledWorker:
                part = partition_id(future.batch)
                if part in retried:
                    lost += len(future.batch)
                    print(f"partition {part} killed its workers twice; its {len(future.batch)} images are left "
                          "for the next run", file=sys.stderr)
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
    summary.left_for_rerun = lost
    try:
        parts_dir.rmdir()  # only when empty: nothing is left to import
    except OSError:
        pass
    return summary
