"""The bare baseline of the Case 2 benchmark: the same SQL as the fixed service, from a minimal
WSGI function (no Flask, no ORM at request time, no validation beyond what the SQL needs).

The statements are the fixed service's own, compiled once from its peewee queries
(``reference.case2.fixed.prepared``), so the baseline sends the same text with the same
parameters: the authentication lookup, the page of tasks with their state, the creating
transaction (the INSERT that also takes the file's advisory lock, the two counter UPDATEs,
between BEGIN and COMMIT) and the claiming UPDATE (one autocommitted statement, as in the
service). Creating also stages the image, fsyncs it and renames it into place, as the service
does. Each server thread keeps one connection of its own. ``DATABASE_URL`` and
``IMAGE_STORAGE_DIR`` configure it.

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

from reference.case2.fixed.auth import BY_TOKEN
from reference.case2.fixed.models import COUNT_FOR_OWNER, COUNT_IN_TOTAL
from reference.case2.fixed.views.claims import CLAIM
from reference.case2.fixed.views.tasks import INSERT, PAGE

_BEARER = re.compile(r"bearer +([A-Za-z0-9_-]{20,128})", re.IGNORECASE | re.ASCII)
_TASK_FIELDS = ("id", "free", "metadata", "owner_id", "image_type", "image_ext", "claimed_by_id",
                "claimed_at", "lease_id", "lease_expires_at", "completed_at")
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
    token_hash = hashlib.sha256(match.group(1).encode()).hexdigest()
    cur.execute(BY_TOKEN.sql, BY_TOKEN.params({"token_hash": token_hash}))
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
            cur.execute(PAGE.sql, PAGE.params({"user": uid, "after": 0, "limit": 51}))
            rows = cur.fetchall()
            return _json(start_response, "200 OK", {"items": [_task(r) for r in rows[:50]],
                                                    "next": rows[49][0] if len(rows) > 50 else None})
        if (method, path) == ("POST", "/tasks/claim"):
            cur.execute(CLAIM.sql, CLAIM.params({"user": uid, "lease": uuid.uuid4().hex,
                                                 "seconds": 300}))
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
            cur.execute(INSERT.sql, INSERT.params({"user": uid, "meta": body["meta"],
                                                   "image_type": "image/png", "image_ext": "png"}))
            task_id = cur.fetchone()[0]
            os.replace(staged, os.path.join(STORAGE, f"{task_id}.png"))
            cur.execute(COUNT_FOR_OWNER.sql, COUNT_FOR_OWNER.params({"owner": uid}))
            cur.execute(COUNT_IN_TOTAL.sql, COUNT_IN_TOTAL.params({}))
            cur.execute("COMMIT")
            return _json(start_response, "201 Created", {"id": task_id, "meta": body["meta"]})
    return _json(start_response, "404 Not Found", {"error": {"code": "not_found"}})
