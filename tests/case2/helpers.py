"""Client, database inspector and interleaving hooks for the Case 2 evidence suite."""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import psycopg2
import pytest
import requests

HTTP_TIMEOUT = 10.0
WAIT_TIMEOUT = 10.0

# Small real images (the fixed service decodes what it is sent; the as-given one stores anything).
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
BMP_1PX = base64.b64decode(
    "Qk06AAAAAAAAADYAAAAoAAAAAQAAAAEAAAABABgAAAAAAAQAAADEDgAAxA4AAAAAAAAAAAAA/wAAAA==")
JPEG_4PX = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRT"
    "c4UG1RV19iZ2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2P/wAARCAAEAAQDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQF"
    "BgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcY"
    "GRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWm"
    "p6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAA"
    "AAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAV"
    "YnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOU"
    "lZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIR"
    "AxEAPwDHooorhPqD/9k=")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- the HTTP client


def query_param_auth(user: dict) -> dict:
    """The as-given service's "authentication": the user id as a query parameter."""
    return {"params": {"user_id": user["id"]}}


def bearer_token_auth(user: dict) -> dict:
    """The fixed service's authentication: the token issued at user creation, in a header."""
    return {"headers": {"Authorization": f"Bearer {user['token']}"}}


@dataclass(frozen=True)
class Protocol:
    """What differs between the two services for the same client action (one place)."""

    side: str
    auth: Callable[[dict], dict]
    claim_method: str
    claim_path: str
    none_free: int  # the status of a claim when no task is free
    created: int  # the status of a successful creation
    # The users table as an SQL identifier, quoted as peewee writes it in the statements it
    # sends (so a test can match them) and as hand-written SQL must name it: the as-given
    # service's table is the reserved word "user" (C2-38), the fixed one's "users".
    users_table: str

    def claimed(self, response: requests.Response) -> dict | None:
        """The task a claim handed out, or None."""
        if response.status_code != 200:
            return None
        body = response.json()
        return body if self.side == "as_given" else body["task"]


PROTOCOLS = {
    "as_given": Protocol("as_given", query_param_auth, "GET", "/take_free_task", 404, 200, '"user"'),
    "fixed": Protocol("fixed", bearer_token_auth, "POST", "/tasks/claim", 204, 201, '"users"'),
}


class Api:
    """A small client for the task service; ``protocol.auth(user)`` gives the request kwargs
    that identify ``user``. With a ``contract`` (the fixed service's OpenAPI document), every
    response is checked against it."""

    def __init__(self, base_url: str, protocol: Protocol | Callable[[dict], dict] = query_param_auth,
                 timeout: float = HTTP_TIMEOUT, contract=None):
        if not isinstance(protocol, Protocol):  # a bare auth function: the as-given protocol
            protocol = dataclasses.replace(PROTOCOLS["as_given"], auth=protocol)
        self.base_url = base_url
        self.protocol = protocol
        self.auth = protocol.auth
        self.timeout = timeout
        self.contract = contract

    def request(self, method: str, path: str, user: dict | None = None, **kw) -> requests.Response:
        if user is not None:
            for key, value in self.auth(user).items():
                kw[key] = {**value, **kw.get(key, {})} if isinstance(value, dict) else value
        kw.setdefault("timeout", self.timeout)
        response = requests.request(method, self.base_url + path, **kw)
        if self.contract is not None:
            self.contract.check(method, path, response.status_code,
                                response.headers.get("Content-Type"), response.content)
        return response

    def create_user(self, email: str) -> dict:
        r = self.request("POST", "/users", json={"email": email})
        assert r.status_code in (200, 201), (r.status_code, r.text[:300])  # fixed: 201 Created
        return r.json()

    def post_task(self, user: dict, meta="meta", image: bytes = JPEG_4PX, **kw) -> requests.Response:
        return self.request("POST", "/tasks", user, json={"meta": meta, "image": b64(image)}, **kw)

    def post_task_multipart(self, user: dict, meta: str = "meta", image: bytes = JPEG_4PX,
                            **kw) -> requests.Response:
        return self.request("POST", "/tasks", user,
                            files={"meta": (None, meta.encode("utf-8", "surrogatepass")),
                                   "image": ("image", image, "application/octet-stream")}, **kw)

    def create_task(self, user: dict, meta="meta", image: bytes = JPEG_4PX) -> dict:
        r = self.post_task(user, meta, image)
        assert r.status_code in (200, 201), (r.status_code, r.text[:300])  # fixed: 201 Created
        return r.json()

    def claim(self, user: dict, **kw) -> requests.Response:
        return self.request(self.protocol.claim_method, self.protocol.claim_path, user, **kw)

    def get(self, path: str, user: dict | None = None, **kw) -> requests.Response:
        return self.request("GET", path, user, **kw)

    def post(self, path: str, user: dict | None = None, **kw) -> requests.Response:
        return self.request("POST", path, user, **kw)

    def delete(self, path: str, user: dict | None = None, **kw) -> requests.Response:
        return self.request("DELETE", path, user, **kw)


def wait_until(predicate: Callable[[], object], timeout: float = WAIT_TIMEOUT, what: str = ""):
    """The first true value of ``predicate()``, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s: {what}")
        time.sleep(0.02)


# --------------------------------------------------------------------------- the database


class DbInspector:
    """An autocommit connection of its own, to look at what the service committed; its
    queries name the tables of the service that ``protocol`` describes."""

    def __init__(self, url: str, protocol: Protocol | None = None):
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        self.protocol = protocol or PROTOCOLS["as_given"]
        self.users_table = self.protocol.users_table

    def all(self, sql: str, *params) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def one(self, sql: str, *params):
        rows = self.all(sql, *params)
        assert len(rows) == 1, rows
        return rows[0][0] if len(rows[0]) == 1 else rows[0]

    def tasks(self) -> list[tuple]:
        return self.all('SELECT id, free, metadata, owner_id FROM task ORDER BY id')

    def users(self) -> list[tuple]:
        return self.all(f"SELECT id, email, tasks_number FROM {self.users_table} ORDER BY id")

    def tasks_number(self, user_id: int) -> int:
        return self.one(f"SELECT tasks_number FROM {self.users_table} WHERE id = %s", user_id)

    def activity(self) -> list[dict]:
        """The service's sessions on this database (not ours)."""
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT pid, state, wait_event_type, query FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'")
            return [dict(zip(("pid", "state", "wait_event_type", "query"), r)) for r in cur]

    def wait_for(self, predicate: Callable[[], object], timeout: float = WAIT_TIMEOUT, what: str = ""):
        return wait_until(predicate, timeout, what)

    def lock_waiters(self) -> list[dict]:
        return [a for a in self.activity() if a["wait_event_type"] == "Lock"]

    def close(self):
        self.conn.close()


# --------------------------------------------------------------------------- the service under test


@dataclass
class Service:
    side: str
    module: ModuleType
    api: Api
    db: DbInspector
    workdir: Path
    base_url: str
    errors: list = field(default_factory=list)  # exceptions the views raised (in-process only)
    server: object = None

    @property
    def storage_dir(self) -> Path:
        return self.workdir / "storage" / "task_images"

    def image_path(self, task_id: int, ext: str = "jpg") -> Path:
        return self.storage_dir / f"{task_id}.{ext}"

    def stored_files(self) -> list[str]:
        """Names in the image directory (placed and staged), sorted."""
        return sorted(p.name for p in self.storage_dir.iterdir()) if self.storage_dir.is_dir() else []

    def error_names(self) -> list[str]:
        return [type(e).__name__ for e in self.errors]

    def error_texts(self) -> list[str]:
        return [f"{type(e).__name__}: {e}" for e in self.errors]


# --------------------------------------------------------------------------- interleaving


class Rendezvous:
    """Makes the threads serving matching requests meet at a point inside a peewee call.

    ``install(monkeypatch, owner, attr, when)`` wraps ``owner.attr``; a call in a request
    for which ``when(flask.request, *args)`` is true waits at a barrier of ``parties`` before
    (``where="before"``) or after the real call. Only the first ``parties`` matching calls meet.
    """

    def __init__(self, parties: int = 2, timeout: float = WAIT_TIMEOUT):
        self.barrier = threading.Barrier(parties, timeout=timeout)
        self.parties = parties
        self._lock = threading.Lock()
        self._arrived = 0

    def _take_slot(self) -> bool:
        with self._lock:
            if self._arrived >= self.parties:
                return False
            self._arrived += 1
            return True

    def install(self, monkeypatch, owner, attr: str, when, where: str = "after"):
        import flask

        original = getattr(owner, attr)
        rv = self

        def wrapper(*args, **kwargs):
            matches = flask.has_request_context() and when(flask.request, *args, **kwargs)
            if matches and where == "before" and rv._take_slot():
                rv.barrier.wait()
            result = original(*args, **kwargs)
            if matches and where == "after" and rv._take_slot():
                rv.barrier.wait()
            return result

        monkeypatch.setattr(owner, attr, wrapper)
        return self

    @property
    def met(self) -> bool:
        """Whether all parties reached the meeting point (the interleaving really happened)."""
        return self._arrived == self.parties


class Gate:
    """Holds matching calls until ``open()``; ``reached`` is set when one arrives."""

    def __init__(self, timeout: float = WAIT_TIMEOUT):
        self.reached = threading.Event()
        self._open = threading.Event()
        self.timeout = timeout

    def open(self):
        self._open.set()

    def install(self, monkeypatch, owner, attr: str, when, where: str = "after"):
        import flask

        original = getattr(owner, attr)
        gate = self

        def hold():
            gate.reached.set()
            if not gate._open.wait(gate.timeout):
                raise TimeoutError("gate was never opened")

        def wrapper(*args, **kwargs):
            matches = flask.has_request_context() and when(flask.request, *args, **kwargs)
            if matches and where == "before":
                hold()
            result = original(*args, **kwargs)
            if matches and where == "after":
                hold()
            return result

        monkeypatch.setattr(owner, attr, wrapper)


def in_threads(*calls: Callable[[], object], timeout: float = WAIT_TIMEOUT * 2) -> list:
    """Run the calls concurrently; return their results (exceptions are returned, not raised)."""
    results: list = [None] * len(calls)

    def run(i, c):
        try:
            results[i] = c()
        except Exception as e:  # noqa: BLE001 - reported to the caller
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a concurrent call did not finish in time"
    return results


class QueryCounter:
    """Counts SQL statements the service sends through peewee's ``Database.execute_sql``."""

    def __init__(self):
        self.statements: list[str] = []

    def install(self, monkeypatch):
        import peewee

        original = peewee.Database.execute_sql
        counter = self

        def execute_sql(db, sql, params=None, *args, **kwargs):
            counter.statements.append(sql)
            return original(db, sql, params, *args, **kwargs)

        monkeypatch.setattr(peewee.Database, "execute_sql", execute_sql)
        return self

    @contextlib.contextmanager
    def measure(self):
        start = len(self.statements)
        box = {}
        yield box
        box["statements"] = self.statements[start:]
        box["count"] = len(box["statements"])


def evidence(*finding_ids: str, fixed_pending: str | None = None, present_on: tuple | None = None):
    """Parametrise a test over ``side``: as_given (the defect is observed) and fixed (the
    redesigned service does not have it; pending, with the reason, if ``fixed_pending``).
    ``present_on``: the stacks the as-given defect exists on, when not all ("2020" or "today");
    on the others the as-given test checks that it is absent."""
    return pytest.mark.parametrize("side", [
        pytest.param("as_given", id="as_given",
                     marks=[pytest.mark.finding(f, side="as_given", stacks=present_on)
                            for f in finding_ids]),
        pytest.param("fixed", id="fixed",
                     marks=[pytest.mark.finding(f, side="fixed") for f in finding_ids]
                     + ([pytest.mark.pending(fixed_pending)] if fixed_pending else [])),
    ])
