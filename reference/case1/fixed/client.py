"""HTTP calls to the classification API (findings C1-11, C1-23..C1-26), robust to what a server sends.

* One ``requests.Session`` per worker thread (``threading.local``): a ``Session`` is not
  documented as thread-safe, and one per thread keeps one keep-alive connection per worker that
  both ``/api/classify`` and ``/api/stats`` reuse. Every session is closed by :meth:`Client.close`.
* ``timeout`` bounds the *whole* request - connecting (every connect attempt and the pauses between
  them), sending, waiting and reading the body - not one socket read: each connect attempt gets only
  the time left before the deadline, none starts after it, and a watchdog thread shuts the socket
  down at the deadline whatever the request is doing (``requests`` timeouts apply per read, and
  urllib3 would retry a connect with the full timeout each time). Name resolution
  (``getaddrinfo``) cannot be interrupted and is not bounded.
* The body is read up to :data:`MAX_BODY_BYTES` (decoded, so a gzip bomb is cut too), must be UTF-8
  JSON, and the classification must be ``{"class": <non-empty string>, "score": <finite number or
  null>, ...}``; anything else - any other JSON value, invalid Unicode, ``NaN``, a number too large
  for a float, a nesting deep enough to exhaust the parser - is a :class:`BadResponse` with the
  reason. So is a status outside 100..599 (``999``).
* Redirects are never followed: the image is POSTed to the configured server only, never to
  wherever a ``Location`` header points (another origin could receive it). A 3xx is an
  ``HTTPError`` naming where it pointed.
* Credentials in the base URL (``http://user:password@host``) are sent as HTTP basic auth and kept
  out of every URL the libraries see, so no error message (and no result line) can contain them.
* Retries only where repeating cannot duplicate work: failures to *connect* (the request never left,
  urllib3's ``Retry``, within the deadline), and 429 / 503 answers (the server says it did not do the
  work). Those wait at least an exponential backoff with jitter (from :data:`BACKOFF_SECONDS`, so
  ``Retry-After: 0`` or a date in the past cannot make a hot loop), longer when ``Retry-After``
  (seconds or an HTTP date) asks for more, at most :data:`MAX_ATTEMPTS` attempts and within the
  retry budget; past either the answer is reported. A read timeout or another 5xx on a POST is not
  retried - the server may have done the work.
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
import re
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError
from urllib3.util.retry import Retry

CLASSIFY_PATH = "/api/classify"
STATS_PATH = "/api/stats"
CONNECT_RETRIES = 3
BACKOFF_SECONDS = 0.2
MAX_BODY_BYTES = 1 << 20
MAX_BACKOFF_SECONDS = 10.0
MAX_ATTEMPTS = 10  # of one request answered 429/503, whatever Retry-After says
RETRY_STATUSES = (429, 503)
DEFAULT_RETRY_BUDGET = 60.0
MAX_SECONDS = 7 * 24 * 3600.0  # the longest timeout or retry budget (a week); longer ones overflow C timeouts
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²", which int() refuses


class BadResponse(requests.RequestException):
    """The API answered with a status or a body that is not the documented ``{"class", "score"}``."""


class DeadlineExceeded(requests.Timeout):
    """The whole request took longer than its timeout."""


class Aborted(Exception):
    """The client was aborted (Ctrl-C) while waiting to retry, or cut: the image is not finished."""


@dataclass(frozen=True)
class Classification:
    cls: str
    score: float | None
    elapsed: float  # seconds, the whole request including the body


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``(url without user:password, (user, password) or None)``."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


def tls_verify(url: str) -> bool | str:
    """What TLS is verified with: the CA bundle named by ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` (as
    requests reads them), else True. ``ValueError`` for an https URL when that bundle does not exist
    (requests would fail every request with an ``OSError``)."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if not bundle:
        return True
    if urlsplit(url).scheme == "https" and not os.path.exists(bundle):
        raise ValueError(f"the CA bundle {bundle!r} named by REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE does not exist")
    return bundle


# --- the deadline watchdog ------------------------------------------------------------------------

class _Slot:
    """What this thread's request is using right now: set by its connection, read by the watchdog."""

    __slots__ = ("connection", "sock", "deadline")

    def __init__(self):
        self.connection = None
        self.sock = None
        self.deadline: float | None = None

    def left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


_local = threading.local()


def _slot() -> _Slot:
    slot = getattr(_local, "slot", None)
    if slot is None:
        slot = _local.slot = _Slot()
    return slot


class _DeadlineConnection:
    """Connection mixin: a new connection gets only the time left before the request's deadline.

    urllib3 gives every connect attempt the whole connect timeout and retries it; here an attempt
    that would start after the deadline fails at once, a started one is cut short at it, and the raw
    socket is published to the watchdog as soon as it exists (also while TLS is being negotiated).
    """

    def _new_conn(self):
        slot = _slot()
        left = slot.left()
        if left is not None:
            if left <= 0:
                raise ConnectTimeoutError(self, "the request's deadline passed before connecting")
            if self.timeout is None or not isinstance(self.timeout, (int, float)) or self.timeout > left:
                self.timeout = left
        sock = super()._new_conn()
        slot.sock = sock
        left = slot.left()
        if left is not None and left <= 0:  # the watchdog may have fired before it could see this socket
            _shut_socket(sock)
        return sock

    def request(self, *args, **kwargs):
        _slot().connection = self
        return super().request(*args, **kwargs)


class _TrackedHTTPConnection(_DeadlineConnection, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_DeadlineConnection, HTTPSConnection):
    pass


class _TrackedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _TrackedAdapter(HTTPAdapter):
    """An adapter whose connections record themselves, so the watchdog can find their sockets."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}


class _Session(requests.Session):
    """A session that never follows a redirect, not even to look at it: with ``allow_redirects=False``
    requests still parses the ``Location`` (for ``Response.next``), and ``http://[::1`` raises a
    ``ValueError`` from deep inside it."""

    def resolve_redirects(self, *args, **kwargs):
        return iter(())


class _DeadlineRetry(Retry):
    """urllib3's connect retries, never pausing past the deadline of the request being retried."""

    def get_backoff_time(self) -> float:
        backoff = super().get_backoff_time()
        left = _slot().left()
        return backoff if left is None else max(0.0, min(backoff, left))


class _Watch:
    __slots__ = ("deadline", "slot", "fired", "finished")

    def __init__(self, deadline: float, slot: _Slot):
        self.deadline, self.slot = deadline, slot
        self.fired = self.finished = False

    def expired(self) -> bool:
        return self.fired or time.monotonic() >= self.deadline


class Watchdog:
    """Shuts down the socket of a request still running at its deadline (one thread per client)."""

    WAIT_SLICE = 3600.0  # Condition.wait() refuses timeouts beyond threading.TIMEOUT_MAX

    def __init__(self):
        self._heap: list[tuple[float, int, _Watch]] = []
        self._cond = threading.Condition()
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, seconds: float) -> _Watch:
        slot = _slot()
        watch = _Watch(time.monotonic() + min(seconds, MAX_SECONDS), slot)
        slot.connection = slot.sock = None
        slot.deadline = watch.deadline
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
            watch.slot.deadline = None
            return watch.fired

    def cut_all(self) -> None:
        """Shut the sockets of every request running now (a second Ctrl-C)."""
        with self._cond:
            for _, _, watch in self._heap:
                if not watch.finished:
                    watch.fired = True
                    _shut(watch.slot)

    def _loop(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].finished or self._heap[0][0] <= now):
                    watch = heapq.heappop(self._heap)[2]
                    if not watch.finished:
                        watch.fired = True
                        _shut(watch.slot)
                self._cond.wait(min(self._heap[0][0] - now, self.WAIT_SLICE) if self._heap else None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _shut(slot: _Slot) -> None:
    """Shut the socket of the slot's request: the one it connected, or the kept-alive one it reuses."""
    _shut_socket(slot.sock if slot.sock is not None else getattr(slot.connection, "sock", None))


def _shut_socket(sock) -> None:
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
    declared = response.headers.get("Content-Length", "").strip()
    if _DIGITS.fullmatch(declared) and int(declared) > limit:
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
        try:
            finite = not isinstance(score, bool) and isinstance(score, (int, float)) and math.isfinite(float(score))
        except OverflowError:  # an integer with hundreds of digits
            finite = False
        if not finite:
            raise BadResponse(f"unexpected classification response (score is not a finite number): {shown}")
        score = float(score)
    return cls, score


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value):
        return float(value)  # inf for hundreds of digits: beyond any budget
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _body_start(body: bytes) -> str:
    return body[:200].decode("utf-8", "backslashreplace").strip()


def _status_error(response: requests.Response, body: bytes) -> requests.RequestException:
    """The error for a status other than 2xx: what the status means, and the start of the body."""
    status = response.status_code
    reason = response.reason
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "backslashreplace")
    if not 100 <= status <= 599:
        return BadResponse(f"invalid HTTP status {status} {reason or ''}".rstrip())
    if 300 <= status < 400:
        location = response.headers.get("Location", "")
        message = f"{status} {reason}: redirect to {location[:200]!r} not followed (the image is only sent to {response.url})"
    elif status < 300:
        message = f"{status} {reason}: unexpected informational status"
    else:
        kind = "Client" if status < 500 else "Server"
        message = f"{status} {kind} Error: {reason} for url: {response.url}"
    text = _body_start(body)
    return requests.HTTPError(f"{message}: {text}" if text else message, response=response)


# --- the client ----------------------------------------------------------------------------------

class Client:
    """Thread-safe facade: each calling thread gets (and keeps) its own session."""

    def __init__(self, base_url: str, timeout: float, retry_budget: float = DEFAULT_RETRY_BUDGET,
                 max_body: int = MAX_BODY_BYTES, verify: bool | str | None = None, proxies: dict | None = None):
        self.base_url, self._auth = split_credentials(base_url.rstrip("/"))
        self.timeout = min(timeout, MAX_SECONDS)
        self.retry_budget = min(retry_budget, MAX_SECONDS)
        self.max_body = max_body
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._watchdog = Watchdog()
        self._aborted = threading.Event()
        self._cut = threading.Event()
        self._closed = False
        # The environment (proxies, CA bundle) is read once here (the CLI checks the bundle first), not on
        # every request: with trust_env, requests looks up ~/.netrc and every proxy variable per call.
        self._proxies = proxies if proxies is not None else requests.utils.get_environ_proxies(self.base_url)
        self._verify = tls_verify(self.base_url) if verify is None else verify

    def _session(self) -> requests.Session:
        if self._closed:
            raise RuntimeError("the client is closed")
        session = getattr(self._local, "session", None)
        if session is None:
            session = _Session()
            session.trust_env = False
            session.proxies, session.verify, session.auth = dict(self._proxies), self._verify, self._auth
            retry = _DeadlineRetry(total=CONNECT_RETRIES, connect=CONNECT_RETRIES, read=False, status=0, other=0,
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
        if self._cut.is_set():
            raise Aborted()
        watch = self._watchdog.start(self.timeout)
        try:
            response = self._session().post(self.base_url + path, timeout=(self.timeout, self.timeout),
                                            stream=True, allow_redirects=False, **kwargs)
            with response:
                body = read_body(response, self.max_body)
        except requests.RequestException:
            fired = self._watchdog.finish(watch)
            if self._cut.is_set():
                self._drop_session()
                raise Aborted() from None
            if fired or watch.expired():
                self._drop_session()
                raise DeadlineExceeded(f"request exceeded its {self.timeout:g} s deadline") from None
            raise
        except BaseException:
            self._watchdog.finish(watch)
            raise
        if self._watchdog.finish(watch):  # finished, but the socket may have been cut at the last moment
            self._drop_session()
        return response, body

    def _post(self, path: str, **kwargs) -> tuple[requests.Response, bytes]:
        """POST, retrying 429/503 within the retry budget; raises ``HTTPError`` for error statuses."""
        started = time.monotonic()
        for attempt in range(MAX_ATTEMPTS):
            response, body = self._post_once(path, **kwargs)
            if 200 <= response.status_code < 300:
                return response, body
            if response.status_code not in RETRY_STATUSES:
                raise _status_error(response, body)
            asked = retry_after(response.headers.get("Retry-After"))
            # never less than the exponential backoff: Retry-After 0 (or a past date) is no licence to hammer
            backoff = min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2 ** attempt) * random.uniform(0.5, 1.0)
            wait = backoff if asked is None else max(asked, backoff)
            left = self.retry_budget - (time.monotonic() - started)
            if wait > left or attempt + 1 == MAX_ATTEMPTS:
                error = _status_error(response, body)
                reason = (f"the {MAX_ATTEMPTS}-attempt limit" if wait <= left else
                          f"Retry-After {asked:g} s" if asked is not None and asked >= backoff else
                          f"backoff {wait:.1f} s")
                reason += "" if wait <= left else f" exceeds the {max(left, 0):.1f} s left of the retry budget"
                raise requests.HTTPError(f"{error} (gave up after {attempt + 1} attempts: {reason})",
                                         response=response)
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

    def cut(self) -> None:
        """Also end the requests running now (a second Ctrl-C): they raise :class:`Aborted`."""
        self._aborted.set()
        self._cut.set()
        self._watchdog.cut_all()

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
