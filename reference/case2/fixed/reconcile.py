"""The reconciler: brings the image directory back in line with the task table after a crash.

A worker killed at the wrong moment (``kill -9``, OOM, power) can leave two kinds of debris:

* a staged upload (``.upload-<pid>-….tmp``) it never placed: removed once its writer is dead
  (same host) or it is older than ``staged_max_age_s``;
* a placed file ``<id>.<ext>`` whose transaction never committed, so no row points at it.

Files are placed inside the transaction that inserts the row, while it holds the advisory lock
``(LOCK_SPACE, task id)``. The reconciler takes the same lock with ``pg_try_advisory_xact_lock``
before it looks for the row: a transaction still in flight holds the lock, so its file is
skipped (``in_flight``) rather than taken for debris; once the lock is free the transaction has
either committed (the row is visible) or died (the file is an orphan and is removed).

The opposite debris, a row without its file, cannot be produced by the service (the file is
placed and fsynced before COMMIT); the reconciler counts such rows (``rows_without_file``) so
that a disk restored from an old backup shows up, and leaves them alone.

Runs at start-up (the gunicorn master's ``when_ready`` hook, and after a worker died:
``gunicorn_conf.py``) and on demand: ``flask --app reference.case2.fixed.app reconcile``.

One more kind of file waits for a decision: when COMMIT itself fails (the connection dropped,
the server froze), whether the row exists is unknown, so the request keeps the file and hands
it to ``PendingFiles``. That checks it in a connection of its own at once, and again after
``reconcile_retry_s``, doubling up to ``reconcile_retry_max_s``, until the database can tell:
the file converges while the worker lives, not only at its next restart (a worker that dies
first leaves it to the master's reconcile after its exit).
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass

from peewee import Database, fn

from .database import dedicated
from .storage import ImageStorage

log = logging.getLogger(__name__)

# First key of the two-key advisory locks that guard a placed file: "C2" in ASCII.
LOCK_SPACE = 0x4332
BATCH = 1000


@dataclass
class Report:
    staged_removed: int = 0
    staged_kept: int = 0
    orphans_removed: int = 0
    in_flight: int = 0
    files_kept: int = 0
    rows_without_file: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def placement_lock(task_id):
    """The lock of a task's file as an SQL expression, for the creating transaction to take
    before it places the file: the INSERT returns it (``RETURNING …, pg_advisory_xact_lock``),
    so taking it costs no round trip of its own; it is held until COMMIT or ROLLBACK."""
    return fn.pg_advisory_xact_lock(LOCK_SPACE, task_id).alias("placement_locked")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _staged(storage: ImageStorage, max_age_s: float, report: Report) -> None:
    now = time.time()
    for path, pid, mtime in storage.staged_files():
        if now - mtime > max_age_s or not _pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            report.staged_removed += 1
        else:
            report.staged_kept += 1


def _rows(database: Database, ids: list[int]) -> dict[int, str | None]:
    rows: dict[int, str | None] = {}
    for start in range(0, len(ids), BATCH):
        cursor = database.execute_sql("SELECT id, image_ext FROM task WHERE id = ANY(%s)",
                                      (ids[start:start + BATCH],))
        rows.update(cursor.fetchall())
    return rows


KEPT, REMOVED, IN_FLIGHT = "kept", "removed", "in_flight"


def settle_file(database: Database, storage: ImageStorage, task_id: int, ext: str) -> str:
    """Decide one placed file under its advisory lock: ``kept`` (its row exists), ``removed``
    (no row, and no transaction can still create it) or ``in_flight`` (a transaction holds the
    lock: ask again later). Raises when the database cannot be asked."""
    with database.atomic():
        locked = database.execute_sql("SELECT pg_try_advisory_xact_lock(%s, %s)",
                                      (LOCK_SPACE, task_id)).fetchone()[0]
        if not locked:
            return IN_FLIGHT
        row = database.execute_sql("SELECT image_ext FROM task WHERE id = %s",
                                   (task_id,)).fetchone()
        if row is not None and row[0] == ext:
            return KEPT
        storage.remove([(task_id, ext)])
        return REMOVED


_COUNTERS = {KEPT: "files_kept", REMOVED: "orphans_removed", IN_FLIGHT: "in_flight"}


def _remove_if_orphan(database: Database, storage: ImageStorage, task_id: int, ext: str,
                      report: Report) -> None:
    outcome = settle_file(database, storage, task_id, ext)
    setattr(report, _COUNTERS[outcome], getattr(report, _COUNTERS[outcome]) + 1)


def reconcile(database: Database, storage: ImageStorage, staged_max_age_s: float) -> Report:
    report = Report()
    _staged(storage, staged_max_age_s, report)
    placed = storage.placed_files()
    with database.connection_context():
        rows = _rows(database, sorted(placed))
        for task_id, exts in placed.items():
            for ext in exts:
                if rows.get(task_id) == ext:
                    report.files_kept += 1
                else:
                    _remove_if_orphan(database, storage, task_id, ext, report)
        expected = database.execute_sql(
            "SELECT id, image_ext FROM task WHERE image_ext IS NOT NULL").fetchall()
    present = {(task_id, ext) for task_id, exts in storage.placed_files().items() for ext in exts}
    report.rows_without_file = sum((task_id, ext) not in present for task_id, ext in expected)
    return report


def reconcile_app(app, dedicated_connection: bool = False) -> Report:
    """Reconcile the storage and database of a service built by ``create_app``.

    ``dedicated_connection``: use a connection of its own, closed at the end, instead of the
    app's pool (in a gunicorn master, whose pool would otherwise be inherited by the workers
    it forks)."""
    config = app.extensions["task_config"]
    storage: ImageStorage = app.extensions["image_storage"]
    storage.ensure_root()
    database = app.extensions["task_db"]
    if dedicated_connection:
        database = dedicated(database)
    try:
        return reconcile(database, storage, config.staged_max_age_s)
    finally:
        if dedicated_connection:
            database.close()


class PendingFiles:
    """Placed files whose creating COMMIT failed, checked with ``check(task_id, ext)`` (which
    returns ``settle_file``'s outcome or raises) on a daemon thread of this process until it
    says ``kept`` or ``removed``: at once, then after ``first_s`` seconds, doubling up to
    ``max_s``. The thread starts at the first file, in each process (gunicorn forks workers
    from the master that built the app)."""

    def __init__(self, check: Callable[[int, str], str], first_s: float, max_s: float):
        self.check = check
        self.first_s, self.max_s = first_s, max_s
        self._reset()
        ref = weakref.ref(self)  # tests build many apps: the hook must not keep them alive
        os.register_at_fork(after_in_child=lambda: ref() is not None and ref()._reset())

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[tuple[int, str], tuple[float, float]] = {}  # file -> (when, next delay)
        self._thread: threading.Thread | None = None

    def add(self, task_id: int, ext: str) -> None:
        with self._cond:
            self._due[(task_id, ext)] = (time.monotonic(), self.first_s)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pending-files",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def waiting(self) -> list[tuple[int, str]]:
        with self._cond:
            return sorted(self._due)

    def _next_due(self) -> list[tuple[int, str]]:
        with self._cond:
            while True:
                now = time.monotonic()
                due = [f for f, (when, _) in self._due.items() if when <= now]
                if due:
                    return due
                nearest = min((when for when, _ in self._due.values()), default=None)
                self._cond.wait(None if nearest is None else nearest - now)

    def _run(self) -> None:
        while True:
            for file in self._next_due():  # the checks run without the lock: they do I/O
                try:
                    outcome = self.check(*file)
                except Exception as exc:  # noqa: BLE001 - the database may still be away
                    outcome = f"unknown ({type(exc).__name__}: {exc})"
                log.info("file %s.%s of a failed COMMIT: %s", *file, outcome)
                with self._cond:
                    if outcome in (KEPT, REMOVED):
                        self._due.pop(file, None)
                    elif file in self._due:
                        delay = self._due[file][1]
                        self._due[file] = (time.monotonic() + delay, min(2 * delay, self.max_s))


def pending_files_of(app) -> PendingFiles:
    """The ``PendingFiles`` of a service built by ``create_app``: each file is checked in a
    connection of its own (the request's may be the one that failed)."""
    config = app.extensions["task_config"]
    storage: ImageStorage = app.extensions["image_storage"]

    def check(task_id: int, ext: str) -> str:
        database = dedicated(app.extensions["task_db"])
        try:
            with database.connection_context():
                return settle_file(database, storage, task_id, ext)
        finally:
            database.close()

    return PendingFiles(check, config.reconcile_retry_s, config.reconcile_retry_max_s)
