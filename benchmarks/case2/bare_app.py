"""The bare baseline of the Case 2 benchmark: the same SQL as the fixed service, from a minimal
WSGI function (no Flask, no ORM at request time, no validation beyond what the SQL needs).

The statements are generated once, at import, from the fixed service's own models and queries
(peewee's ``.sql()``), so the baseline sends the same text with the same parameters: the
authentication lookup, the page of tasks with their state, the creating transaction (INSERT,
advisory lock, the two counter UPDATEs, between BEGIN and COMMIT) and the claiming UPDATE
(one autocommitted statement, as in the service). Creating also stages the image, fsyncs it
and renames it into place, as the service does. Each server thread keeps one connection of its
own. ``DATABASE_URL`` and ``IMAGE_STORAGE_DIR`` configure it.

    gunicorn -k gthread --threads 4 benchmarks.case2.bare_app:app
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
import threading
import uuid

import psycopg2
from peewee import SQL, PostgresqlDatabase, fn

from reference.case2.fixed.models import CLAIMABLE, STATE, STATS_ROW, Stats, Task, User
from reference.case2.fixed.reconcile import LOCK_SPACE

_BEARER = re.compile(r"bearer +([A-Za-z0-9_-]{20,128})", re.IGNORECASE | re.ASCII)
_TASK_FIELDS = ("id", "free", "metadata", "owner_id", "image_type", "image_ext", "claimed_by_id",
                "claimed_at", "lease_id", "lease_expires_at", "completed_at")


def _statements() -> dict[str, str]:
    """SQL text of each step, as the fixed service's queries render it (placeholders %s)."""
    db = PostgresqlDatabase(None)
    with db.bind_ctx([User, Task, Stats]):
        sql = {
            "auth": User.select().where(User.token_hash == "h").limit(1).sql()[0],
            "page": Task.select(Task, STATE).where((Task.owner == 1) & (Task.id > 0))
            .order_by(Task.id).limit(51).sql()[0],
            "insert": Task.insert(owner=1, metadata="m", image_type="t", image_ext="e")
            .returning(Task.id).sql()[0],
            "count_user": User.update(tasks_number=User.tasks_number + 1)
            .where(User.id == 1).sql()[0],
            "count_total": Stats.update(tasks_created=Stats.tasks_created + 1)
            .where(Stats.id == STATS_ROW).sql()[0],
        }
        oldest = (Task.select(Task.id).where((Task.owner == 1) & CLAIMABLE).order_by(Task.id)
                  .limit(1).for_update("FOR UPDATE SKIP LOCKED"))
        sql["claim"] = (Task.update(free=False, claimed_by=1, claimed_at=fn.now(),
                                    lease_id=uuid.UUID(int=0),
                                    lease_expires_at=fn.now() + SQL("make_interval(secs => %s)",
                                                                    [300]))
                        .where(Task.id == oldest).returning(Task).sql()[0])
    sql["lock"] = "SELECT pg_advisory_xact_lock(%s, %s)"
    return sql


SQL_TEXT = _statements()
_local = threading.local()
STORAGE = os.path.abspath(os.environ.get("IMAGE_STORAGE_DIR", "storage/task_images"))


def _connection():
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg2.connect(os.environ["DATABASE_URL"])
        conn.autocommit = True  # as peewee runs it: statements outside a transaction commit
    return conn


def _json(start_response, status: str, body) -> list[bytes]:
    data = json.dumps(body, default=str).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))])
    return [data]


def _user(environ, cur):
    match = _BEARER.fullmatch(environ.get("HTTP_AUTHORIZATION", ""))
    if match is None:
        return None
    cur.execute(SQL_TEXT["auth"], (hashlib.sha256(match.group(1).encode()).hexdigest(), 1))
    return cur.fetchone()


def _task(row) -> dict:
    task = dict(zip(_TASK_FIELDS + ("state",), row))
    return {"id": task["id"], "meta": task["metadata"], "owner_id": task["owner_id"],
            "image_type": task["image_type"], "state": task["state"],
            "free": task["state"] == "free"}


def app(environ, start_response):
    conn = _connection()
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    with conn.cursor() as cur:
        user = _user(environ, cur)
        if user is None:
            return _json(start_response, "401 Unauthorized", {"error": {"code": "unauthorized"}})
        uid = user[0]
        if (method, path) == ("GET", "/tasks"):
            cur.execute(SQL_TEXT["page"], ("done", "free", "claimed", uid, 0, 51))
            rows = cur.fetchall()
            return _json(start_response, "200 OK", {"items": [_task(r) for r in rows[:50]],
                                                    "next": rows[49][0] if len(rows) > 50 else None})
        if (method, path) == ("POST", "/tasks/claim"):
            cur.execute(SQL_TEXT["claim"], (False, uid, str(uuid.uuid4()), 300, uid, 1))
            row = cur.fetchone()
            if row is None:
                start_response("204 No Content", [])
                return [b""]
            return _json(start_response, "200 OK", {"task": _task(row + ("claimed",))})
        if (method, path) == ("POST", "/tasks"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length))
            data = base64.b64decode(body["image"], validate=True)
            fd, staged = tempfile.mkstemp(dir=STORAGE, prefix=".upload-", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            cur.execute("BEGIN")  # the creating transaction, as the service's atomic() opens it
            cur.execute(SQL_TEXT["insert"], (True, body["meta"], uid, "image/png", "png"))
            task_id = cur.fetchone()[0]
            cur.execute(SQL_TEXT["lock"], (LOCK_SPACE, task_id))
            os.replace(staged, os.path.join(STORAGE, f"{task_id}.png"))
            cur.execute(SQL_TEXT["count_user"], (1, uid))
            cur.execute(SQL_TEXT["count_total"], (1, STATS_ROW))
            cur.execute("COMMIT")
            return _json(start_response, "201 Created", {"id": task_id, "meta": body["meta"]})
    return _json(start_response, "404 Not Found", {"error": {"code": "not_found"}})
