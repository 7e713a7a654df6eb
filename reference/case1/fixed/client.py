"""HTTP calls to the classification API (findings C1-11, C1-23..C1-26), robust to what a server sends.

* One ``requests.Session`` per worker thread (``threading.local``): a ``Session`` is not
  documented as thread-safe, and one per thread keeps one keep-alive connection per worker that
  both ``/api/classify`` and ``/api/stats`` reuse. Every session is closed by :meth:`Client.close`.
* ``timeout`` bounds the *whole* request - connecting, sending, waiting and reading the body - not
  one socket read: a server that trickles its answer a byte at a time is cut off at the deadline by a
  watchdog thread that shuts the connection's socket down (``requests`` timeouts apply per read).
* The body is read up to :data:`MAX_BODY_BYTES` (decoded, so a gzip bomb is cut too), must be UTF-8
  JSON, and the classification must be ``{"class": <non-empty string>, "score": <finite number or
  null>, ...}``; anything else - any other JSON value, invalid Unicode, ``NaN``, a nesting deep enough
  to exhaust the parser - is a :class:`BadResponse` with the reason.
* Retries only where repeating cannot duplicate work: failures to *connect* (the request never left,
  urllib3's ``Retry``), and 429 / 503 answers (the server says it did not do the work). Those honour
  ``Retry-After`` (seconds or an HTTP date) when it fits in the remaining retry budget, else back off
  exponentially; past the budget the answer is reported. A read timeout or another 5xx on a POST is
  not retried - the server may have done the work.
* An error status becomes ``requests.HTTPError`` with the status and the start of the body.
* The duration is measured with ``time.perf_counter()`` around the whole call, so it includes
  reading the body (``Response.elapsed`` stops at the headers) and is a float in seconds.
"""
from __future__ import annotations

import email.utils
import heapq
import itertools
import json
import math
import os
import random
import socket
import threading
import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

CLASSIFY_PATH = "/api/classify"
STATS_PATH = "/api/stats"
CONNECT_RETRIES = 3
BACKOFF_SECONDS = 0.2
MAX_BODY_BYTES = 1 << 20
MAX_BACKOFF_SECONDS = 10.0
RETRY_STATUSES = (429, 503)
DEFAULT_RETRY_BUDGET = 60.0


class BadResponse(requests.RequestException):
    """The API answered 2xx with a body that is not the documented ``{"class", "score"}``."""


class DeadlineExceeded(requests.Timeout):
    """The whole request took longer than its timeout."""


class Aborted(Exception):
    """The client was aborted (Ctrl-C) while waiting to retry: the image is not finished."""


@dataclass(frozen=True)
class Classification:
    cls: str
    score: float | None
    elapsed: float  # seconds, the whole request including the body


# --- the deadline watchdog ------------------------------------------------------------------------

class _Slot:
    """The urllib3 connection a thread is using right now (set by the connection itself)."""

    __slots__ = ("connection",)

    def __init__(self):
        self.connection = None


_local = threading.local()


def _slot() -> _Slot:
    slot = getattr(_local, "slot", None)
    if slot is None:
        slot = _local.slot = _Slot()
    return slot


class _TrackedHTTPConnection(HTTPConnection):
    def request(self, *args, **kwargs):
        _slot().connection = self
        return super().request(*args, **kwargs)


class _TrackedHTTPSConnection(HTTPSConnection):
    def request(self, *args, **kwargs):
        _slot().connection = self
        return super().request(*args, **kwargs)


class _TrackedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _TrackedAdapter(HTTPAdapter):
    """An adapter whose connections record themselves, so the watchdog can find their sockets."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}


class _Watch:
    __slots__ = ("deadline", "slot", "fired", "finished")

    def __init__(self, deadline: float, slot: _Slot):
        self.deadline, self.slot = deadline, slot
        self.fired = self.finished = False


class Watchdog:
    """Shuts down the socket of a request still running at its deadline (one thread per client)."""

    def __init__(self):
        self._heap: list[tuple[float, int, _Watch]] = []
        self._cond = threading.Condition()
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, seconds: float) -> _Watch:
        slot = _slot()
        slot.connection = None
        watch = _Watch(time.monotonic() + seconds, slot)
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name="http-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (watch.deadline, next(self._counter), watch))
            self._cond.notify()
        return watch

    def finish(self, watch: _Watch) -> bool:
        """Mark the request done; True when the watchdog had already cut it."""
        with self._cond:
            watch.finished = True
            return watch.fired

    def _loop(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].finished or self._heap[0][0] <= now):
                    watch = heapq.heappop(self._heap)[2]
                    if not watch.finished:
                        watch.fired = True
                        _shut(watch.slot.connection)
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _shut(connection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # the blocked recv() returns at once; the thread sees EOF
        except OSError:
            pass


# --- reading and checking answers ------------------------------------------------------------------

def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_body(response: requests.Response, limit: int = MAX_BODY_BYTES) -> bytes:
    """The (decoded) body, at most ``limit`` bytes; :class:`BadResponse` when it is longer."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadResponse(f"response body of {declared} bytes exceeds the {limit}-byte limit")
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise BadResponse(f"response body exceeds the {limit}-byte limit")
    return bytes(body)


def parse_json(body: bytes):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadResponse(f"response body is not valid UTF-8: {exc}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadResponse(f"response body is not JSON: {str(exc)[:200]}") from None


def check_classification(payload) -> tuple[str, float | None]:
    """``(class, score)`` from a parsed answer, or :class:`BadResponse`."""
    shown = repr(payload)[:200]
    if not isinstance(payload, dict):
        raise BadResponse(f"unexpected classification response (not an object): {shown}")
    cls, score = payload.get("class"), payload.get("score")
    if not isinstance(cls, str) or not cls:
        raise BadResponse(f"unexpected classification response (no class string): {shown}")
    try:
        cls.encode("utf-8")
    except UnicodeEncodeError:
        raise BadResponse(f"unexpected classification response (class is not valid Unicode): {shown}") from None
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(float(score)):
            raise BadResponse(f"unexpected classification response (score is not a finite number): {shown}")
        score = float(score)
    return cls, score


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _status_error(response: requests.Response, body: bytes) -> requests.HTTPError:
    """``raise_for_status``'s error with the start of the body added: the API says why it refused."""
    try:
        response.raise_for_status()
    except requests.HTTPError as exc:
        text = body[:200].decode("utf-8", "backslashreplace").strip()
        return requests.HTTPError(f"{exc}: {text}" if text else str(exc), response=response)
    raise AssertionError("not an error status")


# --- the client ----------------------------------------------------------------------------------

class Client:
    """Thread-safe facade: each calling thread gets (and keeps) its own session."""

    def __init__(self, base_url: str, timeout: float, retry_budget: float = DEFAULT_RETRY_BUDGET,
                 max_body: int = MAX_BODY_BYTES):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry_budget = retry_budget
        self.max_body = max_body
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._watchdog = Watchdog()
        self._aborted = threading.Event()
        self._closed = False
        # The environment (proxies, CA bundle) is read once here, not on every request: with
        # trust_env, requests looks up ~/.netrc and every proxy variable per call (seen in the profile).
        self._proxies = requests.utils.get_environ_proxies(self.base_url)
        self._verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True

    def _session(self) -> requests.Session:
        if self._closed:
            raise RuntimeError("the client is closed")
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            session.proxies, session.verify = dict(self._proxies), self._verify
            retry = Retry(total=CONNECT_RETRIES, connect=CONNECT_RETRIES, read=False, status=0, other=0,
                          redirect=0, backoff_factor=BACKOFF_SECONDS, raise_on_status=False)
            adapter = _TrackedAdapter(pool_connections=1, pool_maxsize=1, max_retries=retry)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            with self._lock:
                self._sessions.append(session)
            self._local.session = session
        return session

    def _drop_session(self) -> None:
        """Forget this thread's session (its connection was cut); the next call opens a new one."""
        session = getattr(self._local, "session", None)
        if session is not None:
            self._local.session = None
            with self._lock:
                if session in self._sessions:
                    self._sessions.remove(session)
            session.close()

    def _post_once(self, path: str, **kwargs) -> tuple[requests.Response, bytes]:
        """One POST bounded as a whole by ``timeout``; returns the response and its (bounded) body."""
        watch = self._watchdog.start(self.timeout)
        try:
            response = self._session().post(self.base_url + path, timeout=(self.timeout, self.timeout),
                                            stream=True, **kwargs)
            with response:
                body = read_body(response, self.max_body)
        except requests.RequestException:
            if self._watchdog.finish(watch):
                self._drop_session()
                raise DeadlineExceeded(f"request exceeded its {self.timeout:g} s deadline") from None
            raise
        if self._watchdog.finish(watch):  # finished, but the socket may have been cut at the last moment
            self._drop_session()
        return response, body

    def _post(self, path: str, **kwargs) -> tuple[requests.Response, bytes]:
        """POST, retrying 429/503 within the retry budget; raises ``HTTPError`` for error statuses."""
        started = time.monotonic()
        for attempt in itertools.count():
            response, body = self._post_once(path, **kwargs)
            if response.status_code < 400:
                return response, body
            if response.status_code not in RETRY_STATUSES:
                raise _status_error(response, body)
            asked = retry_after(response.headers.get("Retry-After"))
            wait = asked if asked is not None else min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2 ** attempt)
            wait *= 1 if asked is not None else random.uniform(0.5, 1.0)  # jitter spreads the workers
            left = self.retry_budget - (time.monotonic() - started)
            if wait > left:
                error = _status_error(response, body)
                reason = f"Retry-After {asked:g} s" if asked is not None else f"backoff {wait:.1f} s"
                raise requests.HTTPError(f"{error} (gave up after {attempt + 1} attempts: {reason} exceeds the "
                                         f"{max(left, 0):.1f} s left of the retry budget)", response=response)
            if self._aborted.wait(wait):
                raise Aborted()
        raise AssertionError("unreachable")

    def classify(self, jpeg: bytes, magic: float) -> Classification:
        """POST the JPEG; raises ``requests.RequestException`` (incl. ``HTTPError``) on failure."""
        started = time.perf_counter()
        _, body = self._post(CLASSIFY_PATH, data=jpeg, params={"magic": repr(magic)},
                             headers={"Content-Type": "image/jpeg"})
        elapsed = time.perf_counter() - started
        cls, score = check_classification(parse_json(body))
        return Classification(cls, score, elapsed)

    def send_stats(self, elapsed: float, cls: str, image_size: int) -> None:
        """POST one record to the stats endpoint over this thread's session."""
        self._post(STATS_PATH, json={"elapsed": elapsed, "class": cls, "image_size": image_size})

    def abort(self) -> None:
        """Stop waiting to retry (Ctrl-C): the waiting calls raise :class:`Aborted`."""
        self._aborted.set()

    def close(self) -> None:
        self._closed = True
        self._aborted.set()
        self._watchdog.close()
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
