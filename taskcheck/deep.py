"""Deep checks' data: a snapshot of the service's database and image folder, recorded into the
history (the checkers that judge it, ``checks.check_snapshots``, stay pure).

What is read: the task rows (id, owner) and user rows (id, counter) by the protocol's queries,
the image folder's files, the service's sessions in ``pg_stat_activity`` and the locks they
hold in ``pg_locks``. The checker's own session is left out. Needs psycopg2.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Dict, Optional

from .history import History

SETTLE_S = 1.0  # requests still in flight finish before the look


def _files(image_dir: Path, pattern: str, ignore: str) -> Dict[str, Any]:
    ids, other = [], []
    for name in sorted(os.listdir(image_dir)):
        if ignore and re.search(ignore, name):
            continue
        m = re.search(pattern, name)
        if m:
            ids.append(int(m.group(1)))
        else:
            other.append(name)
    return {"ids": ids, "unmatched": other[:20]}


def snapshot(database_url: Optional[str], image_dir: Optional[Path], deep: Dict[str, str],
             settle_s: float = SETTLE_S) -> Dict[str, Any]:
    """Read everything the deep checks need; errors are recorded, not raised."""
    time.sleep(settle_s)
    snap: Dict[str, Any] = {"errors": {}}
    if image_dir is not None:
        try:
            snap["files"] = _files(Path(image_dir), deep.get("file_pattern") or r"^(\d+)\.",
                                   deep.get("ignore_files") or "")
        except OSError as exc:
            snap["errors"]["files"] = f"{type(exc).__name__}: {exc}"
    if not database_url:
        return snap
    import psycopg2

    try:
        conn = psycopg2.connect(database_url, connect_timeout=10)
    except psycopg2.Error as exc:
        snap["errors"]["database"] = f"{type(exc).__name__}: {exc}".strip()
        return snap
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = '10s'")
            for key, sql in (("tasks", deep.get("tasks_sql")), ("users", deep.get("users_sql"))):
                if not sql:
                    continue
                try:
                    cur.execute(sql)
                    snap[key] = [list(r) for r in cur.fetchall()]
                except psycopg2.Error as exc:
                    snap["errors"][key] = f"{type(exc).__name__}: {exc}".strip()
            cur.execute(
                "SELECT pid, state, coalesce(extract(epoch FROM now() - xact_start), 0), "
                "wait_event_type, left(query, 200) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'")
            snap["activity"] = [{"pid": pid, "state": state, "xact_age_s": round(float(age), 1),
                                 "wait_event_type": wait, "query": query}
                                for pid, state, age, wait, query in cur.fetchall()]
            cur.execute(
                "SELECT l.pid, l.locktype, l.mode, l.granted, c.relname, a.state "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "LEFT JOIN pg_class c ON c.oid = l.relation "
                "WHERE a.datname = current_database() AND l.pid <> pg_backend_pid() "
                "AND a.backend_type = 'client backend' AND l.locktype <> 'virtualxid'")
            snap["locks"] = [{"pid": pid, "locktype": lt, "mode": mode, "granted": granted,
                              "relation": rel, "idle_in_transaction": (state or "").startswith("idle in transaction")}
                             for pid, lt, mode, granted, rel, state in cur.fetchall()]
    finally:
        conn.close()
    return snap


def record(history: History, label: str, database_url: Optional[str], image_dir: Optional[Path],
           deep: Dict[str, str], settle_s: float = SETTLE_S) -> dict:
    return history.event("snapshot", label=label, **snapshot(database_url, image_dir, deep, settle_s))
