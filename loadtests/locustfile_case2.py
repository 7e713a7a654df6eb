"""Locust user model for the Case 2 task service (run by ``loadtests/run.py``).

Each Locust user is one client of the service. Clients are grouped into accounts: the first
client of a group creates the account's user (a unique e-mail) on start and the others of the
group use its id, as several tabs or workers of one person would (``CASE2_CLIENTS_PER_ACCOUNT``;
1 gives every client its own user). A client whose sign-up fails on every attempt joins an
account that exists (counted in ``signup_failures``). A client then runs a weighted mix: create
a task with a small base64 image and meta, list tasks, get a task, get its image, take a free
task, read the total counter and delete a task.

The same mix runs against either service, chosen by ``CASE2_SERVICE``: ``as_given`` (the
user id as the ``user_id`` query parameter, ``GET /take_free_task``, ``GET /tasks`` a JSON list)
or ``fixed`` (the token ``POST /users`` returns once, sent as ``Authorization: Bearer``;
``POST /tasks/claim``, 204 when none is free; ``GET /tasks`` a page ``{"items", "next"}``).
Only these protocol details differ (``SERVICES``); any 2xx/3xx answer is a success on both (201, 204 included), so
the figures of the two services are comparable.

Every request has a timeout and goes through ``catch_response``; failures are classified by
kind (``http_500``, ``aborted_transaction``, ``timeout``, ``connection_error``, ``http_<code>``).
When ``/take_free_task`` hands out a task id that an earlier request already got, a custom
failure ``GRANT duplicate grant`` is fired, so it shows in Locust's statistics.

At the end of the test the shared ledger (kinds per endpoint, created / granted / deleted task
ids, final request statistics) is written as JSON to ``CASE2_COUNTERS_OUT`` for the runner to
compare with the database.

Environment: ``CASE2_SERVICE`` (default ``as_given``), ``CASE2_CLIENTS_PER_ACCOUNT`` (default 4),
``CASE2_REQUEST_TIMEOUT`` seconds (default 5), ``CASE2_RUN_TOKEN`` (makes e-mails unique across
runs), ``CASE2_COUNTERS_OUT``.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import threading  # Locust monkey-patches threading with gevent: this Lock is greenlet-aware
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass

import requests
from locust import HttpUser, between, events, task
from locust.exception import StopUser
from locust.stats import StatsEntry

# A 1x1 PNG: the service stores whatever bytes it gets, a tiny real image keeps requests small.
IMAGE_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJ"
             "RU5ErkJggg==")
ABORTED_MARKER = "current transaction is aborted"
CLIENTS_PER_ACCOUNT = max(1, int(os.environ.get("CASE2_CLIENTS_PER_ACCOUNT", "4")))
REQUEST_TIMEOUT = float(os.environ.get("CASE2_REQUEST_TIMEOUT", "5"))
RUN_TOKEN = os.environ.get("CASE2_RUN_TOKEN") or uuid.uuid4().hex[:8]
COUNTERS_OUT = os.environ.get("CASE2_COUNTERS_OUT")
SIGNUP_ATTEMPTS = 5
SAMPLES_KEPT = 3  # error messages kept per failure kind, to tell what a connection error was
KNOWN_TASKS_KEPT = 200  # per account, so the choice of a target stays cheap
WAIT_S = (0.05, 0.3)  # pause of a client between two requests, uniform


@dataclass(frozen=True)
class ServiceProtocol:
    """What differs between the two services for the same client action."""

    name: str
    credential: str  # the field of the POST /users answer that identifies the account
    auth_kwarg: str  # request keyword the credential goes into ("params" or "headers")
    take_method: str  # of the claim ("take a free task")
    take_path: str
    take_key: str | None  # the claim's answer: None for the task itself, else the task's key
    list_key: str | None  # GET /tasks: None for a bare JSON list, else the key of the items

    def auth(self, credential) -> dict:
        if self.auth_kwarg == "params":
            return {"params": {"user_id": credential}}
        return {"headers": {"Authorization": f"Bearer {credential}"}}

    def items(self, body) -> list | None:
        items = body if self.list_key is None else (body or {}).get(self.list_key)
        return items if isinstance(items, list) else None


SERVICES = {
    "as_given": ServiceProtocol("as_given", credential="id", auth_kwarg="params",
                                take_method="GET", take_path="/take_free_task", take_key=None,
                                list_key=None),
    "fixed": ServiceProtocol("fixed", credential="token", auth_kwarg="headers",
                             take_method="POST", take_path="/tasks/claim", take_key="task",
                             list_key="items"),
}
SERVICE = SERVICES[os.environ.get("CASE2_SERVICE", "as_given")]


class DuplicateGrant(Exception):
    """A free task was handed to more than one request."""


def classify(response) -> str | None:
    """The failure kind of a finished request, or None when it succeeded."""
    error = getattr(response, "error", None)
    if isinstance(error, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(error, requests.exceptions.RequestException) or not response.status_code:
        return "connection_error"
    body = response.text or ""
    if ABORTED_MARKER in body:
        return "aborted_transaction"
    if response.status_code == 500:
        return "http_500"
    if response.status_code >= 400:
        return f"http_{response.status_code}"
    return None


class Ledger:
    """What every client saw, shared by all greenlets of this Locust process."""

    def __init__(self):
        self.lock = threading.Lock()
        self.serial = itertools.count()
        self.account_locks: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self.accounts: dict[int, int | str] = {}  # account -> user id or token
        self.signup_failures = 0
        self.kinds: dict[str, Counter] = defaultdict(Counter)
        self.samples: dict[str, list[str]] = defaultdict(list)
        self.known: dict[int, list[int]] = defaultdict(list)  # account -> task ids it may use
        self.created: set[int] = set()
        self.granted: Counter = Counter()
        self.take_ok = 0
        self.no_free_task = 0
        self.duplicate_grants = 0
        self.delete_attempted: set[int] = set()
        self.list_items_max = 0
        self.list_bad_shape = 0

    def count(self, endpoint: str, kind: str, error: Exception | None = None) -> None:
        with self.lock:
            self.kinds[endpoint][kind] += 1
            if error is not None and len(self.samples[kind]) < SAMPLES_KEPT:
                self.samples[kind].append(f"{endpoint}: {type(error).__name__}: {error}"[:300])

    def grant(self, task_id: int) -> bool:
        """Record a grant; True when this task had already been granted."""
        with self.lock:
            self.take_ok += 1
            self.granted[task_id] += 1
            duplicate = self.granted[task_id] > 1
            if duplicate:
                self.duplicate_grants += 1
            return duplicate

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "service": SERVICE.name,
                "clients_per_account": CLIENTS_PER_ACCOUNT,
                "wait_s": list(WAIT_S),
                "request_timeout_s": REQUEST_TIMEOUT,
                "accounts": len(self.accounts),
                "signup_failures": self.signup_failures,
                "kinds_by_endpoint": {k: dict(v) for k, v in self.kinds.items()},
                "error_samples": dict(self.samples),
                "created_ids": sorted(self.created),
                "granted": {str(k): v for k, v in sorted(self.granted.items())},
                "take_ok": self.take_ok,
                "no_free_task": self.no_free_task,
                "duplicate_grants": self.duplicate_grants,
                "delete_attempted_ids": sorted(self.delete_attempted),
                "list_items_max": self.list_items_max,
                "list_bad_shape": self.list_bad_shape,
            }


LEDGER = Ledger()


def _entry_figures(entry) -> dict:
    percentile = entry.get_response_time_percentile
    n, failed = entry.num_requests, entry.num_failures
    return {"method": entry.method, "requests": n, "failures": failed,
            "failure_ratio": round(failed / n, 4) if n else 0.0, "rps": round(entry.total_rps, 2),
            "p50_ms": percentile(0.5) if n else 0, "p95_ms": percentile(0.95) if n else 0,
            "p99_ms": percentile(0.99) if n else 0, "max_ms": round(entry.max_response_time, 1)}


def final_stats(stats) -> dict:
    """Per endpoint and in total over the HTTP requests only (the custom ``GRANT`` entry, one
    per duplicate grant, is counted by the ledger, not as a request)."""
    total = StatsEntry(stats, "HTTP total", "")
    endpoints = {}
    for (name, method), entry in sorted(stats.entries.items()):
        if method == "GRANT":
            continue
        endpoints[f"{method} {name}"] = _entry_figures(entry)
        total.extend(entry)
    return {"total": _entry_figures(total), "endpoints": endpoints}


@events.quitting.add_listener
def _write_ledger(environment, **_):
    # ``quitting`` fires after the last user stopped: the figures are final here, while the
    # CSV files Locust writes every second may miss the last moment of the run.
    if COUNTERS_OUT:
        with open(COUNTERS_OUT, "w", encoding="utf-8") as f:
            json.dump({**LEDGER.snapshot(), "stats": final_stats(environment.stats)}, f)


class TaskServiceClient(HttpUser):
    wait_time = between(*WAIT_S)

    def on_start(self):
        self.account = next(LEDGER.serial) // CLIENTS_PER_ACCOUNT
        with LEDGER.account_locks[self.account]:  # the group's other clients wait for the id
            if self.account not in LEDGER.accounts:
                credential = self._sign_up()
                if credential is not None:
                    LEDGER.accounts[self.account] = credential
        if self.account not in LEDGER.accounts:
            # Sign-up kept failing (the service may answer 500 although it stored the user):
            # join an account that exists, so the load level stays comparable between servers.
            with LEDGER.lock:
                LEDGER.signup_failures += 1
                self.account = next(iter(LEDGER.accounts), None)
            if self.account is None:
                raise StopUser()
        self.auth = SERVICE.auth(LEDGER.accounts[self.account])

    # ------------------------------------------------------------------ helpers

    def _call(self, method: str, path: str, name: str, auth: bool = True, **kw):
        """One request with a timeout; returns (kind, response) with the response reported."""
        allow_404 = kw.pop("allow_404", False)
        if auth:
            kw.update(self.auth)
        with self.client.request(method, path, name=name, timeout=REQUEST_TIMEOUT,
                                 catch_response=True, **kw) as response:
            kind = classify(response)
            if kind == "http_404" and allow_404:
                kind = None
            if kind is None:
                response.success()
            else:
                response.failure(kind)
                LEDGER.count(f"{method} {name}", kind, getattr(response, "error", None))
            return kind, response

    def _sign_up(self) -> int | str | None:
        for attempt in range(SIGNUP_ATTEMPTS):
            email = f"load-{RUN_TOKEN}-{self.account}-{attempt}@example.test"
            kind, response = self._call("POST", "/users", "/users", auth=False,
                                        json={"email": email})
            body = self._json(response) if kind is None else None
            if body and SERVICE.credential in body:
                return body[SERVICE.credential]
        return None

    def _known_task(self) -> int | None:
        ids = LEDGER.known[self.account]
        return random.choice(ids) if ids else None

    def _json(self, response) -> dict | None:
        try:
            return response.json()
        except ValueError:
            return None

    # ------------------------------------------------------------------ the mix

    @task(4)
    def create_task(self):
        kind, response = self._call("POST", "/tasks", "/tasks",
                                    json={"meta": f"load meta {uuid.uuid4().hex[:8]}",
                                          "image": IMAGE_B64})
        body = self._json(response) if kind is None else None
        if body and "id" in body:
            with LEDGER.lock:
                LEDGER.created.add(body["id"])
                ids = LEDGER.known[self.account]
                ids.append(body["id"])
                del ids[:-KNOWN_TASKS_KEPT]

    @task(1)
    def list_tasks(self):
        kind, response = self._call("GET", "/tasks", "/tasks")
        if kind is None:
            items = SERVICE.items(self._json(response))
            with LEDGER.lock:
                if items is None:
                    LEDGER.list_bad_shape += 1
                else:
                    LEDGER.list_items_max = max(LEDGER.list_items_max, len(items))

    @task(4)
    def get_task(self):
        task_id = self._known_task()
        if task_id is not None:
            self._call("GET", f"/tasks/{task_id}", "/tasks/[id]")

    @task(2)
    def get_image(self):
        task_id = self._known_task()
        if task_id is not None:
            self._call("GET", f"/tasks/{task_id}/image", "/tasks/[id]/image")

    @task(3)
    def take_free_task(self):
        method = SERVICE.take_method
        # Reported under one name for both services, so their figures line up.
        kind, response = self._call(method, SERVICE.take_path, "/take_free_task", allow_404=True)
        if kind is not None:
            return
        body = self._json(response)
        if body and SERVICE.take_key:
            body = body.get(SERVICE.take_key)
        if response.status_code == 404 or not body or "id" not in body:
            with LEDGER.lock:
                LEDGER.no_free_task += 1
            return
        if LEDGER.grant(body["id"]):
            LEDGER.count(f"{method} /take_free_task", "duplicate_grant")
            events.request.fire(request_type="GRANT", name="duplicate grant", response_time=0,
                                response_length=0, context={}, response=None,
                                exception=DuplicateGrant("task already granted to another request"))

    @task(1)
    def total_tasks_created(self):
        self._call("GET", "/total_tasks_created", "/total_tasks_created")

    @task(2)
    def delete_task(self):
        with LEDGER.lock:
            ids = LEDGER.known[self.account]
            task_id = ids.pop(random.randrange(len(ids))) if ids else None
            if task_id is not None:
                LEDGER.delete_attempted.add(task_id)
        if task_id is not None:
            self._call("DELETE", f"/tasks/{task_id}", "/tasks/[id]")
