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
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass

from peewee import Database, PostgresqlDatabase

from .storage import ImageStorage

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


def lock_placement(database: Database, task_id: int) -> None:
    """Inside the creating transaction, before placing the file of ``task_id``."""
    database.execute_sql("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, task_id))


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


def _remove_if_orphan(database: Database, storage: ImageStorage, task_id: int, ext: str,
                      report: Report) -> None:
    with database.atomic():
        locked = database.execute_sql("SELECT pg_try_advisory_xact_lock(%s, %s)",
                                      (LOCK_SPACE, task_id)).fetchone()[0]
        if not locked:
            report.in_flight += 1
            return
        row = database.execute_sql("SELECT image_ext FROM task WHERE id = %s",
                                   (task_id,)).fetchone()
        if row is not None and row[0] == ext:
            report.files_kept += 1
            return
        storage.remove([(task_id, ext)])
        report.orphans_removed += 1


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
        database = PostgresqlDatabase(database.database, autoconnect=False,
                                      **database.connect_params)
    try:
        return reconcile(database, storage, config.staged_max_age_s)
    finally:
        if dedicated_connection:
            database.close()

