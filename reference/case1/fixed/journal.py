"""Durable progress for resumable, exactly-once runs: a SQLite index and the output derived from it.

The index (``<output>.index.sqlite``, WAL mode, ``synchronous=FULL``) is the source of truth. Each
image with a result is one row ``(seq, key, line, pos)``: ``key`` is the image's path relative to the
input directory (bytes, unique), ``line`` its JSON result. A result is *final* (a class, or a failure
of the input itself) or *retryable* (a failure of the server or the machine, see
:func:`.report.is_retryable`). A final row has ``pos`` 1, 2, 3... in the order it became final, and
the JSON-lines output is a projection of the index in two parts:

* the *final part*: line ``k`` is the row with ``pos == k``; it only ever grows - no complete final
  line is ever removed or changed;
* the *tail*: the retryable failures (``pos`` NULL), written after the final part when a run ends,
  so that every input has its line. A rerun retries them (unless told not to): it first cuts the tail
  - lines the index holds, so nothing is lost - and a retried image gets its one line in the final
  part, or in the new tail if it failed again. So the output never has two lines for one image, and a
  temporary failure is not a verdict.

Order of writes: a batch of results is committed to the index first, then its final lines are
appended to the output. So after a crash (kill -9, power loss, a full disk) the output can lag behind
the index or end in a partial line, but it can never hold a final result the index does not.
:meth:`Journal.open` reconciles: from the last checkpoint (a verified ``(lines, bytes)`` pair stored
after an ``fsync`` of the output) it compares each further line with its row, cuts a partial last line
and a tail the index holds, and appends the rows the output is missing.

What it never does is delete complete lines it cannot account for. An output that disagrees with the
index (edited, or an index that is stale: restored from an older copy, or moved without its ``-wal``
file) is set aside - renamed ``<output>.replaced-<time>``, never deleted - and written anew from the
index, which then retries what only the old output had. An output with lines whose index holds no
settings or no results (a zero-length or foreign index) is refused, as one without an index is. An
index that cannot be read - not SQLite, a malformed page, a checkpoint that is not JSON, another
program's tables, another format - is a :class:`JournalError` naming the cause, and a disk that is
full or failing, at start or later, a :class:`CannotRecord` with SQLite's or the system's own words.

A rerun therefore skips every image with a final result (:meth:`Journal.done`), never writes a
second line for it and never truncates earlier results. An image that was being processed when the
run died is processed again: its classification and stats requests may reach the API twice (at least
once for the server, exactly once in the output). Memory does not grow with the number of images:
lookups go to the index in batches. One run at a time per output: a second one is refused (a lock
file held with ``flock``).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

FORMAT = 2
CHECKPOINT_SECONDS = 2.0
LOOKUP_CHUNK = 500
SCAN_CHUNK = 1 << 20
_COLUMNS = ("seq", "key", "line", "failed", "stats_failed", "pos")
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}
_SQLITE_FULL, _SQLITE_IOERR = 13, 10


class JournalError(Exception):
    """The output or its index cannot be used as asked (a usage error, not a crash)."""


class CannotRecord(JournalError):
    """The disk is full or failing: nothing can be recorded now (what was committed is kept)."""


def disk_trouble(exc: BaseException) -> bool:
    """True for a full, read-only or failing disk (``OSError`` or SQLite's ``SQLITE_FULL``/``IOERR``)."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)


@dataclass(frozen=True)
class Totals:
    results: int
    failed: int
    stats_failed: int
    retryable: int = 0  # failures a rerun retries (in the output's tail)


def index_path_for(output: Path) -> Path:
    return output.with_name(output.name + ".index.sqlite")


class Journal:
    """The index and the output of one run; use as a context manager.

    ``retry``: a rerun processes the retryable failures again (default); ``changeable``: settings
    that may differ from the stored ones (the stored value is then updated, e.g. the URL).
    """

    def __init__(self, output: str | os.PathLike, config: dict, index: str | os.PathLike | None = None,
                 restart: bool = False, retry: bool = True, changeable: Iterable[str] = ()):
        self.output = Path(output)
        if self.output.name in ("", ".", ".."):
            raise JournalError(f"{str(output)!r} does not name a file")
        self.index = Path(index) if index is not None else index_path_for(self.output)
        self.config = config
        self.restart = restart
        self.retry = retry
        self.changeable = frozenset(changeable)
        self._db: sqlite3.Connection | None = None
        self._out = None
        self._lock = None
        self._lines = 0  # complete final lines in the output == highest pos written
        self._bytes = 0  # size of the output up to the end of final line self._lines
        self._final = 0  # highest pos in the index
        self._checkpointed_at = 0.0
        self.secret = ""  # per-index key that authenticates Dask part files (see .distributed)
        self.set_aside: Path | None = None  # where a disagreeing output was moved

    # --- opening -------------------------------------------------------------------------------

    def __enter__(self) -> "Journal":
        try:
            self._open()
        except BaseException as exc:
            self.close(finish=False)
            if isinstance(exc, JournalError):
                raise
            if isinstance(exc, (OSError, sqlite3.Error)) and disk_trouble(exc):
                raise CannotRecord(f"cannot write {self.output} or its index: {_cause(exc)}") from None
            if isinstance(exc, sqlite3.DatabaseError):
                raise JournalError(f"the index {self.index} cannot be used: {_cause(exc)}; set it aside, or "
                                   "--restart") from None
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self) -> None:
        if self.output.is_dir():
            raise JournalError(f"{self.output} is a directory, not a file")
        lock_path = self.index.with_name(self.index.name + ".lock")
        try:
            self._lock = open(lock_path, "a+b")  # noqa: SIM115 - held until close()
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalError(f"another run is using {self.output} (lock {lock_path})") from None
        if self.restart:
            self._discard_previous()
        has_lines = self.output.exists() and self.output.stat().st_size > 0
        if has_lines and not self.index.exists():
            raise JournalError(f"{self.output} exists but has no index ({self.index.name}): it was not written by a "
                               "resumable run; choose another --output, or --restart to replace it")
        self._db = sqlite3.connect(self.index, isolation_level=None, check_same_thread=False)
        stored = self._stored_config()
        if stored is None and has_lines:
            raise JournalError(f"{self.output} has results but its index {self.index.name} holds no settings (empty, "
                               "or not this output's): put back the index it was written with, choose another "
                               "--output, or --restart to replace both")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed batch survives a power loss
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS results (
                seq INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, line TEXT NOT NULL,
                failed INTEGER NOT NULL, stats_failed INTEGER NOT NULL, pos INTEGER UNIQUE);
        """)
        self._check_schema()
        self._check_config(stored)
        rows = self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        if rows == 0 and has_lines:
            raise JournalError(f"{self.output} has results but its index {self.index.name} holds none (moved without "
                               f"its {self.index.name}-wal file, or restored from an older copy?): put back the "
                               "index it was written with, choose another --output, or --restart to replace both")
        self._final = self._db.execute("SELECT COALESCE(MAX(pos), 0) FROM results").fetchone()[0]
        self._reconcile()

    def _discard_previous(self) -> None:
        for path in (self.index, self.index.with_name(self.index.name + "-wal"),
                     self.index.with_name(self.index.name + "-shm"), self.output):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def _stored_config(self) -> str | None:
        """The settings stored in the index; None for an empty database. Reading it is also the first
        read of the file, so a file that is not SQLite, or is malformed, fails here."""
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            if tables:
                raise JournalError(f"the index {self.index} is another program's database (tables "
                                   f"{', '.join(sorted(tables))}); choose another --output, or --restart")
            return None
        return self._meta("config")

    def _check_schema(self) -> None:
        columns = tuple(row[1] for row in self._db.execute("PRAGMA table_info(results)"))
        stored_format = self._meta("format")
        if columns != _COLUMNS or stored_format not in (None, str(FORMAT)):
            raise JournalError(f"the index {self.index} has another format ({stored_format or 'unknown'}, columns "
                               f"{', '.join(columns)}; this program writes format {FORMAT}): finish that run with "
                               "the program that started it, choose another --output, or --restart")

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, **values: str) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", values.items())

    def _check_config(self, stored: str | None) -> None:
        wanted = {"format": FORMAT, **self.config}
        if stored is None:
            self._set_meta(format=str(FORMAT), config=json.dumps(wanted, sort_keys=True),
                           secret=secrets.token_hex(16))
        else:
            try:
                previous = json.loads(stored)
            except ValueError:
                raise JournalError(f"the settings stored in {self.index} are not JSON: the index is damaged; "
                                   "--restart to start again") from None
            fixed = {k: v for k, v in wanted.items() if k not in self.changeable}
            if not isinstance(previous, dict) or {k: v for k, v in previous.items()
                                                  if k not in self.changeable} != fixed:
                hint = ", or --change-url if only the server moved" if "url" in wanted else ""
                raise JournalError(f"{self.output} was started with other settings ({stored}, now "
                                   f"{json.dumps(wanted, sort_keys=True)}); resume with the same ones{hint}, "
                                   "choose another --output, or --restart")
            if previous != wanted:
                self._set_meta(config=json.dumps(wanted, sort_keys=True))
        self.secret = self._meta("secret") or ""

    # --- output reconciliation ---------------------------------------------------------------

    def _line(self, pos: int) -> bytes:
        row = self._db.execute("SELECT line FROM results WHERE pos = ?", (pos,)).fetchone()
        return row[0].encode() + b"\n"

    def _tail_lines(self) -> Iterable[bytes]:
        for (line,) in self._db.execute("SELECT line FROM results WHERE pos IS NULL ORDER BY seq"):
            yield line.encode() + b"\n"

    def _checkpoint_value(self) -> tuple[int, int]:
        try:
            lines, offset = json.loads(self._meta("checkpoint") or "[0, 0]")
            if not (isinstance(lines, int) and isinstance(offset, int) and 0 <= lines and 0 <= offset):
                raise ValueError(lines, offset)
        except (ValueError, TypeError):
            raise JournalError(f"the checkpoint stored in {self.index} is unreadable: the index is damaged; set it "
                               "aside, or --restart") from None
        return lines, offset

    def _reconcile(self) -> None:
        lines, offset = self._checkpoint_value()
        self._out = open(self.output, "a+b")  # noqa: SIM115 - created if missing, closed in close()
        size = os.fstat(self._out.fileno()).st_size
        if not self._checkpoint_holds(lines, offset, size):
            self._rebuild()
            return
        # compare each complete line after the checkpoint with its row; stop at the first that differs
        self._out.seek(offset)
        count, position = lines, offset
        while count < self._final:
            expected = self._line(count + 1)
            if self._out.read(len(expected)) != expected:
                break
            count, position = count + 1, position + len(expected)
        self._lines, self._bytes = count, position
        if size != position and not self._only_partial_or_tail(position, size, count == self._final):
            self._rebuild()  # complete lines the index does not account for: never truncated
            return
        if size != position:
            self._out.truncate(position)
        self._append_missing()
        self._checkpoint(force=True)

    def _only_partial_or_tail(self, position: int, size: int, complete: bool) -> bool:
        """Whether the output beyond ``position`` is only a partial line, or (after the whole final
        part) a prefix of the tail the index holds: then cutting it loses nothing."""
        self._out.seek(position)
        rest = self._out.read(SCAN_CHUNK)
        if b"\n" not in rest and size - position <= len(rest):
            return True  # one partial line
        if not complete:
            return False
        self._out.seek(position)
        left = size - position
        for expected in self._tail_lines():
            if left <= 0:
                return True
            chunk = self._out.read(min(len(expected), left))
            if chunk != expected[:len(chunk)]:
                return False
            left -= len(chunk)
        return left <= 0

    def _checkpoint_holds(self, lines: int, offset: int, size: int) -> bool:
        if lines == 0:
            return offset == 0
        if size < offset or lines > self._final:
            return False
        expected = self._line(lines)
        if offset < len(expected):
            return False
        self._out.seek(offset - len(expected))
        return self._out.read(len(expected)) == expected

    def _rebuild(self) -> None:
        """The output disagrees with the index: keep it aside and write it anew from the index."""
        self._out.close()
        if self.output.exists() and self.output.stat().st_size:
            self.set_aside = self.output.with_name(f"{self.output.name}.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
            while self.set_aside.exists():
                self.set_aside = self.set_aside.with_name(self.set_aside.name + "+")
            os.replace(self.output, self.set_aside)
        self._out = open(self.output, "w+b")  # noqa: SIM115
        self._lines = self._bytes = 0
        self._append_missing()
        self._checkpoint(force=True)

    def _append_missing(self) -> None:
        self._out.seek(0, os.SEEK_END)
        cursor = self._db.execute("SELECT pos, line FROM results WHERE pos > ? ORDER BY pos", (self._lines,))
        for pos, line in cursor:
            data = line.encode() + b"\n"
            self._out.write(data)
            self._lines, self._bytes = pos, self._bytes + len(data)
        self._out.flush()

    def _checkpoint(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checkpointed_at < CHECKPOINT_SECONDS:
            return
        self._out.flush()
        os.fsync(self._out.fileno())
        self._set_meta(checkpoint=json.dumps([self._lines, self._bytes]))
        self._checkpointed_at = now

    def _write_tail(self) -> None:
        self._out.seek(0, os.SEEK_END)
        for data in self._tail_lines():
            self._out.write(data)
        self._out.flush()
        os.fsync(self._out.fileno())

    # --- the run's interface --------------------------------------------------------------------

    def done(self, keys: Sequence[bytes]) -> set[bytes]:
        """The subset of ``keys`` not to process again: final results (and retryable failures too
        when ``retry`` is off)."""
        found: set[bytes] = set()
        final_only = " AND pos IS NOT NULL" if self.retry else ""
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start:start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(row[0] for row in self._db.execute(
                f"SELECT key FROM results WHERE key IN ({marks}){final_only}", chunk))
        return found

    def record(self, results: Iterable[tuple]) -> int:
        """Commit ``(key, line, failed, stats_failed[, retryable])`` rows, then append the new final
        lines to the output. A key with a final result is left as it is; a retryable failure replaces
        an earlier retryable failure of the same key and waits in the tail. Returns how many rows
        were added or changed."""
        rows = list(results)
        if not rows:
            return 0
        changed = 0
        final = self._final
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for key, line, failed, stats_failed, *rest in rows:
                retryable = bool(rest and rest[0])
                found = self._db.execute("SELECT pos FROM results WHERE key = ?", (key,)).fetchone()
                if found is not None and found[0] is not None:
                    continue  # final already: exactly once
                position = None if retryable else final + 1
                if found is None:
                    self._db.execute("INSERT INTO results (key, line, failed, stats_failed, pos) VALUES (?, ?, ?, ?, ?)",
                                     (key, line, failed, stats_failed, position))
                else:
                    self._db.execute("UPDATE results SET line = ?, failed = ?, stats_failed = ?, pos = ? WHERE key = ?",
                                     (line, failed, stats_failed, position, key))
                final += position is not None
                changed += 1
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back already (a full disk): keep the real error
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        self._final = final
        self._append_missing()
        self._checkpoint()
        return changed

    def totals(self) -> Totals:
        results, failed, stats_failed, retryable = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(failed), 0), COALESCE(SUM(stats_failed), 0), "
            "COALESCE(SUM(pos IS NULL), 0) FROM results").fetchone()
        return Totals(results, failed, stats_failed, retryable)

    def close(self, finish: bool = True) -> None:
        """Bring the output up to date, write the tail of retryable failures, release the index."""
        if finish and self._out is not None and self._db is not None:
            try:
                self._append_missing()
                self._checkpoint(force=True)
                self._write_tail()
            except (OSError, sqlite3.Error):
                pass  # the next open reconciles from the last good checkpoint
        for handle in (self._out, self._db):
            if handle is not None:
                try:
                    handle.close()
                except (OSError, sqlite3.Error):
                    pass
        self._out = self._db = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None


def _cause(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
