"""Attacks on the fixed service's HTTP layer, over raw sockets, against the real server
(gunicorn with the service's worker, ``reference/case2/fixed/server.py``): malformed chunked
bodies, clients that send their request slowly, and the errors gunicorn answers itself.

The properties: no 5xx for anything a client sends; a body that cannot be read is a ``400`` in
the service's error format and its connection is closed after that one answer (never a second,
unsolicited answer on it); a slow client cannot hold the service: requests of others are
answered within a bound while it dawdles, and it gets a ``408``.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from .helpers import JPEG_4PX

WAIT = 10.0  # the longest any single socket wait of these tests lasts


@pytest.fixture
def side():
    return "fixed"


class RawConnection:
    """One TCP connection to the service: bytes out as they are, answers parsed by hand so
    that nothing the server sends after an answer is swallowed by a buffer."""

    def __init__(self, port: int, timeout: float = WAIT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            raise EOFError
        self.buf += data

    def response(self) -> tuple[int, dict, bytes]:
        """The next answer: (status, headers with lower-case names, body)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, body

    def rest(self) -> bytes:
        """Whatever the server sends until it closes the connection (a wait over ``WAIT``
        seconds fails the test: the connection was left open)."""
        try:
            while True:
                self._fill()
        except EOFError:
            return self.buf

    def close(self) -> None:
        self.sock.close()


def _request(method: str, path: str, headers: dict, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _multipart_head(boundary: str = "b0undary") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"meta\"\r\n\r\nm\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"i\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()


# Chunked bodies gunicorn cannot deframe: each raises from wsgi.input.read.
MALFORMED_CHUNKED = {
    "invalid chunk size": b"zz\r\n{}\r\n0\r\n\r\n",
    "chunk without its CRLF": b"2\r\n{}XY0\r\n\r\n",
    "trailer line without a colon": b"2\r\n{}\r\n0\r\nno colon here\r\n\r\n",
    "trailer section over the header limit": b"2\r\n{}\r\n0\r\nX-T: " + b"a" * 900_000,
    "client gone mid-body": b"9\r\n{}",  # then the client shuts its sending side down
}


@pytest.mark.finding("C2-12", side="fixed")
def test_malformed_chunked_bodies_are_400_and_the_connection_closes(make_process, inspector):
    proc = make_process("gunicorn", threads=2)
    user = proc.api.create_user("a@example.com")
    auth = {"Authorization": f"Bearer {user['token']}"}
    chunked = {"Transfer-Encoding": "chunked"}
    reading = {  # endpoints that read the body
        "POST /users": ("POST", "/users", {"Content-Type": "application/json"}, b""),
        "POST /tasks, JSON": ("POST", "/tasks", {**auth, "Content-Type": "application/json"}, b""),
        "POST /tasks, multipart": ("POST", "/tasks", {
            **auth, "Content-Type": "multipart/form-data; boundary=b0undary"}, _multipart_head()),
        "POST /tasks/claim": ("POST", "/tasks/claim", {**auth, "Content-Type": "application/json"}, b""),
    }
    problems = []
    for endpoint, (method, path, headers, prefix) in reading.items():
        for case, body in MALFORMED_CHUNKED.items():
            if prefix:  # the multipart body's first part arrives whole, then the framing breaks
                body = b"%x\r\n%b\r\n" % (len(prefix), prefix) + body
            conn = RawConnection(proc.port)
            try:
                conn.send(_request(method, path, {**headers, **chunked}, body))
                if case == "client gone mid-body":
                    conn.sock.shutdown(socket.SHUT_WR)
                status, answer_headers, answer = conn.response()
                error = json.loads(answer)["error"] if answer else {}
                extra = conn.rest()
            finally:
                conn.close()
            if (status, error.get("code"), error.get("field")) != (400, "bad_request", "body") \
                    or answer_headers.get("connection") != "close" or extra:
                problems.append((endpoint, case, status, answer[:120], answer_headers.get("connection"),
                                 extra[:120]))
    assert problems == []
    assert inspector.tasks() == [] and [u[1] for u in inspector.users()] == ["a@example.com"]


@pytest.mark.finding("C2-12", side="fixed")
def test_an_unread_chunked_body_gets_one_answer_then_the_connection_closes(make_process):
    """Endpoints that never read the body answer as usual, and then close: before, gunicorn
    skipped the rest of the body after the answer and, finding it malformed, sent a second,
    unsolicited ``400 Invalid chunk size`` on the same connection."""
    proc = make_process("gunicorn", threads=2)
    user = proc.api.create_user("a@example.com")
    auth = {"Authorization": f"Bearer {user['token']}"}
    cases = {
        "GET /total_tasks_created": ("GET", "/total_tasks_created", auth, 200),
        "POST /tasks without a token": ("POST", "/tasks", {"Content-Type": "application/json"}, 401),
        "POST /users, not JSON": ("POST", "/users", {"Content-Type": "text/plain"}, 415),
    }
    seen = {}
    for name, (method, path, headers, _) in cases.items():
        conn = RawConnection(proc.port)
        try:
            conn.send(_request(method, path, {**headers, "Transfer-Encoding": "chunked"},
                               MALFORMED_CHUNKED["invalid chunk size"]))
            status, answer_headers, _ = conn.response()
            seen[name] = (status, answer_headers.get("connection"), conn.rest())
        finally:
            conn.close()
    assert seen == {name: (expected, "close", b"") for name, (*_, expected) in cases.items()}
    # A well-formed request on a kept-alive connection is not affected.
    conn = RawConnection(proc.port)
    try:
        conn.send(_request("GET", "/total_tasks_created", auth) * 2)
        assert [conn.response()[0], conn.response()[0]] == [200, 200]
    finally:
        conn.close()


@pytest.mark.finding("C2-12", side="fixed")
def test_errors_gunicorn_answers_itself_have_their_own_reason_and_code(make_process):
    from reference.case2.fixed.config import Config
    from reference.case2.fixed.openapi import document

    proc = make_process("gunicorn", threads=1)
    user = proc.api.create_user("a@example.com")
    auth = {"Authorization": f"Bearer {user['token']}"}
    cases = {
        "unknown transfer coding": (_request("POST", "/tasks", {
            **auth, "Transfer-Encoding": "xchunked", "Content-Type": "application/json"}, b"{}"),
            501, "Not Implemented", "not_implemented"),
        "unsupported expectation": (_request("GET", "/tasks", {**auth, "Expect": "teapot"}),
                                    417, "Expectation Failed", "expectation_failed"),
    }
    documented = document(Config())["paths"]
    for name, (raw, status, reason, code) in cases.items():
        conn = RawConnection(proc.port)
        try:
            conn.send(raw)
            while b"\r\n" not in conn.buf:
                conn._fill()
            status_line = conn.buf.split(b"\r\n", 1)[0].decode()
            got, headers, body = conn.response()
        finally:
            conn.close()
        assert status_line == f"HTTP/1.1 {status} {reason}", name
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == code, name
        # Documented for every operation: any request can carry these headers.
        assert all(str(status) in op["responses"] for item in documented.values()
                   for method, op in item.items() if method != "parameters"), name


# --------------------------------------------------------------------------- slow clients

# The worker's read limits, shortened for the test (the service reads them from the environment).
HEAD_TIMEOUT_S, BODY_TIMEOUT_S = 2, 2


@pytest.fixture
def slow_limits(monkeypatch):
    monkeypatch.setenv("REQUEST_HEAD_TIMEOUT_S", str(HEAD_TIMEOUT_S))
    monkeypatch.setenv("REQUEST_BODY_TIMEOUT_S", str(BODY_TIMEOUT_S))
    monkeypatch.setenv("REQUEST_READ_MAX_S", str(3 * BODY_TIMEOUT_S))


class Trickler:
    """Sends ``data`` one byte every ``every`` seconds on its own thread, until told to stop
    or the server closes the connection."""

    def __init__(self, conn: RawConnection, data: bytes, every: float = 0.3):
        self.conn, self.data, self.every = conn, data, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for byte in self.data:
            if self.stop.wait(self.every):
                return
            try:
                self.conn.send(bytes([byte]))
            except OSError:
                return


def _timed_get(port: int, path: str, timeout: float) -> tuple[int, float]:
    conn = RawConnection(port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.send(_request("GET", path, {}))
        return conn.response()[0], time.monotonic() - started
    finally:
        conn.close()


def _answer_after(conn: RawConnection) -> tuple[int, float, bytes]:
    """(status, seconds waited, what follows until close) of the answer a slow client gets."""
    started = time.monotonic()
    status, _, body = conn.response()
    waited = time.monotonic() - started
    return status, waited, json.loads(body)["error"]["code"].encode() + b"|" + conn.rest()


@pytest.mark.finding("C2-05", side="fixed")
def test_slow_request_heads_hold_no_thread_and_end_in_408(make_process, slow_limits):
    """More clients than threads, each with an unfinished request line or header block (some
    still trickling bytes): the one thread keeps serving everybody else, and each slow client
    gets a 408 once its head is late."""
    proc = make_process("gunicorn", threads=1)
    starts = [b"GET /tas", b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Le",
              b"GET /tasks HTTP/1.1\r\nHost: x\r\n"]
    slow = [RawConnection(proc.port) for _ in range(6)]
    tricklers = []
    try:
        for i, conn in enumerate(slow):
            conn.send(starts[i % len(starts)])
            if i >= 3:  # these keep sending a header byte now and then
                tricklers.append(Trickler(conn, b"X-Slow: " + b"a" * 200))
        time.sleep(0.3)  # every slow connection is in
        status, waited = _timed_get(proc.port, "/openapi.json", timeout=WAIT)
        assert status == 200 and waited < HEAD_TIMEOUT_S, waited  # served while they dawdle
        answers = [_answer_after(conn) for conn in slow]
    finally:
        for t in tricklers:
            t.stop.set()
        for conn in slow:
            conn.close()
    assert [(status, rest) for status, _, rest in answers] == [(408, b"request_timeout|")] * 6
    # Each was cut at its deadline (checked once a second by the event loop), not later.
    assert max(waited for _, waited, _ in answers) < HEAD_TIMEOUT_S + 3


@pytest.mark.finding("C2-05", side="fixed")
def test_a_slow_body_holds_a_thread_only_until_its_deadline(make_process, slow_limits, inspector):
    """A complete head with ``Content-Length`` and then one body byte (or a byte now and
    then, far below the minimum rate) takes the only thread, for at most the body's deadline:
    the other client's request is answered after it, and the slow one gets a 408."""
    proc = make_process("gunicorn", threads=1)
    head = _request("POST", "/users", {"Content-Type": "application/json", "Content-Length": "100"})
    stalled, trickling = RawConnection(proc.port), RawConnection(proc.port)
    trickler = None
    try:
        stalled.send(head + b"{")
        trickling.send(head + b"{")
        trickler = Trickler(trickling, b'"email": "slow@example.com"' + b" " * 80)
        time.sleep(0.3)
        status, waited = _timed_get(proc.port, "/openapi.json", timeout=2 * BODY_TIMEOUT_S + WAIT)
        answers = [_answer_after(conn) for conn in (stalled, trickling)]
    finally:
        if trickler is not None:
            trickler.stop.set()
        stalled.close()
        trickling.close()
    assert status == 200
    # At most both slow bodies' deadlines in turn (the one thread), with a margin for the load.
    assert waited < 2 * BODY_TIMEOUT_S + 4, waited
    assert [(s, rest) for s, _, rest in answers] == [(408, b"request_timeout|")] * 2
    assert inspector.users() == []
    # A whole body at a normal pace is not affected.
    assert proc.api.post_task(proc.api.create_user("b@example.com"), image=JPEG_4PX).status_code == 201


# --------------------------------------------------------------------------- processes, threads


def _gunicorn_settings(monkeypatch, **env) -> dict:
    import runpy
    from pathlib import Path

    for name in ("WEB_CONCURRENCY", "GUNICORN_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import reference.case2.fixed as fixed

    return runpy.run_path(str(Path(fixed.__file__).with_name("gunicorn_conf.py")))


@pytest.mark.finding("C2-07", side="fixed")
def test_gunicorn_conf_sizes_processes_and_threads_within_the_database_s_sessions(monkeypatch):
    """Without ``workers`` and ``threads`` gunicorn runs one process of one thread: one slow
    client or one image check stalls the whole service. The configuration gives a process per
    CPU (up to 4) of 8 threads, overridable, and keeps every process's pool of sessions within
    PostgreSQL's default ``max_connections`` (100), with threads no more than a pool's sessions
    (a thread must never wait for a session another thread of its process holds)."""
    import os

    from reference.case2.fixed.config import Config

    settings = _gunicorn_settings(monkeypatch)
    assert settings["workers"] == min(os.cpu_count() or 1, 4) and settings["threads"] == 8
    assert settings["worker_class"].endswith("server.JsonErrorThreadWorker")
    pool = Config().db_max_connections
    assert settings["workers"] * pool < 100 and settings["threads"] <= pool
    settings = _gunicorn_settings(monkeypatch, WEB_CONCURRENCY="3", GUNICORN_THREADS="16")
    assert (settings["workers"], settings["threads"]) == (3, 16)
