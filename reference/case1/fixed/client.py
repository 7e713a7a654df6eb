"""HTTP calls to the classification API (findings C1-11, C1-23..C1-26).

* One ``requests.Session`` per worker thread (``threading.local``): a ``Session`` is not
  documented as thread-safe, and one per thread keeps one keep-alive connection per worker that
  both ``/api/classify`` and ``/api/stats`` reuse. Every session is closed by :meth:`Client.close`.
* Every request has a ``(connect, read)`` timeout.
* Retries, with exponential backoff, only where repeating cannot duplicate work: failures to
  *connect* (the request never left). A read timeout or a 5xx on a POST is not retried - the
  server may have done the work - and is reported to the caller.
* ``raise_for_status()`` turns an error status into an exception whose message has the status;
  the body is parsed once and validated.
* The duration is measured with ``time.perf_counter()`` around the whole call, so it includes
  reading the body (``Response.elapsed`` stops at the headers) and is a float in seconds.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

CLASSIFY_PATH = "/api/classify"
STATS_PATH = "/api/stats"
CONNECT_RETRIES = 3
BACKOFF_SECONDS = 0.2


class BadResponse(requests.RequestException):
    """The API answered 2xx with a body that is not the documented ``{"class", "score"}``."""


@dataclass(frozen=True)
class Classification:
    cls: str
    score: float | None
    elapsed: float  # seconds, the whole request including the body


class Client:
    """Thread-safe facade: each calling thread gets (and keeps) its own session."""

    def __init__(self, base_url: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.timeout = (timeout, timeout)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            retry = Retry(total=CONNECT_RETRIES, connect=CONNECT_RETRIES, read=False, status=0, other=0,
                          redirect=0, backoff_factor=BACKOFF_SECONDS, raise_on_status=False)
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=retry)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            with self._lock:
                self._sessions.append(session)
            self._local.session = session
        return session

    def classify(self, jpeg: bytes, magic: float) -> Classification:
        """POST the JPEG; raises ``requests.RequestException`` (incl. ``HTTPError``) on failure."""
        started = time.perf_counter()
        response = self._session().post(self.base_url + CLASSIFY_PATH, data=jpeg, params={"magic": repr(magic)},
                                        headers={"Content-Type": "image/jpeg"}, timeout=self.timeout)
        with response:
            _raise_for_status(response)
            payload = response.json()
        elapsed = time.perf_counter() - started
        score = payload.get("score") if isinstance(payload, dict) else None
        if (not isinstance(payload, dict) or not isinstance(payload.get("class"), str)
                or not (score is None or isinstance(score, (int, float)) and not isinstance(score, bool))):
            raise BadResponse(f"unexpected classification response: {payload!r:.200}")
        return Classification(payload["class"], None if score is None else float(score), elapsed)

    def send_stats(self, elapsed: float, cls: str, image_size: int) -> None:
        """POST one record to the stats endpoint over this thread's session."""
        response = self._session().post(self.base_url + STATS_PATH, timeout=self.timeout,
                                        json={"elapsed": elapsed, "class": cls, "image_size": image_size})
        with response:
            _raise_for_status(response)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _raise_for_status(response: requests.Response) -> None:
    """``raise_for_status`` with the start of the body added: the API says why it refused."""
    try:
        response.raise_for_status()
    except requests.HTTPError as exc:
        body = response.text[:200].strip()
        raise requests.HTTPError(f"{exc}: {body}" if body else str(exc), response=response) from None
