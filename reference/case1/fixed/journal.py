"""Durable progress for resumable, exactly-once runs: a SQLite index and the output derived from it.

The index (``<output>.index.sqlite``, WAL mode, ``synchronous=FULL``) is the source of truth. Each
finished image is one row ``(seq, key, line)``: ``key`` is the image's path relative to the input
directory (bytes, unique), ``line`` its JSON result, ``seq`` 1, 2, 3... in the order the rows were
committed (rows are never deleted, so ``seq`` has no gaps). The JSON-lines output is a projection
of the index: line ``k`` of the output is the row with ``seq == k``.

Order of writes: a batch of results is committed to the index first, then its lines are appended to
the output. So after a crash (kill -9, power loss, a full disk) the output can lag behind the index,
end in a partial line, or - if the file was edited - disagree with it, but it can never hold a result
the index does not. :meth:`Journal.open` reconciles: it counts the complete lines after the last
checkpoint (a verified ``(lines, bytes)`` pair stored in the index after an ``fsync`` of the output),
cuts a partial last line, and appends the rows the output is missing. If the output does not match
the index at the checkpoint, it is set aside (renamed, never deleted) and rebuilt from the index.

A rerun therefore skips every image whose key is in the index (:meth:`Journal.done`), never writes a
second line for it and never truncates earlier results. An image that was being processed when the
run died is processed again: its classification and stats requests may reach the API twice (at least
once for the server, exactly once in the output). Memory does not grow with the number of images:
lookups go to the index in batches. One run at a time per output: a second one is refused (a lock
file held with ``flock``).
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

FORMAT = 1
CHECKPOINT_SECONDS = 2.0
LOOKUP_CHUNK = 500
SCAN_CHUNK = 1 << 20


class JournalError(Exception):
    """The output or its index cannot be used as asked (a usage error, not a crash)."""


@dataclass(frozen=True)
class Totals:
    results: int
    failed: int
    stats_failed: int


def index_path_for(output: Path) -> Path:
    return output.with_name(output.name + ".index.sqlite")


class Journal:
    """The index and the output of one run; use as a context manager."""

    def __init__(self, output: str | os.PathLike, config: dict, index: str | os.PathLike | None = None,
                 restart: bool = False):
        self.output = Path(output)
        self.index = Path(index) if index is not None else index_path_for(self.output)
        self.config = config
        self.restart = restart
        self._db: sqlite3.Connection | None = None
        self._out = None
        self._lock = None
        self._lines = 0  # complete lines in the output == highest seq written
        self._bytes = 0  # size of the output up to the end of line self._lines
        self._checkpointed_at = 0.0
        self.set_aside: Path | None = None  # where a disagreeing output was moved

    # --- opening -------------------------------------------------------------------------------

    def __enter__(self) -> "Journal":
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self) -> None:
        lock_path = self.index.with_name(self.index.name + ".lock")
        try:
            self._lock = open(lock_path, "a+b")  # noqa: SIM115 - held until close()
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalError(f"another run is using {self.output} (lock {lock_path})") from None
        except OSError as exc:
            raise JournalError(f"cannot lock {lock_path}: {exc.strerror or exc}") from None
        if self.restart:
            self._discard_previous()
        fresh = not self.index.exists()
        if fresh and self.output.exists() and self.output.stat().st_size > 0:
            raise JournalError(f"{self.output} exists but has no index ({self.index.name}): it was not written by a "
                               "resumable run; choose another --output, or --restart to replace it")
        try:
            self._db = sqlite3.connect(self.index, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a committed batch survives a power loss
            self._db.executescript("""
                CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS results (
                    seq INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, line TEXT NOT NULL,
                    failed INTEGER NOT NULL, stats_failed INTEGER NOT NULL);
            """)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"the index {self.index} cannot be used: {exc}") from None
        self._check_config()
        self._reconcile()

    def _discard_previous(self) -> None:
        for path in (self.index, self.index.with_name(self.index.name + "-wal"),
                     self.index.with_name(self.index.name + "-shm"), self.output):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, **values: str) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", values.items())

    def _check_config(self) -> None:
        wanted = json.dumps({"format": FORMAT, **self.config}, sort_keys=True)
        stored = self._meta("config")
        if stored is None:
            self._set_meta(config=wanted)
        elif stored != wanted:
            raise JournalError(f"{self.output} was started with other settings ({stored}, now {wanted}); "
                               "resume with the same ones, choose another --output, or --restart")

    # --- output reconciliation ---------------------------------------------------------------

    def _row_count(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM results").fetchone()[0]

    def _line(self, seq: int) -> bytes:
        return self._db.execute("SELECT line FROM results WHERE seq = ?", (seq,)).fetchone()[0].encode() + b"\n"

    def _reconcile(self) -> None:
        rows = self._row_count()
        lines, offset = json.loads(self._meta("checkpoint") or "[0, 0]")
        self._out = open(self.output, "a+b")  # noqa: SIM115 - created if missing, closed in close()
        size = os.fstat(self._out.fileno()).st_size
        if not self._checkpoint_holds(lines, offset, size):
            self._rebuild(rows)
            return
        # count the complete lines after the checkpoint; stop at the row count (the output never leads)
        self._out.seek(offset)
        position = chunk_start = offset
        count = lines
        while count < rows:
            chunk = self._out.read(SCAN_CHUNK)
            if not chunk:
                break
            start = 0
            while count < rows:
                newline = chunk.find(b"\n", start)
                if newline < 0:
                    break
                count, start = count + 1, newline + 1
                position = chunk_start + start
            chunk_start += len(chunk)
        self._lines, self._bytes = count, position
        if size != position:  # a partial last line, or lines the index does not hold
            self._out.truncate(position)
        self._append_missing()
        self._checkpoint(force=True)

    def _checkpoint_holds(self, lines: int, offset: int, size: int) -> bool:
        if lines == 0:
            return True
        if size < offset or lines > self._row_count():
            return False
        expected = self._line(lines)
        if offset < len(expected):
            return False
        self._out.seek(offset - len(expected))
        return self._out.read(len(expected)) == expected

    def _rebuild(self, rows: int) -> None:
        """The output disagrees with the index: keep it aside and write it anew from the index."""
        self._out.close()
        if self.output.exists() and self.output.stat().st_size:
            self.set_aside = self.output.with_name(f"{self.output.name}.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(self.output, self.set_aside)
        self._out = open(self.output, "w+b")  # noqa: SIM115
        self._lines = self._bytes = 0
        self._append_missing()
        self._checkpoint(force=True)
        assert self._lines == rows

    def _append_missing(self) -> None:
        self._out.seek(0, os.SEEK_END)
        cursor = self._db.execute("SELECT seq, line FROM results WHERE seq > ? ORDER BY seq", (self._lines,))
        for seq, line in cursor:
            data = line.encode() + b"\n"
            self._out.write(data)
            self._lines, self._bytes = seq, self._bytes + len(data)
        self._out.flush()

    def _checkpoint(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checkpointed_at < CHECKPOINT_SECONDS:
            return
        self._out.flush()
        os.fsync(self._out.fileno())
        self._set_meta(checkpoint=json.dumps([self._lines, self._bytes]))
        self._checkpointed_at = now

    # --- the run's interface --------------------------------------------------------------------

    def done(self, keys: Sequence[bytes]) -> set[bytes]:
        """The subset of ``keys`` already in the index."""
        found: set[bytes] = set()
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start:start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(row[0] for row in self._db.execute(f"SELECT key FROM results WHERE key IN ({marks})", chunk))
        return found

    def record(self, results: Iterable[tuple[bytes, str, bool, bool]]) -> int:
        """Commit ``(key, line, failed, stats_failed)`` rows (a key already present is ignored), then
        append the new lines to the output. Returns how many rows were new."""
        rows = list(results)
        if not rows:
            return 0
        before = self._lines
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR IGNORE INTO results (key, line, failed, stats_failed) VALUES (?, ?, ?, ?)",
                                 rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._append_missing()
        self._checkpoint()
        return self._lines - before

    def totals(self) -> Totals:
        results, failed, stats_failed = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(failed), 0), COALESCE(SUM(stats_failed), 0) FROM results").fetchone()
        return Totals(results, failed, stats_failed)

    def close(self) -> None:
        if self._out is not None and self._db is not None:
            try:
                self._checkpoint(force=True)
            except (OSError, sqlite3.Error):
                pass  # the next open reconciles from the last good checkpoint
        for handle in (self._out, self._db):
            if handle is not None:
                handle.close()
        self._out = self._db = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
