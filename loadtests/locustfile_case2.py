"""Locust driver of the Case 2 load mix (run by ``loadtests/run.py``).

One definition, two drivers: the mix itself (actions, weights, targets) is
``taskcheck.workloads.MIX``/``mix_step``, the protocol of the service under load is a
``taskcheck.protocol`` adapter, and every request goes through ``taskcheck.client.Client``,
which records it into a history. This file only adapts them to Locust: a transport over
Locust's ``HttpSession`` (so Locust's statistics see each request, named by its endpoint), and
the grouping of Locust users into accounts.

Each Locust user is one client of the service. Clients are grouped into accounts: the first
client of a group creates the account's user on start and the others of the group use it, as
several tabs or workers of one person would (``CASE2_CLIENTS_PER_ACCOUNT``; 1 gives every client
its own user). A client whose sign-up fails on every attempt joins an account that exists
(counted in ``signup_failures``).

Every request has a timeout and goes through ``catch_response``; failures are classified by
kind (``taskcheck.checks.failure_kind_of``: ``http_500``, ``aborted_transaction``, ``timeout``,
``connection_error``, ``http_<code>``); a claim's "none free" answer is a success. When a claim
hands out a task id that an earlier request already got, a custom failure ``GRANT duplicate
grant`` is fired, so it shows in Locust's statistics as it happens.

At the end the history goes to ``CASE2_HISTORY_OUT`` (JSON lines: the runner checks it with
``taskcheck.checks``, the same checkers as ``python -m taskcheck``) and the run's own facts
(accounts, sign-up failures, final request statistics) to ``CASE2_COUNTERS_OUT``.

Environment: ``CASE2_API`` (``original``, ``fixed``, ``fixed-take`` or a mapping file; default
``original``), ``CASE2_CLIENTS_PER_ACCOUNT`` (default 4), ``CASE2_REQUEST_TIMEOUT`` seconds
(default 5), ``CASE2_RUN_TOKEN`` (makes e-mails unique across runs), ``CASE2_HISTORY_OUT``,
``CASE2_COUNTERS_OUT``.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import sys
import threading  # Locust monkey-patches threading with gevent: these locks are greenlet-aware
import uuid
from collections import defaultdict
from pathlib import Path

import requests
from locust import HttpUser, between, events
from locust.exception import StopUser
from locust.stats import StatsEntry

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # Locust imports this file by path: make taskcheck importable
    sys.path.insert(0, str(ROOT))

from taskcheck import checks  # noqa: E402
from taskcheck.client import Client, Raw  # noqa: E402
from taskcheck.history import History  # noqa: E402
from taskcheck.protocol import resolve  # noqa: E402
from taskcheck.workloads import MIX, MixState, mix_step, sign_up  # noqa: E402

API = os.environ.get("CASE2_API", "original")
PROTOCOL = resolve(API)
CLIENTS_PER_ACCOUNT = max(1, int(os.environ.get("CASE2_CLIENTS_PER_ACCOUNT", "4")))
REQUEST_TIMEOUT = float(os.environ.get("CASE2_REQUEST_TIMEOUT", "5"))
RUN_TOKEN = os.environ.get("CASE2_RUN_TOKEN") or uuid.uuid4().hex[:8]
HISTORY_OUT = os.environ.get("CASE2_HISTORY_OUT")
COUNTERS_OUT = os.environ.get("CASE2_COUNTERS_OUT")
WAIT_S = (0.05, 0.3)  # pause of a client between two requests, uniform
BODY_KEPT = 8192  # bytes of each answer the history keeps in a load run (enough to spot leaks)
IDS_KEPT = 200  # task ids kept per listed page


def endpoint_name(path_template: str) -> str:
    """Locust's name of an endpoint: ids written as ``[id]``, as the load reports always had."""
    return path_template.replace("{task_id}", "[id]").replace("{user_id}", "[id]")


class DuplicateGrant(Exception):
    """A free task was handed to more than one request."""


class LocustTransport:
    """``taskcheck``'s transport over the user's Locust ``HttpSession``."""

    def __init__(self, user: HttpUser):
        self.user = user

    def send(self, method: str, path: str, name: str, **kw) -> Raw:
        none_free = name == PROTOCOL.claim.path and method == PROTOCOL.claim.method
        with self.user.client.request(method, path, name=endpoint_name(name), timeout=REQUEST_TIMEOUT,
                                      allow_redirects=False, catch_response=True, **kw) as r:
            error = getattr(r, "error", None)
            if isinstance(error, requests.exceptions.Timeout):
                raw = Raw(None, {}, b"", "timeout", f"{type(error).__name__}: {error}"[:300])
            elif isinstance(error, requests.exceptions.RequestException) or not r.status_code:
                raw = Raw(None, {}, b"", "connection", f"{type(error).__name__}: {error}"[:300])
            else:
                raw = Raw(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content or b"")
            text = raw.content[:BODY_KEPT].decode("utf-8", "replace") if raw.content else ""
            kind = checks.failure_kind_of(raw.status, raw.error, text,
                                          none_free and raw.status in PROTOCOL.claim_none_free)
            if kind is None:
                r.success()
            else:
                r.failure(kind)
        return raw


class Accounts:
    """The accounts of this Locust process, and the grants seen so far (for the live event)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.serial = itertools.count()
        self.locks = defaultdict(threading.Lock)
        self.by_group = {}
        self.signup_failures = 0
        self.granted = set()


HISTORY = History({"driver": "locust", "api": PROTOCOL.name, "api_source": API,
                   "protocol": PROTOCOL.describe(), "workloads": ["mixed"],
                   "hang_threshold_s": REQUEST_TIMEOUT, "clients_per_account": CLIENTS_PER_ACCOUNT,
                   "wait_s": list(WAIT_S), "request_timeout_s": REQUEST_TIMEOUT})
STATE = MixState()
ACCOUNTS = Accounts()


def _entry_figures(entry) -> dict:
    percentile = entry.get_response_time_percentile
    n, failed = entry.num_requests, entry.num_failures
    return {"method": entry.method, "requests": n, "failures": failed,
            "failure_ratio": round(failed / n, 4) if n else 0.0, "rps": round(entry.total_rps, 2),
            "p50_ms": percentile(0.5) if n else 0, "p95_ms": percentile(0.95) if n else 0,
            "p99_ms": percentile(0.99) if n else 0, "max_ms": round(entry.max_response_time, 1)}


def final_stats(stats) -> dict:
    """Per endpoint and in total over the HTTP requests only (the custom ``GRANT`` entry, one
    per duplicate grant, is counted by the checkers, not as a request)."""
    total = StatsEntry(stats, "HTTP total", "")
    endpoints = {}
    for (name, method), entry in sorted(stats.entries.items()):
        if method == "GRANT":
            continue
        endpoints[f"{method} {name}"] = _entry_figures(entry)
        total.extend(entry)
    return {"total": _entry_figures(total), "endpoints": endpoints}


@events.quitting.add_listener
def _write_results(environment, **_):
    # ``quitting`` fires after the last user stopped: the figures are final here, while the
    # CSV files Locust writes every second may miss the last moment of the run.
    if HISTORY_OUT:
        HISTORY.write(Path(HISTORY_OUT))
    if COUNTERS_OUT:
        with open(COUNTERS_OUT, "w", encoding="utf-8") as f:
            json.dump({"api": PROTOCOL.name, "clients_per_account": CLIENTS_PER_ACCOUNT,
                       "wait_s": list(WAIT_S), "request_timeout_s": REQUEST_TIMEOUT,
                       "accounts": len(ACCOUNTS.by_group), "signup_failures": ACCOUNTS.signup_failures,
                       "stats": final_stats(environment.stats)}, f)


def _step(action: str):
    def run(user: "TaskServiceClient") -> None:
        user.step(action)
    run.__name__ = action
    return run


class TaskServiceClient(HttpUser):
    wait_time = between(*WAIT_S)
    tasks = {_step(action): weight for action, weight in MIX.items()}

    def on_start(self):
        serial = next(ACCOUNTS.serial)
        self.tc = Client(PROTOCOL, LocustTransport(self), HISTORY, process=f"u{serial}", workload="mixed")
        self.tc.body_limit, self.tc.ids_limit = BODY_KEPT, IDS_KEPT
        self.rng = random.Random()
        group = serial // CLIENTS_PER_ACCOUNT
        with ACCOUNTS.locks[group]:  # the group's other clients wait for its account
            if group not in ACCOUNTS.by_group:
                account = sign_up(self.tc, f"load{group}", RUN_TOKEN)
                if account is not None:
                    ACCOUNTS.by_group[group] = account
        self.account = ACCOUNTS.by_group.get(group)
        if self.account is None:
            # Sign-up kept failing (the service may answer 500 although it stored the user):
            # join an account that exists, so the load level stays comparable between servers.
            with ACCOUNTS.lock:
                ACCOUNTS.signup_failures += 1
                self.account = next(iter(ACCOUNTS.by_group.values()), None)
            if self.account is None:
                raise StopUser()

    def step(self, action: str) -> None:
        op = mix_step(self.tc, self.account, STATE, self.rng, action=action)
        if op is None or op.action != "claim" or op.value.get("task_id") is None:
            return
        with ACCOUNTS.lock:
            seen = op.value["task_id"] in ACCOUNTS.granted
            ACCOUNTS.granted.add(op.value["task_id"])
        if seen:
            events.request.fire(request_type="GRANT", name="duplicate grant", response_time=0,
                                response_length=0, context={}, response=None,
                                exception=DuplicateGrant("task already granted to another request"))
