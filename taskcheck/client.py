"""The client: semantic actions (create a task, claim one, read the total ...) over a transport,
each recorded as one ``Op`` of the history.

The transport is what differs between drivers: ``RequestsTransport`` (threads, a
``requests.Session`` per thread; the checker) and the Locust driver's one (Locust's
``HttpSession``, so that Locust's statistics see every request). Both return a ``Raw`` answer;
neither raises for HTTP errors, timeouts or refused connections: those are outcomes to record.
"""
from __future__ import annotations

import base64
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import history as hist
from .protocol import Protocol, first

TEXT_TYPES = ("application/json", "text/", "application/problem+json", "application/xml")
KEPT_HEADERS = ("content-type", "content-length", "location", "www-authenticate", "allow",
                "cache-control", "x-content-type-options", "retry-after")
MAX_PAGES = 50  # pages of GET /tasks followed by one listing
# The most of one answer the checker reads: more than any answer of a task service needs (an
# image upload is at most 10 MiB); the rest of a longer one is dropped, not buffered.
MAX_BODY = 16 << 20


class BudgetExhausted(Exception):
    """The run reached its request or time limit; workloads stop where they are."""


@dataclass
class Raw:
    status: Optional[int]
    headers: Dict[str, str]
    content: bytes
    error: Optional[str] = None  # "timeout" | "connection"
    error_text: Optional[str] = None
    truncated: bool = False  # the answer was longer than the transport reads (the rest dropped)


class Budget:
    """Bounds of a run: at most ``max_requests`` requests, none started after ``deadline``."""

    def __init__(self, max_requests: int, deadline: float, clock: Callable[[], float]):
        self.max_requests = max_requests
        self.deadline = deadline
        self.clock = clock
        self.used = 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.used >= self.max_requests:
                raise BudgetExhausted(f"request limit of {self.max_requests} reached")
            if self.clock() >= self.deadline:
                raise BudgetExhausted("time limit reached")
            self.used += 1

    @property
    def exhausted(self) -> bool:
        return self.used >= self.max_requests or self.clock() >= self.deadline


class _Exchange:
    """The deadline of one request in flight: the connection it uses (recorded by
    ``_DeadlineConnection``) is shut down when the deadline passes, which makes whatever read
    or write is blocked on it return at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: Any = None
        self.fired = False
        self.done = False

    def use(self, conn: Any) -> None:
        with self.lock:
            self.conn = conn
            if self.fired:
                _shut_down(conn)

    def fire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.fired = True
            if self.conn is not None:
                _shut_down(self.conn)

    def finish(self) -> None:
        with self.lock:
            self.done = True


def _shut_down(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_in_flight = threading.local()  # .exchange: the _Exchange of this thread's request


def _deadline_pool_classes():
    """urllib3 pool classes whose connections report themselves to the thread's ``_Exchange``
    when a request is sent on them (a kept-alive one) or they connect (a new one)."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def tracked(base):
        class Tracked(base):
            def connect(self):
                super().connect()
                self._report()

            def request(self, *args, **kwargs):
                self._report()
                return super().request(*args, **kwargs)

            def _report(self):
                exchange = getattr(_in_flight, "exchange", None)
                if exchange is not None:
                    exchange.use(self)

        Tracked.__name__ = "Deadline" + base.__name__
        return Tracked

    class DeadlinePool(HTTPConnectionPool):
        ConnectionCls = tracked(HTTPConnection)

    class DeadlineHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = tracked(HTTPSConnection)

    return {"http": DeadlinePool, "https": DeadlineHTTPSPool}


class RequestsTransport:
    """HTTP with ``requests``: one keep-alive session per thread, no redirects followed (a
    redirect could lead away from the allowed address), and every exchange bounded:

    * in time: ``timeout`` is the deadline of the whole exchange (connecting, sending, the
      answer's head and body), not only of each socket wait, so a server that trickles a byte
      now and then cannot hold the checker; past it the connection is cut and the exchange is a
      ``timeout``;
    * in size: at most ``max_body`` bytes of an answer are read (``Raw.truncated`` says the
      rest was dropped, with the connection), so a huge or endless answer costs no more memory
      than that."""

    def __init__(self, base_url: str, timeout: float, budget: Optional[Budget] = None,
                 max_body: int = MAX_BODY):
        import requests  # imported here so that checkers and replays work without it

        self._requests = requests
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.budget = budget
        self.max_body = max_body
        self._pool_classes = _deadline_pool_classes()
        self._local = threading.local()
        self._sessions: List[Any] = []
        self._lock = threading.Lock()

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._requests.Session()
            session.trust_env = False  # no proxy from the environment: the target is the address given
            for prefix in ("http://", "https://"):
                adapter = self._requests.adapters.HTTPAdapter()
                adapter.poolmanager.pool_classes_by_scheme = dict(self._pool_classes)
                session.mount(prefix, adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def send(self, method: str, path: str, name: str, **kw: Any) -> Raw:
        if self.budget is not None:
            self.budget.take()
        req = self._requests
        exchange = _Exchange()
        timer = threading.Timer(self.timeout, exchange.fire)
        timer.daemon = True
        _in_flight.exchange = exchange
        timer.start()
        try:
            r = self._session().request(method, self.base_url + path, timeout=self.timeout,
                                        allow_redirects=False, stream=True, **kw)
            try:
                content, truncated = self._read_body(r)
            finally:
                r.close()
        except req.exceptions.RequestException as exc:
            if exchange.fired or isinstance(exc, req.exceptions.Timeout):
                return Raw(None, {}, b"", "timeout", f"no complete answer within {self.timeout} s: "
                           f"{type(exc).__name__}: {exc}"[:300])
            return Raw(None, {}, b"", "connection", f"{type(exc).__name__}: {exc}"[:300])
        finally:
            exchange.finish()
            timer.cancel()
            _in_flight.exchange = None
        return Raw(r.status_code, {k.lower(): v for k, v in r.headers.items()}, content,
                   truncated=truncated)

    def _read_body(self, r: Any) -> Tuple[bytes, bool]:
        chunks, size = [], 0
        for chunk in r.iter_content(64 * 1024):
            if size + len(chunk) > self.max_body:
                chunks.append(chunk[:self.max_body - size])
                return b"".join(chunks), True  # the rest is dropped with the connection
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), False

    def close(self) -> None:
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()


@dataclass
class Account:
    """A user of the service as the checker knows it."""

    label: str
    email: str
    user_id: Any = None
    credential: Any = None
    task_ids: List[Any] = field(default_factory=list)
    marker: str = ""  # a string put in every meta of this account, to spot it in others' answers


def _decode(raw: Raw, binary: bool, body_limit: int = hist.BODY_LIMIT) -> Dict[str, Any]:
    out: Dict[str, Any] = {"headers": {k: v for k, v in raw.headers.items() if k in KEPT_HEADERS},
                           "length": len(raw.content)}
    if raw.truncated:
        out["over_limit"] = True  # longer than the transport reads: ``length`` is what was read
    ctype = raw.headers.get("content-type", "")
    if binary and raw.status is not None and 200 <= raw.status < 300:
        out["sha256"] = hist.sha256(raw.content)
        return out
    if raw.content and (ctype.startswith(TEXT_TYPES) or not ctype.startswith(("image/", "application/octet"))):
        text = raw.content[:body_limit].decode("utf-8", errors="replace")
        out["text"] = text
        if len(raw.content) > body_limit:
            out["truncated"] = True
    elif raw.content:
        out["sha256"] = hist.sha256(raw.content)
    return out


MAX_ID_TEXT = 200


def _bad_id(value: Any) -> Optional[str]:
    """Why ``value`` cannot be an id the checker keeps and sends back in a path (None when it
    can): an integer (not a bool) or a short string of printable characters that stays one
    path segment. Anything else the server sends (an object, a list, a float, a bool) is a
    shape error, not something to hash or to format into the next URL."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return f"an id of type {type(value).__name__}: {json.dumps(value, default=str)[:80]}"
    if isinstance(value, str) and not (0 < len(value) <= MAX_ID_TEXT and value.isprintable()
                                       and not set(value) & set("/?#%")):
        return f"an id that is not one printable path segment: {value[:80]!r}"
    return None


def _read_id(value: Any, key: str, where: Sequence[str]) -> Dict[str, Any]:
    """``{key: value}`` when ``value`` is a usable id; a ``shape_error`` otherwise."""
    if value is None:
        return {"shape_error": f"no {key.replace('_', ' ')} at {list(where)}"}
    problem = _bad_id(value)
    return {key: value} if problem is None else {"shape_error": f"{key} at {list(where)}: {problem}"}


def _bad_cursor(value: Any) -> Optional[str]:
    """A next-page cursor goes back as a query parameter: a scalar, or None at the end."""
    if value is None or (isinstance(value, (int, str)) and not isinstance(value, bool)
                         and len(str(value)) <= MAX_ID_TEXT):
        return None
    return f"a cursor of type {type(value).__name__}: {json.dumps(value, default=str)[:80]}"


def _json(raw: Raw) -> Any:
    if not raw.content:
        return None
    try:
        return json.loads(raw.content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


class Client:
    """One process of a workload: semantic actions through ``protocol``, recorded in ``history``."""

    def __init__(self, protocol: Protocol, transport: Any, history: hist.History,
                 process: str = "c0", workload: str = ""):
        self.protocol = protocol
        self.transport = transport
        self.history = history
        self.process = process
        self.workload = workload
        self.tags: Dict[str, Any] = {}
        # What an op keeps of an answer: long runs (the load driver) keep less.
        self.body_limit = hist.BODY_LIMIT
        self.ids_limit = 5000

    def fork(self, process: str, workload: Optional[str] = None, **tags: Any) -> "Client":
        c = Client(self.protocol, self.transport, self.history, process, workload or self.workload)
        c.tags = {**self.tags, **tags}
        c.body_limit, c.ids_limit = self.body_limit, self.ids_limit
        return c

    # ------------------------------------------------------------------ one exchange

    def exchange(self, action: str, method: str, path: str, *, actor: Optional[Account] = None,
                 auth: Optional[Dict[str, dict]] = None, name: Optional[str] = None,
                 params: Optional[dict] = None, headers: Optional[dict] = None,
                 json_body: Any = None, data: Any = None, args: Optional[dict] = None,
                 recorded_body: Any = None, binary: bool = False,
                 read: Optional[Callable[[Raw, Any], dict]] = None,
                 none_free: tuple = ()) -> hist.Op:
        """Send one request and record it. ``auth`` (request kwargs) defaults to ``actor``'s
        credential; ``recorded_body`` replaces a large body in the history; ``read`` turns
        the answer into the op's semantic ``value``."""
        params, headers = dict(params or {}), dict(headers or {})
        if auth is None and actor is not None and actor.credential is not None:
            auth = self.protocol.auth(actor.credential)
        for key, extra in (auth or {}).items():
            (params if key == "params" else headers).update(extra)
        kw: Dict[str, Any] = {}
        if params:
            kw["params"] = params
        if headers:
            kw["headers"] = headers
        if json_body is not None:
            kw["json"] = json_body
        if data is not None:
            kw["data"] = data
        request: Dict[str, Any] = {"method": method, "path": path, "endpoint": name or path}
        if params:
            request["query"] = {k: str(v) for k, v in params.items()}
        if headers:
            request["headers"] = headers
        if recorded_body is not None:
            request["json" if json_body is not None else "body"] = recorded_body
        elif json_body is not None:
            request["json"] = hist.summarise_body(json_body)
        elif data is not None:
            request["body"] = hist.summarise_body(data)
        index = self.history.next_index()
        t0 = self.history.now()
        raw = self.transport.send(method, path, name or path, **kw)
        t1 = self.history.now()
        op = hist.Op(index=index, process=self.process, workload=self.workload, action=action,
                     actor=actor.label if actor is not None else None, t0=round(t0, 6),
                     t1=round(t1, 6), request=request, status=raw.status,
                     response=_decode(raw, binary, self.body_limit) if raw.error is None else {},
                     error=raw.error, error_text=raw.error_text,
                     type=hist.outcome(raw.status, raw.error), args=dict(args or {}),
                     tags=dict(self.tags))
        if raw.status in none_free:
            op.type, op.value = hist.OK, {"none_free": True}
        elif raw.error is None and raw.status is not None and 200 <= raw.status < 300 and read:
            try:
                op.value = read(raw, _json(raw)) or {}
            except Exception as exc:  # noqa: BLE001 - an unreadable answer is recorded, not fatal
                op.value = {"shape_error": f"{type(exc).__name__}: {exc}"[:300]}
        return self.history.add(op)

    # ------------------------------------------------------------------ actions

    def create_user(self, account: Account, args: Optional[dict] = None) -> hist.Op:
        p = self.protocol
        ep = p.create_user

        def read(raw, body):
            user_id = first(body, p.user_id_field, raw.headers)
            value = {"user_id": user_id if _bad_id(user_id) is None else None,
                     "credential": p.credential(body, raw.headers)}
            if value["credential"] is None:
                value["shape_error"] = f"no credential at {list(p.credential_field)}"
            elif isinstance(value["credential"], bool) or not isinstance(value["credential"], (int, str)):
                value["shape_error"] = (f"a credential of type {type(value['credential']).__name__} "
                                        f"at {list(p.credential_field)}")
                value["credential"] = None
            elif user_id is not None and _bad_id(user_id) is not None:
                value["shape_error"] = f"user_id at {list(p.user_id_field)}: {_bad_id(user_id)}"
            return value

        op = self.exchange("create_user", ep.method, ep.path, name=ep.path,
                           json_body={p.email_field: account.email},
                           args={"email": account.email, "account": account.label, **(args or {})},
                           read=read)
        if op.type == hist.OK and op.value.get("credential") is not None:
            account.user_id = op.value.get("user_id")
            account.credential = op.value["credential"]
        return op

    def delete_user(self, actor: Account, target: Account, auth: Optional[dict] = None,
                    args: Optional[dict] = None) -> hist.Op:
        ep = self.protocol.delete_user
        return self.exchange("delete_user", ep.method, ep.url_path(user_id=target.user_id),
                             actor=actor, auth=auth, name=ep.path,
                             args={"user": target.label, "owner": target.label, **(args or {})})

    def create_task(self, actor: Account, meta: Any, image: bytes, image_kind: str = "",
                    args: Optional[dict] = None) -> hist.Op:
        p = self.protocol
        ep = p.create_task
        encoded = base64.b64encode(image).decode("ascii")
        digest = hist.sha256(image)
        recorded = {p.meta_field: hist.summarise_body(meta),
                    p.image_field: f"<base64 of {len(image)} bytes, sha256 {digest}>"}

        def read(raw, body):
            return _read_id(first(body, p.task_id_field, raw.headers), "task_id", p.task_id_field)

        op = self.exchange("create_task", ep.method, ep.path, actor=actor, name=ep.path,
                           json_body={p.meta_field: meta, p.image_field: encoded},
                           recorded_body=recorded,
                           args={"meta": meta, "image_sha256": digest, "image_kind": image_kind,
                                 "image_length": len(image), "owner": actor.label, **(args or {})},
                           read=read)
        if op.type == hist.OK and op.value.get("task_id") is not None:
            actor.task_ids.append(op.value["task_id"])
        return op

    def list_tasks(self, actor: Account, auth: Optional[dict] = None, args: Optional[dict] = None,
                   max_pages: int = MAX_PAGES) -> List[hist.Op]:
        """Every page of the caller's list (bounded); one op per page."""
        p = self.protocol
        ep = p.list_tasks
        ops, cursor = [], None

        def read(raw, body):
            items, nxt = p.list_page(body)
            if items is None:
                return {"shape_error": "the answer is not a list of tasks "
                                       f"(list_items={p.list_items!r})"}
            ids = [first(t, p.task_id_field) for t in items if isinstance(t, dict)]
            bad = [i for i in ids if i is not None and _bad_id(i) is not None]
            value = {"task_ids": [i for i in ids if i is not None and _bad_id(i) is None][:self.ids_limit],
                     "items": len(items), "next": nxt if _bad_cursor(nxt) is None else None}
            if bad or _bad_cursor(nxt) is not None:
                value["shape_error"] = (f"{len(bad)} task ids unusable ({_bad_id(bad[0])})" if bad
                                        else f"next cursor: {_bad_cursor(nxt)}")
            return value

        for page in range(max_pages):
            params = {p.list_after_param: cursor} if cursor is not None else None
            op = self.exchange("list_tasks", ep.method, ep.path, actor=actor, auth=auth, name=ep.path,
                               params=params, args={"page": page, **(args or {})}, read=read)
            ops.append(op)
            cursor = op.value.get("next")
            if op.type != hist.OK or cursor is None:
                break
        return ops

    def get_task(self, actor: Account, task_id: Any, owner: str, auth: Optional[dict] = None,
                 args: Optional[dict] = None) -> hist.Op:
        p = self.protocol
        ep = p.get_task

        def read(raw, body):
            value = {"task_id": first(body, p.task_id_field), "meta": first(body, p.task_meta_field),
                     "owner_value": first(body, p.task_owner_field)}
            if value["task_id"] is not None and _bad_id(value["task_id"]) is not None:
                value["shape_error"] = f"task_id at {list(p.task_id_field)}: {_bad_id(value['task_id'])}"
                value["task_id"] = None
            return value

        return self.exchange("get_task", ep.method, ep.url_path(task_id=task_id), actor=actor,
                             auth=auth, name=ep.path, read=read,
                             args={"task_id": task_id, "owner": owner, **(args or {})})

    def get_image(self, actor: Account, task_id: Any, owner: str, auth: Optional[dict] = None,
                  args: Optional[dict] = None) -> hist.Op:
        ep = self.protocol.get_image

        def read(raw, body):
            return {"sha256": hist.sha256(raw.content), "length": len(raw.content),
                    "content_type": raw.headers.get("content-type", "")}

        return self.exchange("get_image", ep.method, ep.url_path(task_id=task_id), actor=actor,
                             auth=auth, name=ep.path, binary=True, read=read,
                             args={"task_id": task_id, "owner": owner, **(args or {})})

    def delete_task(self, actor: Account, task_id: Any, owner: str, auth: Optional[dict] = None,
                    args: Optional[dict] = None) -> hist.Op:
        ep = self.protocol.delete_task
        return self.exchange("delete_task", ep.method, ep.url_path(task_id=task_id), actor=actor,
                             auth=auth, name=ep.path,
                             args={"task_id": task_id, "owner": owner, **(args or {})})

    def claim(self, actor: Account, auth: Optional[dict] = None, args: Optional[dict] = None) -> hist.Op:
        p = self.protocol
        ep = p.claim

        def read(raw, body):
            return _read_id(first(body, p.claim_id_field, raw.headers), "task_id", p.claim_id_field)

        return self.exchange("claim", ep.method, ep.path, actor=actor, auth=auth, name=ep.path,
                             read=read, none_free=p.claim_none_free, args=dict(args or {}))

    def total(self, actor: Optional[Account], args: Optional[dict] = None) -> hist.Op:
        p = self.protocol
        ep = p.total

        def read(raw, body):
            total = first(body, p.total_field)
            if not isinstance(total, int) or isinstance(total, bool):
                return {"shape_error": f"no integer total at {list(p.total_field)}"}
            return {"total": total}

        return self.exchange("total", ep.method, ep.path, actor=actor if p.total_auth else None,
                             name=ep.path, read=read, args=dict(args or {}))

    def raw(self, actor: Optional[Account], method: str, path: str, args: dict,
            name: Optional[str] = None, **kw: Any) -> hist.Op:
        """A request outside the protocol's actions (hostile input); ``args`` must say what it
        is: ``case``, ``expect`` (``reject`` or ``any``) and the ``findings`` it probes."""
        return self.exchange(args.get("action", "probe"), method, path, actor=actor,
                             name=name or path, args={"input": "hostile", **args}, **kw)
