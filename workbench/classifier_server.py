"""A local stand-in for the Case 1 classification API, served on 127.0.0.1 only.

``POST /api/classify`` accepts a JPEG body and exactly one finite ``magic`` query parameter,
sleeps a configurable latency and answers ``{"class": ..., "score": ...}`` derived from the
decoded pixels. ``POST /api/stats`` is what the script's ``send_stats`` calls. Every request is
counted (thread-safe) so tests can check what the server really received.

Python API::

    with serve(latency_ms=30, stats_latency_ms=10) as server:
        requests.post(server.url + "/api/classify", ...)
        server.counters.snapshot()

CLI: ``python -m workbench.classifier_server --port 8000 --latency-ms 30 --stats-latency-ms 10``.
"""
from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import math
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

from PIL import Image

CLASSES = ("cat", "dog", "bird", "car", "tree", "house", "boat", "flower")
CLASSIFY_PATH = "/api/classify"
STATS_PATH = "/api/stats"


@dataclass
class Counters:
    """What the server received. All mutation goes through ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    magic_values: list = field(default_factory=list)  # raw query values of every classify call
    images: list = field(default_factory=list)  # (width, height, mode) of accepted images
    stats_calls: int = 0
    stats_payloads: list = field(default_factory=list)
    connections: int = 0
    in_flight: Counter = field(default_factory=Counter)  # endpoint -> now
    max_in_flight: Counter = field(default_factory=Counter)  # endpoint -> peak

    def enter(self, endpoint: str) -> None:
        with self.lock:
            self.in_flight[endpoint] += 1
            self.max_in_flight[endpoint] = max(self.max_in_flight[endpoint], self.in_flight[endpoint])

    def leave(self, endpoint: str) -> None:
        with self.lock:
            self.in_flight[endpoint] -= 1

    def snapshot(self) -> dict:
        """A JSON-ready copy, consistent at one instant."""
        with self.lock:
            return {
                "accepted": self.accepted,
                "rejected": dict(self.rejected),
                "magic_values": [list(v) for v in self.magic_values],
                "images": [list(i) for i in self.images],
                "stats_calls": self.stats_calls,
                "stats_payloads": list(self.stats_payloads),
                "connections": self.connections,
                "max_in_flight": dict(self.max_in_flight),
            }


def classify_pixels(image: Image.Image) -> tuple[str, float]:
    """Deterministic class and score from the decoded pixels."""
    digest = hashlib.sha256(image.mode.encode() + repr(image.size).encode() + image.tobytes()).digest()
    cls = CLASSES[digest[0] % len(CLASSES)]
    score = round(int.from_bytes(digest[1:5], "big") / 2**32, 4)
    return cls, score


def check_magic(values: list[str]) -> str | None:
    """The reject reason for the ``magic`` query values, or None when it is one finite number."""
    if not values:
        return "magic_missing"
    if len(values) > 1:
        return "magic_multiple"
    try:
        number = float(values[0])
    except ValueError:
        return "magic_not_a_number"
    if not math.isfinite(number):
        return "magic_not_finite"
    return None


def decode_jpeg(body: bytes) -> Image.Image | None:
    """The decoded image when ``body`` is a complete JPEG, else None."""
    try:
        with Image.open(BytesIO(body)) as im:
            if im.format != "JPEG":
                return None
            im.load()
            return im.copy()
    except Exception:  # any decoder failure means "not a JPEG" to the client
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable
    timeout = 10  # idle keep-alive connections are dropped after this
    # Headers and body go out in two writes; with Nagle on, a keep-alive client would wait for a
    # delayed ACK (~40 ms) on every response, an artefact of this stand-in, not of the real API.
    disable_nagle_algorithm = True
    server: "_Server"

    def setup(self) -> None:
        super().setup()
        with self.server.counters.lock:
            self.server.counters.connections += 1

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass

    def _reply(self, status: int, payload: dict, body_delay: float = 0.0) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body_delay:
            self.wfile.flush()
            time.sleep(body_delay)
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        url = urlsplit(self.path)
        body = self._read_body()
        if url.path == CLASSIFY_PATH:
            self._classify(url.query, body)
        elif url.path == STATS_PATH:
            self._stats(body)
        else:
            self._reply(404, {"error": f"no such endpoint: {url.path}"})

    def _reject(self, reason: str, status: int = 400) -> None:
        with self.server.counters.lock:
            self.server.counters.rejected[reason] += 1
        self._reply(status, {"error": reason})

    def _classify(self, query: str, body: bytes) -> None:
        cfg, counters = self.server.config, self.server.counters
        counters.enter("classify")
        try:
            magic = parse_qs(query, keep_blank_values=True).get("magic", [])
            with counters.lock:
                counters.magic_values.append(tuple(magic))
            if cfg.error_status:
                time.sleep(cfg.latency)
                return self._reject("forced_error", cfg.error_status)
            image = decode_jpeg(body)
            if image is None:
                return self._reject("not_jpeg")
            reason = check_magic(magic)
            if reason:
                return self._reject(reason)
            time.sleep(cfg.latency)
            cls, score = classify_pixels(image)
            with counters.lock:
                counters.accepted += 1
                counters.images.append((image.width, image.height, image.mode))
            self._reply(200, {"class": cls, "score": score}, body_delay=cfg.body_delay)
        finally:
            counters.leave("classify")

    def _stats(self, body: bytes) -> None:
        counters = self.server.counters
        counters.enter("stats")
        try:
            try:
                payload = json.loads(body or b"null")
            except ValueError:
                return self._reject("stats_not_json")
            time.sleep(self.server.config.stats_latency)
            with counters.lock:
                counters.stats_calls += 1
                counters.stats_payloads.append(payload)
            self._reply(200, {"ok": True})
        finally:
            counters.leave("stats")


@dataclass
class ServerConfig:
    latency: float = 0.030  # seconds, classify
    stats_latency: float = 0.010  # seconds, stats
    error_status: int = 0  # when set, every classify call answers this status
    body_delay: float = 0.0  # seconds between the response headers and the body


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # one thread per connection; latency does not depend on load
    request_queue_size = 256  # listen backlog: the default 5 resets connections under 64 clients
    config: ServerConfig
    counters: Counters


class ClassifierServer:
    """The server running in a background thread; ``url`` is its base URL."""

    def __init__(self, port: int = 0, latency_ms: float = 30, stats_latency_ms: float = 10,
                 error_status: int = 0, body_delay_ms: float = 0, host: str = "127.0.0.1"):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the classification server listens on loopback only, not {host}")
        self._httpd = _Server((host, port), _Handler)
        self._httpd.config = ServerConfig(latency_ms / 1000, stats_latency_ms / 1000,
                                          error_status, body_delay_ms / 1000)
        self._httpd.counters = Counters()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def counters(self) -> Counters:
        return self._httpd.counters

    @property
    def config(self) -> ServerConfig:
        return self._httpd.config

    def start(self) -> "ClassifierServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="classifier-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "ClassifierServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def serve(**kwargs) -> Iterator[ClassifierServer]:
    """Run a server for the duration of the block (ephemeral port unless ``port`` is given)."""
    server = ClassifierServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local classification API for Case 1 (loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency-ms", type=float, default=30)
    parser.add_argument("--stats-latency-ms", type=float, default=10)
    parser.add_argument("--error-status", type=int, default=0)
    args = parser.parse_args(argv)
    server = ClassifierServer(args.port, args.latency_ms, args.stats_latency_ms, args.error_status)
    print(f"serving on {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server._httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()
        print(json.dumps(server.counters.snapshot()["rejected"]), flush=True)


if __name__ == "__main__":
    main()
