"""A fault-injecting stand-in for the Case 1 API: answers whatever a test scripts, byte for byte.

Unlike :mod:`workbench.classifier_server` (a well-behaved API), this server lets a test decide every
answer: any status, headers and body, a body that trickles in a few bytes at a time, a body far
larger than promised, a connection closed mid-answer. It listens on 127.0.0.1 only and counts the
requests per endpoint.

    def script(endpoint, number):          # endpoint: "classify" | "stats"; number: 1, 2, ...
        return Reply(200, b'{"class": "cat", "score": 0.5}')

    with FaultServer(script) as server:
        ...  server.url, server.calls("classify")

The default script answers like the real API (classify: a fixed class; stats: ``{"ok": true}``).
"""
from __future__ import annotations

import ipaddress
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, Optional
from urllib.parse import urlsplit

OK_CLASSIFY = b'{"class": "cat", "score": 0.5}'
OK_STATS = b'{"ok": true}'


@dataclass
class Reply:
    status: int = 200
    body: bytes = OK_CLASSIFY
    headers: Dict[str, str] = field(default_factory=dict)
    trickle: float = 0.0  # seconds between chunks of the body (headers go out at once)
    chunk: int = 1  # bytes per chunk when trickling
    content_length: Optional[int] = None  # declared length; None: the real one
    close_after: Optional[int] = None  # close the connection after this many body bytes


def default_script(endpoint: str, number: int) -> Reply:
    return Reply(200, OK_CLASSIFY if endpoint == "classify" else OK_STATS)


Script = Callable[[str, int], Reply]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 10
    server: "_Server"

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        endpoint = urlsplit(self.path).path.rsplit("/", 1)[-1]
        with self.server.lock:
            self.server.counts[endpoint] += 1
            number = self.server.counts[endpoint]
        reply = self.server.script(endpoint, number)
        self.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        declared = len(reply.body) if reply.content_length is None else reply.content_length
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        body = reply.body if reply.close_after is None else reply.body[: reply.close_after]
        try:
            if reply.trickle:
                self.wfile.flush()
                for start in range(0, len(body), reply.chunk):
                    if self.server.stopping.is_set():
                        break
                    self.wfile.write(body[start:start + reply.chunk])
                    self.wfile.flush()
                    time.sleep(reply.trickle)
            else:
                self.wfile.write(body)
        except OSError:  # the client gave up: that is what many tests want to see
            self.close_connection = True
            return
        if reply.close_after is not None or declared != len(body):
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


class FaultServer:
    """The scripted server in a background thread; ``url`` is its base URL."""

    def __init__(self, script: Script = default_script, host: str = "127.0.0.1"):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the fault server listens on loopback only, not {host}")
        self._httpd = _Server((host, 0), _Handler)
        self._httpd.script = script
        self._httpd.lock = threading.Lock()
        self._httpd.counts = Counter()
        self._httpd.stopping = threading.Event()
        self._thread = None  # type: Optional[threading.Thread]

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return "http://%s:%d" % (host, port)

    def calls(self, endpoint: str) -> int:
        with self._httpd.lock:
            return self._httpd.counts[endpoint]

    def start(self) -> "FaultServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fault-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
