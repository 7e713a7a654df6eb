"""The gunicorn worker of the task service: gthread, with gunicorn's own errors in JSON, request
heads collected by the event loop, every request read under a deadline, and connections closed
where the byte stream can no longer be trusted.

Errors. Gunicorn answers some requests itself, before the application sees them: a request line
or a header over its limits (414, 431), a malformed request (400), an ``Expect`` it does not
support (417), an unsupported transfer coding (501), a request that did not arrive in time (408,
below). It writes those as an HTML page, and its reason phrase does not always match the status
(501 went out as "Bad Request"). This worker writes them in the service's error format
(``errors.error_body``), with the status's own reason phrase and code.

Slow clients (slowloris). Stock gthread hands a connection to a pool thread once its first byte
arrives; the thread then reads the rest of the request line and headers with no time limit, so
as many clients as there are threads, each sending a byte now and then, froze the service. Here
the worker's event loop (one thread, non-blocking sockets) collects the request head and hands
the connection to a pool thread only once the head is complete (or ``HEAD_BUFFER`` bytes long):
a slow head costs a buffer, never a thread. A head not complete ``request_head_timeout_s`` after
the connection opened (on a kept-alive connection: after its first byte) is answered 408 and
the connection closed. The body is read by the application in the pool thread through
``ReadDeadline``: it gets ``request_body_timeout_s``, plus a second for every
``request_min_rate_bps`` bytes received, ``request_read_max_s`` at most; past that the read
raises and the request answers 408 (``validation.body_bytes``). Writes to a client that does not
read wait ``request_body_timeout_s`` at most per send.

What this cannot do, and the deployment must (README of the service, review/case2_api.md): a
client sending its body just above the minimum rate holds a pool thread for up to
``request_read_max_s``, so ``threads`` such clients per worker still delay everyone else by that
much, and ``worker_connections`` idle connections per worker stop it accepting for
``request_head_timeout_s``. Only a reverse proxy that buffers whole requests before passing them
on (nginx: ``proxy_request_buffering on``, the default, with ``client_body_timeout`` and
``client_header_timeout``) takes slow clients off the application's threads entirely; gunicorn's
documentation asks for one in front of its sync and threaded workers for this reason.

Connections. A request whose body the application did not read to its end is marked
``errors.CLOSE_CONNECTION`` (``app.close_if_body_unread``); gunicorn would otherwise try to skip
the rest, and a malformed rest made it write a second, unsolicited ``400`` on a connection whose
client had its answer (a reused connection pairs it with the wrong request). The worker turns the
mark into ``Connection: close``, and any error while skipping an unread body closes the
connection instead of answering again. The lingering close (half-close, drain what the client
still sends, so that its answer is not lost to a reset) runs in the pool thread, not in the
event loop, where gunicorn runs it: one client that never closes its side froze the loop for two
seconds at each such close.

TLS and HTTP/2 are refused at start: they terminate at the reverse proxy (the event loop reads
plain HTTP/1.1 heads).
"""
from __future__ import annotations

import contextlib
import errno
import json
import selectors
import time
from functools import partial
from http import HTTPStatus

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from .config import Config
from .errors import CLOSE_CONNECTION, RequestReadTimeout, error_body, error_code

HEAD_END = b"\r\n\r\n"
# A head is collected by the event loop up to this size; a larger one (gunicorn's limits allow
# about 800 KiB) is parsed on by the pool thread, under the read deadline.
HEAD_BUFFER = 64 * 1024
_RECV = 16 * 1024


def write_json_error(sock, status_int: int, reason: str, message: str) -> None:
    """gunicorn's ``util.write_error``, in the service's format; the status decides the reason
    phrase (gunicorn passed "Bad Request" with its 501)."""
    with contextlib.suppress(ValueError):
        reason = HTTPStatus(status_int).phrase
    body = json.dumps(error_body(error_code(reason), message or reason)).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


class ReadDeadline:
    """What the request parser reads a connection through (gunicorn calls only ``recv``): each
    request may take ``request_body_timeout_s`` plus one second per ``request_min_rate_bps``
    bytes it delivered, ``request_read_max_s`` at most, from the moment a pool thread took it
    up; past that, ``RequestReadTimeout``."""

    def __init__(self, sock, limits: Config):
        self.sock = sock
        self.limits = limits
        self.restart()

    def restart(self) -> None:
        self.started = time.monotonic()
        self.received = 0

    def deadline(self) -> float:
        limits = self.limits
        allowed = limits.request_body_timeout_s + self.received / limits.request_min_rate_bps
        return self.started + min(allowed, limits.request_read_max_s)

    def recv(self, size: int) -> bytes:
        left = self.deadline() - time.monotonic()
        if left <= 0:
            raise RequestReadTimeout(f"request not received within its deadline "
                                     f"({self.received} bytes in {time.monotonic() - self.started:.1f} s)")
        try:
            self.sock.settimeout(min(left, self.limits.request_body_timeout_s))
            data = self.sock.recv(size)
        except TimeoutError:
            raise RequestReadTimeout(f"no data from the client for {min(left, self.limits.request_body_timeout_s):.1f} s") from None
        finally:
            self.sock.settimeout(self.limits.request_body_timeout_s)
        self.received += len(data)
        return data


class BufferedConn(TConn):
    """A connection whose request head the event loop collects (``head``) before a pool thread
    parses it."""

    def __init__(self, cfg, sock, client, server, limits: Config):
        super().__init__(cfg, sock, client, server)
        self.limits = limits
        self.head = bytearray()
        self.reader: ReadDeadline | None = None
        self.closed = False

    def init(self) -> None:
        """In the pool thread, before each request is parsed: the collected head goes first,
        the deadline starts, and every send and receive is bounded."""
        super().init()
        if self.reader is None:
            self.reader = ReadDeadline(self.sock, self.limits)
            self.parser.unreader.sock = self.reader
        self.reader.restart()
        self.sock.settimeout(self.limits.request_body_timeout_s)
        if self.head:
            self.parser.unreader.unread(bytes(self.head))
            self.head = bytearray()

    def close(self, graceful: bool = False) -> None:
        if not self.closed:
            self.closed = True
            super().close(graceful)


def _honour_close_mark(wsgi):
    """Close the connection after the answer when the application marked the request
    (``errors.CLOSE_CONNECTION``): gunicorn's response then says ``Connection: close``."""

    def app(environ, start_response):
        def start(status, headers, exc_info=None):
            if environ.get(CLOSE_CONNECTION):
                force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
                if force_close is not None:
                    force_close()
            return start_response(status, headers, exc_info)

        return wsgi(environ, start)

    return app


def service_limits(wsgi) -> Config:
    """The limits of the application being served (``create_app``'s config), else the
    environment's."""
    config = getattr(wsgi, "extensions", {}).get("task_config")
    return config if isinstance(config, Config) else Config.from_env()


class JsonErrorThreadWorker(ThreadWorker):
    def init_process(self):
        if self.cfg.is_ssl or self.cfg.http2_cleartext != "off":
            raise RuntimeError("this worker serves plain HTTP/1.1: terminate TLS and HTTP/2 at "
                               "the reverse proxy")
        # gunicorn's Worker.handle_error calls util.write_error; this process serves only the
        # task service, so its error writer is replaced for the whole process.
        util.write_error = write_json_error
        super().init_process()

    def load_wsgi(self):
        super().load_wsgi()
        self.limits = service_limits(self.wsgi)
        self.wsgi = _honour_close_mark(self.wsgi)

    # ------------------------------------------------------------------ heads, in the event loop

    def accept(self, listener):
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = BufferedConn(self.cfg, client_sock, client_addr, listener.getsockname(), self.limits)
        self._await_head(conn)

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection has data: the next request's head, collected here too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_head(conn)
        self._read_head(conn, client)

    def _await_head(self, conn: BufferedConn) -> None:
        conn.timeout = time.monotonic() + self.limits.request_head_timeout_s
        self.pending_conns.append(conn)  # in order of timeout: murder_pending expires them
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read_head, conn))

    def _stop_awaiting(self, conn: BufferedConn) -> None:
        self.poller.unregister(conn.sock)
        self.pending_conns.remove(conn)

    def _read_head(self, conn: BufferedConn, sock) -> None:
        try:
            data = sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client left before its request was complete
            self._stop_awaiting(conn)
            self.nr_conns -= 1
            conn.close()
            return
        scanned = max(0, len(conn.head) - len(HEAD_END) + 1)
        conn.head += data
        if conn.head.find(HEAD_END, scanned) < 0 and len(conn.head) < HEAD_BUFFER:
            return
        self._stop_awaiting(conn)
        conn.data_ready = True
        self.enqueue_req(conn)

    def _cap_keepalive(self, deadline):
        """At shutdown, connections still waiting for a head wait no longer than kept-alive
        ones (the order of ``pending_conns`` by timeout is kept)."""
        super()._cap_keepalive(deadline)
        for conn in self.pending_conns:
            conn.timeout = min(conn.timeout, deadline)

    def murder_pending(self):
        """Connections whose head did not come in time: 408 if a request had begun (silence
        otherwise, as for an idle kept-alive connection), then closed. Never a lingering close
        here: this is the event loop."""
        now = time.monotonic()
        while self.pending_conns and self.pending_conns[0].timeout <= now:
            conn = self.pending_conns.popleft()
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            if conn.head:
                self.log.info("request head from %s incomplete after %s s: 408",
                              conn.client, self.limits.request_head_timeout_s)
                with contextlib.suppress(OSError):
                    write_json_error(conn.sock, 408, "", "the request head did not arrive in time")
            conn.close()

    # ------------------------------------------------------------------ requests, in pool threads

    def handle(self, conn):
        keepalive = super().handle(conn)
        if keepalive is False:
            # The lingering close, here rather than in the event loop (finish_request).
            conn.close(graceful=True)
        return keepalive

    def _keepalive_after(self, conn, keepalive):
        try:
            return super()._keepalive_after(conn, keepalive)
        except Exception as exc:  # noqa: BLE001 - the unread rest of a body is malformed or late
            self.log.info("closing %s: the unread body could not be skipped: %s", conn.client, exc)
            return False

    def handle_error(self, req, client, addr, exc):
        if isinstance(exc, RequestReadTimeout):
            self.log.info("request from %s timed out: %s", addr, exc)
            with contextlib.suppress(OSError):
                write_json_error(client, 408, "", "the request did not arrive in time")
            return
        super().handle_error(req, client, addr, exc)
