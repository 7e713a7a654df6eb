"""Workloads: what the clients do. One definition, two drivers.

* ``MIX`` and ``mix_step`` are the load mix (weighted actions of one client on its account's
  tasks). The Locust load runs (``loadtests/locustfile_case2.py``) and the checker's ``mixed``
  workload both drive exactly these functions, so the load runs record the same history and are
  judged by the same checkers.
* The targeted workloads (``claims``, ``counter``, ``isolation``, ``images``, ``lifecycle``,
  ``hostile``) are rounds of the same client actions, released together at a barrier where a
  race is the point. They are bounded by ``Params`` and by the run's ``Budget``.

A workload never judges what it sees: it only acts and records; ``checks`` judges afterwards.
"""
from __future__ import annotations

import base64
import json
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import images
from .client import Account, BudgetExhausted, Client
from .history import OK, Op

# --------------------------------------------------------------------------- the load mix

# Weights of a client's actions, as the load runs have always used them.
MIX: Dict[str, int] = {"create_task": 4, "get_task": 4, "claim": 3, "get_image": 2,
                       "delete_task": 2, "list_tasks": 1, "total": 1}
KNOWN_TASKS_KEPT = 200  # per account, so picking a target stays cheap


class MixState:
    """Task ids each account may act on, shared by the clients of one driver."""

    def __init__(self):
        self.lock = threading.Lock()
        self.known: Dict[str, List[Any]] = {}

    def remember(self, label: str, task_id: Any) -> None:
        with self.lock:
            ids = self.known.setdefault(label, [])
            ids.append(task_id)
            del ids[:-KNOWN_TASKS_KEPT]

    def pick(self, label: str, rng: random.Random, remove: bool = False) -> Any:
        with self.lock:
            ids = self.known.get(label) or []
            if not ids:
                return None
            i = rng.randrange(len(ids))
            return ids.pop(i) if remove else ids[i]


SIGNUP_ATTEMPTS = 5


def sign_up(client: Client, label: str, run_token: str, attempts: int = SIGNUP_ATTEMPTS) -> Optional[Account]:
    """A fresh user with a unique e-mail, or None; retried with a new e-mail when the service
    fails (an indeterminate sign-up may have created a user nobody can use)."""
    marker = f"tc{run_token}{label.replace('.', '')}m{uuid.uuid4().hex[:6]}"
    for attempt in range(attempts):
        account = Account(label=label, email=f"tc-{run_token}-{label}-{attempt}@example.test", marker=marker)
        op = client.create_user(account, args={"marker": marker})
        if op.type == OK and account.credential is not None:
            return account
    return None


def load_meta(account: Account) -> str:
    return f"load meta {account.marker} {uuid.uuid4().hex[:8]}"


def mix_step(client: Client, account: Account, state: MixState, rng: random.Random,
             action: Optional[str] = None) -> Optional[Op]:
    """One action of the load mix (``action``, or one drawn by ``MIX``'s weights); None when
    the action has no target yet (no known task)."""
    if action is None:
        names = list(MIX)
        action = rng.choices(names, weights=[MIX[n] for n in names])[0]
    if action == "create_task":
        op = client.create_task(account, load_meta(account), images.SMALL_PNG, "png")
        if op.type == OK and op.value.get("task_id") is not None:
            state.remember(account.label, op.value["task_id"])
        return op
    if action == "list_tasks":  # the first page only: one request, as the load runs always made
        return client.list_tasks(account, max_pages=1)[-1]
    if action == "claim":
        return client.claim(account)
    if action == "total":
        return client.total(account)
    remove = action == "delete_task"
    task_id = state.pick(account.label, rng, remove=remove)
    if task_id is None:
        return None
    act = {"get_task": client.get_task, "get_image": client.get_image,
           "delete_task": client.delete_task}[action]
    return act(account, task_id, account.label)


# --------------------------------------------------------------------------- the run context


@dataclass
class Params:
    """Bounds and sizes of the targeted workloads (the command line maps onto these)."""

    concurrency: int = 8  # clients released together in a burst
    rounds: int = 6  # rounds of the claim and counter bursts
    mix_ops: int = 120  # operations of the mixed workload, all clients together
    mix_clients: int = 6
    clients_per_account: int = 2
    large_image_side: int = 96
    oversized_body_mib: int = 12  # the hostile workload's one large request
    seed: int = 0


class WorkloadError(Exception):
    """A workload could not set itself up (e.g. no account could be created)."""


class Context:
    """What every workload gets: a client, the parameters, accounts, and a way to run a burst."""

    def __init__(self, client: Client, params: Params, run_token: Optional[str] = None,
                 prefix: str = ""):
        self.client = client
        self.prefix = prefix  # makes account labels unique when workloads run again (fault rounds)
        self.params = params
        self.rng = random.Random(params.seed)
        self.run_token = run_token or uuid.uuid4().hex[:8]
        # A burst needs a thread per call, all at the barrier together: the largest burst is
        # the hostile workload's 2 x concurrency.
        self._threads = max(params.mix_clients, 2 * params.concurrency + 1)
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="taskcheck")
        self._serial = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def new_account(self, client: Client, label: str, attempts: int = SIGNUP_ATTEMPTS) -> Account:
        account = sign_up(client, self.prefix + label, self.run_token, attempts)
        if account is None:
            raise WorkloadError(f"could not create account {self.prefix + label} in {attempts} attempts")
        return account

    def burst(self, calls: Sequence[Callable[[Client], Any]], workload: str, **tags: Any) -> List[Any]:
        """Run ``calls`` on as many client threads, released together at a barrier; their
        results in order. Every call finishes first; then the budget's exhaustion, or else any
        other exception a call raised, is re-raised (a broken workload must not pass silently)."""
        if len(calls) > self._threads:
            raise ValueError(f"a burst of {len(calls)} exceeds the {self._threads} client threads")
        barrier = threading.Barrier(len(calls), timeout=30)
        with self._lock:
            base = self._serial
            self._serial += len(calls)

        def one(i: int, call: Callable[[Client], Any]) -> Any:
            client = self.client.fork(f"c{base + i}", workload, **tags)
            try:
                barrier.wait()
            except threading.BrokenBarrierError as exc:
                return exc
            try:
                return call(client)
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                return exc

        futures = [self._pool.submit(one, i, c) for i, c in enumerate(calls)]
        results = [f.result(timeout=600) for f in futures]
        failures = [r for r in results if isinstance(r, Exception)]
        for r in failures:
            if isinstance(r, BudgetExhausted):
                raise r
        if failures:
            raise failures[0]
        return results


def created_id(op: Op) -> Any:
    """The id of the task a 2xx creation made, or None (failed, or its id unusable: the op
    then carries a ``shape_error``)."""
    return op.value.get("task_id") if op.type == OK else None


def _meta(account: Account, note: str) -> str:
    return f"{note} {account.marker}"


# --------------------------------------------------------------------------- targeted workloads


def claims(ctx: Context) -> None:
    """Free tasks claimed by more clients at once than there are tasks (C2-01); a task deleted
    before a claim (C2-03); two deletions of one task at once."""
    c = ctx.client.fork("claims", "claims")
    owner = ctx.new_account(c, "claimer")
    n = ctx.params.concurrency
    for r in range(ctx.params.rounds):
        for i in range(n):
            c.create_task(owner, _meta(owner, f"claim round {r} task {i}"), images.SMALL_PNG, "png")
        ctx.burst([lambda cl: cl.claim(owner)] * (n + 1), "claims", round=r)
    doomed = c.create_task(owner, _meta(owner, "deleted before a claim"), images.SMALL_PNG, "png")
    if created_id(doomed) is not None:
        c.delete_task(owner, created_id(doomed), owner.label)
        c.claim(owner)
        twice = c.create_task(owner, _meta(owner, "deleted twice at once"), images.SMALL_PNG, "png")
        task_id = created_id(twice)
        if task_id is not None:
            ctx.burst([lambda cl: cl.delete_task(owner, task_id, owner.label)] * 2, "claims")


def counter(ctx: Context) -> None:
    """Concurrent creations by one user between two reads of the total (C2-02)."""
    c = ctx.client.fork("counter", "counter")
    owner = ctx.new_account(c, "counter")
    n = ctx.params.concurrency
    c.total(owner)
    for r in range(ctx.params.rounds):
        ctx.burst([lambda cl, i=i: cl.create_task(owner, _meta(owner, f"count {r}.{i}"),
                                                   images.SMALL_PNG, "png") for i in range(n)],
                  "counter", round=r)
        c.total(owner)


def isolation(ctx: Context) -> None:
    """Bob lists, reads, claims and deletes Alice's tasks and account; then acts with Alice's
    public id as his identity (C2-08, C2-09, C2-10, C2-32). Alice then checks nothing changed."""
    c = ctx.client.fork("isolation", "isolation")
    alice = ctx.new_account(c, "alice")
    bob = ctx.new_account(c, "bob")
    victim = ctx.new_account(c, "victim")
    mine = [c.create_task(alice, _meta(alice, f"alice's secret {i}"), images.SMALL_PNG, "png")
            for i in range(3)]
    ids = [created_id(op) for op in mine if created_id(op) is not None]
    c.create_task(bob, _meta(bob, "bob's own"), images.SMALL_PNG, "png")
    c.create_task(victim, _meta(victim, "victim's own"), images.SMALL_PNG, "png")
    if not ids:
        raise WorkloadError("alice could not create a task")
    target = ids[-1]
    c.list_tasks(bob)
    c.get_task(bob, ids[0], alice.label)
    c.get_image(bob, ids[0], alice.label)
    c.delete_task(bob, target, alice.label)
    c.claim(bob)
    c.delete_user(bob, alice)
    p = c.protocol
    for who in (alice, victim):
        if who.user_id is None:
            continue
        forged = p.auth(who.user_id)  # what anyone who saw the public id can send
        if who is alice:
            c.list_tasks(bob, auth=forged, args={"as": alice.label}, max_pages=1)
            c.get_task(bob, ids[0], alice.label, auth=forged, args={"as": alice.label})
        else:
            c.delete_user(bob, victim, auth=forged, args={"as": victim.label})
    c.get_task(alice, target, alice.label)
    c.list_tasks(alice)
    c.total(alice)
    c.list_tasks(victim)


def images_roundtrip(ctx: Context) -> None:
    """Images of several formats and a Unicode meta must come back as sent (C2-16..C2-18)."""
    c = ctx.client.fork("images", "images")
    owner = ctx.new_account(c, "imager")
    meta = "Задача №1 — ✓ 🚀 <b>&amp;</b> \"кавычки\" \\ \t" + owner.marker
    for kind, data in images.corpus(ctx.params.large_image_side).items():
        op = c.create_task(owner, f"{meta} {kind}", data, kind)
        if created_id(op) is not None:
            c.get_image(owner, created_id(op), owner.label)
            c.get_task(owner, created_id(op), owner.label)


def mixed(ctx: Context) -> None:
    """The load mix (``MIX``), ``mix_clients`` clients for ``mix_ops`` operations in all."""
    p = ctx.params
    c = ctx.client.fork("mixed", "mixed")
    groups = max(1, (p.mix_clients + p.clients_per_account - 1) // p.clients_per_account)
    accounts = [ctx.new_account(c, f"mix{g}") for g in range(groups)]
    state = MixState()
    per_client = max(1, p.mix_ops // p.mix_clients)

    def client_loop(cl: Client, i: int) -> None:
        rng = random.Random(p.seed * 1000 + i)
        account = accounts[i // p.clients_per_account]
        for _ in range(per_client):
            mix_step(cl, account, state, rng)

    ctx.burst([lambda cl, i=i: client_loop(cl, i) for i in range(p.mix_clients)], "mixed")


def lifecycle(ctx: Context) -> None:
    """A user with tasks is deleted: the total of created tasks must not go down (C2-22), and
    the deep checks see whether the user's image files went with the rows (C2-20)."""
    c = ctx.client.fork("lifecycle", "lifecycle")
    reader = ctx.new_account(c, "reader")
    leaving = ctx.new_account(c, "leaving")
    for i in range(2):
        c.create_task(leaving, _meta(leaving, f"task {i} of a user who leaves"), images.SMALL_PNG, "png")
    c.total(reader)
    c.delete_user(leaving, leaving)
    c.total(reader)


def _meta_arg(body: Any, field: str) -> dict:
    """The meta a hostile creation sent, for the round-trip check (only when small)."""
    if isinstance(body, dict) and field in body and len(json.dumps(body[field])) <= 1024:
        return {"meta": body[field]}
    return {}


# Hostile inputs: (case, action, expectation, findings). "reject": only a 4xx is right (a 2xx
# accepted what the API must refuse); "any": 2xx or 4xx is the service's choice, 5xx is not.
def _hostile_cases(ctx: Context, c: Client, me: Account, task_id: Any) -> List[Callable[[], Op]]:
    p = c.protocol
    ut, tt = p.create_user, p.create_task
    big = "x" * (ctx.params.oversized_body_mib << 20)
    b64 = base64.b64encode

    def user(case, body=None, expect="reject", findings=("C2-13",), **kw):
        return lambda: c.raw(None, ut.method, ut.path, {"case": case, "expect": expect,
                                                         "findings": list(findings), "action": "create_user"},
                             json_body=body, **kw)

    def task(case, body=None, expect="reject", findings=("C2-13",), **kw):
        return lambda: c.raw(me, tt.method, tt.path, {"case": case, "expect": expect,
                                                       "findings": list(findings), "action": "create_task",
                                                       "owner": me.label, **_meta_arg(body, p.meta_field)},
                             json_body=body, **kw)

    def call(case, endpoint, expect="reject", findings=("C2-12",), actor=me, auth=None, **values):
        return lambda: c.raw(actor, endpoint.method, endpoint.url_path(**values),
                             {"case": case, "expect": expect, "findings": list(findings)},
                             name=endpoint.path, auth=auth)

    png = b64(images.SMALL_PNG).decode()
    mf, imf = p.meta_field, p.image_field
    nobody = "9" * 9
    cases = [
        user("user: no body"),
        user("user: form body", data={p.email_field: f"form-{me.marker}@example.test"}),
        user("user: malformed JSON", data="{", headers={"Content-Type": "application/json"}),
        user("user: JSON array", body=[me.email]),
        user("user: email missing", body={}),
        user("user: email not a string", body={p.email_field: 12345}, findings=("C2-14",)),
        user("user: email not an address", body={p.email_field: "not an email"}, findings=("C2-14",)),
        user("user: email empty", body={p.email_field: ""}, findings=("C2-14",)),
        user("user: email longer than 254", body={p.email_field: "a" * 250 + "@x.io"}, findings=("C2-14",)),
        user("user: duplicate email", body={p.email_field: me.email}, findings=("C2-15",)),
        user("user: duplicate email, other case", body={p.email_field: me.email.upper()},
             expect="any", findings=("C2-14",)),
        task("task: meta missing", body={imf: png}),
        task("task: meta null", body={mf: None, imf: png}),
        task("task: meta an object", body={mf: {"k": "v"}, imf: png}, expect="any"),
        task("task: meta a number", body={mf: 42, imf: png}, expect="any"),
        task("task: meta with NUL", body={mf: "nul\u0000byte", imf: png}, expect="any"),
        task("task: meta with a lone surrogate", body={mf: "half \ud800 pair", imf: png}, expect="any"),
        task("task: image missing", body={mf: "no image"}),
        task("task: image not base64", body={mf: "m", imf: "!!!!"}),
        task("task: image bad padding", body={mf: "m", imf: "abc"}),
        task("task: image a number", body={mf: "m", imf: 5}),
        task("task: image empty", body={mf: "m", imf: ""}),
        task("task: image not an image", body={mf: "m", imf: b64(b"hello, not an image").decode()},
             findings=("C2-13", "C2-18")),
        task("task: body a JSON array", body=[png]),
        task("task: body not JSON", data=b"meta=m", headers={"Content-Type": "text/plain"}),
        task("task: body of 12 MiB", body={mf: big, imf: png}, expect="any", findings=("C2-23",)),
        call("no credential", p.list_tasks, actor=None, findings=("C2-10", "C2-12")),
        call("garbage credential", p.list_tasks, auth=p.auth("garbage~credential!"), findings=("C2-12",)),
        call("empty credential", p.list_tasks, auth=p.auth(""), findings=("C2-12",)),
        call("credential of nobody", p.list_tasks,
             auth=p.auth(nobody if p.credential_is_public_id else "Z" * 43), findings=("C2-12",)),
        call("oversized credential", p.list_tasks, auth=p.auth("7" * 8192), findings=("C2-12",)),
        call("unknown task: read", p.get_task, task_id=nobody),
        call("unknown task: image", p.get_image, task_id=nobody),
        call("unknown task: delete", p.delete_task, task_id=nobody),
        call("task id not a number", p.get_task, task_id="abc"),
        call("task id negative", p.get_task, task_id="-1"),
        call("task id beyond 64 bits", p.get_task, task_id="9" * 30),
        call("unknown user: delete", p.delete_user, user_id=nobody, findings=("C2-12",)),
    ]
    if task_id is not None:
        cases.append(call("task deleted twice", p.delete_task, expect="any",
                          findings=("C2-03", "C2-19"), task_id=task_id))
    return cases


def hostile(ctx: Context) -> None:
    """Invalid input of every kind (C2-12..C2-15, C2-23), then valid requests from several
    clients at once: a service that a bad request left broken shows it there (C2-04, C2-05)."""
    c = ctx.client.fork("hostile", "hostile")
    me = ctx.new_account(c, "hostile")
    first = c.create_task(me, _meta(me, "to be deleted twice"), images.SMALL_PNG, "png")
    task_id = first.value.get("task_id") if first.type == OK else None
    if task_id is not None:
        c.delete_task(me, task_id, me.label)
    for case in _hostile_cases(ctx, c, me, task_id):
        op = case()
        if op.action == "create_task" and op.type == OK and op.value.get("task_id") is not None:
            c.get_task(me, op.value["task_id"], me.label)  # what was stored must read back
    n = ctx.params.concurrency
    c.total(me)
    ctx.burst([lambda cl: cl.total(me)] * n + [lambda cl, i=i: cl.create_task(
        me, _meta(me, f"after hostile {i}"), images.SMALL_PNG, "png") for i in range(n)],
        "hostile", phase="after-hostile")
    c.total(me)
    c.list_tasks(me)


WORKLOADS: Dict[str, Callable[[Context], None]] = {
    "claims": claims, "counter": counter, "isolation": isolation, "images": images_roundtrip,
    "mixed": mixed, "lifecycle": lifecycle, "hostile": hostile,
}
