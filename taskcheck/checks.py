"""Checkers: pure functions over a recorded history (no I/O, no clock, no protocol knowledge).

Each checker takes a ``History`` and returns ``Anomaly`` records; ``run`` composes them. They read
only what the history holds: the semantic values the adapter extracted (task ids, totals,
credentials), the timings, the outcome types and the raw answers. The same functions serve the
checker's command, the Locust load runs (``loadtests/run.py``), the concurrency tests and the
notebooks.

How statuses are judged: by meaning, never by one implementation's exact choice. 2xx means the
operation happened; 4xx means it did not (and later reads must agree); 5xx, a timeout or a
dropped connection is indeterminate (Jepsen's ``info``): it may or may not have happened, so it
only widens the bounds a checker accepts. Which 2xx or 4xx a service picks is its own business.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import images
from .history import FAIL, INFO, OK, History, Op, in_window

HANG_THRESHOLD_S = 5.0  # an answer slower than this counts as a hang (the history may override)
SECRET_MIN_LENGTH = 12  # credentials shorter than this (a numeric id) are not scanned for


@dataclass(frozen=True)
class Kind:
    title: str
    findings: Tuple[str, ...]
    meaning: str


# Every anomaly the checkers can report, with the review's finding it corresponds to.
KINDS: Dict[str, Kind] = {
    "duplicate-grant": Kind("task granted to two claims", ("C2-01",),
                            "a claim answered 2xx with a task another claim already got, no release between"),
    "grant-of-deleted": Kind("claim granted a deleted task", ("C2-03",),
                             "a claim answered with a task whose deletion had completed before the claim began"),
    "lost-increment": Kind("lost counter increments", ("C2-02",),
                           "between two reads of the total, fewer increments than creations answered 2xx"),
    "counter-overcount": Kind("counter grew without a creation", ("C2-21", "C2-04"),
                              "the total grew by more than every creation that may have happened"),
    "counter-decreased": Kind("total of created tasks went down", ("C2-22", "C2-04"),
                              "a later read of the total is lower than an earlier one"),
    "foreign-list": Kind("list shows other users' tasks", ("C2-08",),
                         "a user's task list holds tasks created by another user"),
    "foreign-read": Kind("another user's task readable", ("C2-09",),
                         "reading another user's task or its image answered 2xx"),
    "foreign-write": Kind("another user's task changed", ("C2-10",),
                          "claiming or deleting another user's task or account succeeded"),
    "impersonation": Kind("public id works as a credential", ("C2-10",),
                          "a request carrying another user's public id as identity succeeded"),
    "data-leak": Kind("answer carries another user's data", ("C2-32", "C2-08", "C2-09"),
                      "an answer holds another user's e-mail, meta or token"),
    "server-error": Kind("5xx on valid input", ("C2-04", "C2-06"),
                         "a valid request answered 5xx or the connection was dropped"),
    "server-error-hostile": Kind("5xx on hostile input", ("C2-12", "C2-13"),
                                 "an invalid request answered 5xx instead of a 4xx"),
    "invalid-accepted": Kind("invalid input accepted", ("C2-13",),
                             "a request the API must refuse answered 2xx"),
    "hang": Kind("request hangs", ("C2-05",),
                 "no answer within the timeout, or an answer slower than the hang threshold"),
    "image-roundtrip": Kind("image does not round-trip", ("C2-17", "C2-18"),
                            "the owner's image download failed, or its bytes or type differ from the upload"),
    "meta-roundtrip": Kind("meta does not round-trip", ("C2-13",),
                           "the meta read back differs from the meta a 2xx creation stored"),
    "rejected-took-effect": Kind("rejected request took effect", ("C2-04",),
                                 "a 4xx deletion whose effect later reads show"),
    "row-without-file": Kind("task row without its image file", ("C2-16", "C2-19"),
                             "deep check: a task row whose image file is missing"),
    "file-without-row": Kind("image file without its task", ("C2-20",),
                             "deep check: an image file whose task row is gone"),
    "counter-below-rows": Kind("user counter below the user's rows", ("C2-02",),
                               "deep check: tasks_number smaller than the user's task rows"),
    "open-transaction": Kind("transaction left open", ("C2-04",),
                             "deep check: a service session idle in transaction after the load"),
    "lock-held": Kind("locks held by an idle session", ("C2-05",),
                      "deep check: row or table locks held by an idle-in-transaction session"),
    "not-recovered": Kind("service did not recover after a fault", ("C2-07",),
                          "after a fault was healed and the grace passed, requests still failed"),
}

# The kinds that are races (what a service with a racy claim and counter shows, and only that).
RACES = frozenset({"duplicate-grant", "lost-increment", "counter-below-rows"})


@dataclass
class Anomaly:
    kind: str
    ops: List[int]
    detail: str
    count: int = 1
    findings: Tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"kind": self.kind, "ops": self.ops, "detail": self.detail, "count": self.count,
                "findings": list(self.findings or KINDS[self.kind].findings)}


# --------------------------------------------------------------------------- what the history says


def task_owners(history: History) -> Dict[Any, str]:
    """task id -> label of the account whose 2xx creation returned it."""
    return {op.value["task_id"]: op.args.get("owner", op.actor)
            for op in history.by_action("create_task")
            if op.type == OK and op.value.get("task_id") is not None}


def accounts(history: History) -> Dict[str, dict]:
    """label -> {email, marker, user_id, credential} from the 2xx user creations."""
    out: Dict[str, dict] = {}
    for op in history.by_action("create_user"):
        label = op.args.get("account")
        if label is None:
            continue
        entry = out.setdefault(label, {"email": op.args.get("email"), "marker": op.args.get("marker")})
        if op.type == OK and op.value.get("credential") is not None:
            entry.update(user_id=op.value.get("user_id"), credential=op.value["credential"])
    return out


def grants(history: History) -> List[Op]:
    """Claims that answered with a task, in order of invocation."""
    return sorted((op for op in history.by_action("claim")
                   if op.type == OK and op.value.get("task_id") is not None),
                  key=lambda op: (op.t0, op.index))


def duplicates(ids: Iterable[Any]) -> int:
    """How many grants repeat a task an earlier grant got (the primitive the tests share)."""
    seen, extra = set(), 0
    for i in ids:
        if i in seen:
            extra += 1
        seen.add(i)
    return extra


def grant_summary(history: History) -> dict:
    """Figures of the claim endpoint: successful grants, "none free" answers, duplicates."""
    claims = history.by_action("claim")
    granted = grants(history)
    counts: Dict[str, int] = defaultdict(int)
    for op in granted:
        counts[str(op.value["task_id"])] += 1
    return {"ok": len(granted), "no_free_task": sum(1 for op in claims if op.value.get("none_free")),
            "duplicate_grants": duplicates(op.value["task_id"] for op in granted),
            "distinct_tasks": len(counts), "granted": dict(counts)}


ABORTED_MARKER = "current transaction is aborted"


def failure_kind_of(status: Optional[int], error: Optional[str], text: str = "",
                    none_free: bool = False) -> Optional[str]:
    """How a request failed, for load statistics (None when it succeeded): ``timeout``,
    ``connection_error``, ``aborted_transaction`` (PostgreSQL's message in the answer),
    ``http_500``, ``http_<code>``. A claim's "none free" status is a success."""
    if error == "timeout":
        return "timeout"
    if error is not None or status is None:
        return "connection_error"
    if ABORTED_MARKER in (text or ""):
        return "aborted_transaction"
    if status == 500:
        return "http_500"
    if status >= 400 and not none_free:
        return f"http_{status}"
    return None


def failure_kind(op: Op) -> Optional[str]:
    return failure_kind_of(op.status, op.error, op.response.get("text") or "", bool(op.value.get("none_free")))


def _forged(op: Op) -> bool:
    return op.args.get("as") is not None


def _faults(history: History) -> List[dict]:
    return history.fault_windows()


# --------------------------------------------------------------------------- the checkers


def check_grants(history: History) -> List[Anomaly]:
    """Duplicate grants (C2-01) and grants of tasks already deleted (C2-03)."""
    out: List[Anomaly] = []
    releases = defaultdict(list)
    for op in history.by_action("release"):
        if op.type == OK:
            releases[op.args.get("task_id")].append(op)
    first_grant: Dict[Any, Op] = {}
    for op in grants(history):
        task_id = op.value["task_id"]
        prev = first_grant.get(task_id)
        if prev is not None and not any(prev.t1 <= r.t0 and r.t1 <= op.t0 for r in releases[task_id]):
            out.append(Anomaly("duplicate-grant", [op.index, prev.index],
                               f"task {task_id} granted by op {prev.index} and again by op {op.index}"))
        else:
            first_grant[task_id] = op
    deletes = defaultdict(list)
    for op in history.by_action("delete_task"):
        if op.type == OK:
            deletes[op.args.get("task_id")].append(op)
    for op in grants(history):
        gone = [d for d in deletes[op.value["task_id"]] if d.t1 < op.t0]
        if gone:
            out.append(Anomaly("grant-of-deleted", [op.index, gone[0].index],
                               f"task {op.value['task_id']} deleted by op {gone[0].index} "
                               f"(done at {gone[0].t1:.3f}s), granted by op {op.index} begun at {op.t0:.3f}s"))
    return out


def counter_windows(history: History) -> List[dict]:
    """Consecutive, non-overlapping pairs of successful total reads and the creations between.

    A read observes the counter at some instant within its own interval, so a creation whose
    whole interval lies between the end of the first read and the start of the second must be
    counted (``ok``, 2xx), and any creation overlapping the span from the start of the first
    read to the end of the second may be (``maybe``: 2xx straddling a read, or indeterminate).
    ``rejected``: 4xx creations in that span; ``user_deletions``: deletions of users in it."""
    reads = sorted((op for op in history.by_action("total")
                    if op.type == OK and isinstance(op.value.get("total"), int)),
                   key=lambda op: (op.t0, op.index))
    creates = history.by_action("create_task")
    deletions = history.by_action("delete_user")
    windows, anchor = [], None
    for read in reads:
        if anchor is not None and anchor.t1 < read.t0:
            lo, hi = anchor.t1, read.t0  # surely between the two observations
            span_lo, span_hi = anchor.t0, read.t1  # possibly between them
            inside = [c for c in creates if c.t0 > lo and c.t1 < hi]
            touching = [c for c in creates if c.t1 > span_lo and c.t0 < span_hi]
            windows.append({
                "before": anchor, "after": read, "delta": read.value["total"] - anchor.value["total"],
                "ok": [c for c in inside if c.type == OK],
                "maybe": [c for c in touching if c.type != FAIL and not (c.type == OK and c in inside)],
                "rejected": [c for c in touching if c.type == FAIL],
                "user_deletions": [d for d in deletions if d.type != FAIL and d.t1 > span_lo and d.t0 < span_hi],
            })
        if anchor is None or anchor.t1 < read.t0:
            anchor = read
    return windows


def check_counter(history: History) -> List[Anomaly]:
    """Lost increments (C2-02), increments nobody caused (C2-21) and a total that went down (C2-22)."""
    out: List[Anomaly] = []
    for w in counter_windows(history):
        before, after, delta = w["before"], w["after"], w["delta"]
        pair = [after.index, before.index]
        if delta < 0:
            # With a user deleted in between, the total followed the deletion (C2-22); without,
            # the first read saw an increment that was not committed (a transaction left open).
            cause = (f"; {len(w['user_deletions'])} user deletion(s) between" if w["user_deletions"]
                     else "; no deletion between: the first read saw an uncommitted increment")
            out.append(Anomaly("counter-decreased", pair,
                               f"total {before.value['total']} (op {before.index}) then {after.value['total']} "
                               f"(op {after.index}){cause}",
                               findings=("C2-22",) if w["user_deletions"] else ("C2-04",)))
            continue
        if w["user_deletions"]:
            continue  # a deletion may legitimately lower a per-user sum: judged by the rule above only
        lower, upper = len(w["ok"]), len(w["ok"]) + len(w["maybe"])
        if delta < lower:
            out.append(Anomaly("lost-increment", pair + [c.index for c in w["ok"][:5]],
                               f"{lower} creations answered 2xx between total reads {before.value['total']} "
                               f"(op {before.index}) and {after.value['total']} (op {after.index}): "
                               f"{lower - delta} increment(s) lost", count=lower - delta))
        elif delta > upper:
            note = (f"; {len(w['rejected'])} creation(s) rejected with 4xx in between"
                    if w["rejected"] else "; no other client may use the service during a check")
            out.append(Anomaly("counter-overcount", pair + [c.index for c in w["rejected"][:5]],
                               f"total grew by {delta} while at most {upper} creation(s) may have "
                               f"happened{note}", count=delta - upper))
    return out


def check_access(history: History) -> List[Anomaly]:
    """Other users' tasks listed (C2-08), read (C2-09), claimed or deleted (C2-10); a public id
    accepted as identity (C2-10)."""
    owners = task_owners(history)
    accts = accounts(history)
    out: List[Anomaly] = []
    for op in history.ops:
        if op.type != OK:
            continue
        if _forged(op):
            out.append(Anomaly("impersonation", [op.index],
                               f"{op.action} sent with the public id of {op.args['as']} as identity "
                               f"answered {op.status}"))
            continue
        actor = op.actor
        if actor is None:
            continue
        if op.action == "list_tasks":
            foreign = [t for t in op.value.get("task_ids", []) if owners.get(t) not in (None, actor)]
            if foreign:
                whose = sorted({owners[t] for t in foreign})
                out.append(Anomaly("foreign-list", [op.index],
                                   f"{actor}'s list holds {len(foreign)} task(s) of {', '.join(whose)}"))
        elif op.action in ("get_task", "get_image"):
            owner = op.args.get("owner")
            if owner not in (None, actor):
                out.append(Anomaly("foreign-read", [op.index],
                                   f"{actor} read task {op.args.get('task_id')} of {owner} ({op.action}, {op.status})"))
        elif op.action == "delete_task":
            owner = op.args.get("owner")
            if owner not in (None, actor):
                # An idempotent 2xx that changed nothing is no hole: the owner's next read says.
                check = _next_owner_read(history, op, owner)
                if check is None or check.status == 404:
                    seen = "unverified" if check is None else f"the owner then found it gone (op {check.index})"
                    out.append(Anomaly("foreign-write", [op.index] + ([check.index] if check else []),
                                       f"{actor} deleted task {op.args.get('task_id')} of {owner} "
                                       f"({op.status}; {seen})"))
        elif op.action == "claim":
            owner = owners.get(op.value.get("task_id"))
            if owner not in (None, actor):
                out.append(Anomaly("foreign-write", [op.index],
                                   f"{actor} was granted task {op.value['task_id']} of {owner}"))
        elif op.action == "delete_user":
            target = op.args.get("user")
            if target not in (None, actor) and target in accts:
                later = [o for o in history.ops if o.actor == target and not _forged(o) and o.t0 > op.t1]
                if not later or any(o.status in (401, 403, 404) for o in later[:1]):
                    out.append(Anomaly("foreign-write", [op.index], f"{actor} deleted the account of {target}"))
    return out


def _next_owner_read(history: History, op: Op, owner: str) -> Optional[Op]:
    """The owner's first own read of ``op``'s task after ``op`` ended (None if there is none)."""
    reads = [r for r in history.by_action("get_task") if r.actor == owner and not _forged(r)
             and r.args.get("task_id") == op.args.get("task_id") and r.t0 > op.t1 and r.status is not None]
    return min(reads, key=lambda r: r.t0) if reads else None


def _secrets(accts: Dict[str, dict]) -> Dict[str, List[Tuple[str, str]]]:
    out = {}
    for label, a in accts.items():
        found = []
        for name in ("email", "marker"):
            if isinstance(a.get(name), str) and a[name]:
                found.append((name, a[name]))
        cred = a.get("credential")
        if isinstance(cred, str) and len(cred) >= SECRET_MIN_LENGTH:
            found.append(("token", cred))
        out[label] = found
    return out


def check_leaks(history: History) -> List[Anomaly]:
    """Answers that carry another account's e-mail, meta marker or token (C2-32, C2-08, C2-09)."""
    secrets = _secrets(accounts(history))
    out: List[Anomaly] = []
    for op in history.ops:
        text = op.response.get("text")
        if not text:
            continue
        me = op.actor if op.action != "create_user" else op.args.get("account")
        sent = json.dumps(op.request, ensure_ascii=False)  # a value the caller sent is no leak
        leaked = []
        for label, items in secrets.items():
            if label == me:
                continue
            names = [name for name, value in items if value in text and value not in sent]
            if names:
                leaked.append(f"{label}'s {'/'.join(names)}")
        if leaked:
            who = me or "an anonymous caller"
            out.append(Anomaly("data-leak", [op.index],
                               f"{op.action} answer to {who} holds {', '.join(leaked)}"))
    return out


_VALID_5XX_FINDINGS = {"get_image": ("C2-17",), "delete_task": ("C2-03", "C2-19")}


def check_errors(history: History) -> List[Anomaly]:
    """5xx (or a dropped connection) on valid and on hostile input, invalid input accepted, and
    requests that hang (C2-05); ops inside a fault window are the nemesis's, not the service's."""
    windows = _faults(history)
    threshold = float(history.meta.get("hang_threshold_s", HANG_THRESHOLD_S))
    out: List[Anomaly] = []
    for op in history.ops:
        if in_window(op, windows):
            continue
        findings = tuple(op.args.get("findings") or ())
        if op.error == "timeout" or (op.error is None and op.latency > threshold):
            what = "no answer" if op.error == "timeout" else f"answer {op.status}"
            out.append(Anomaly("hang", [op.index], f"{op.action}: {what} after {op.latency:.1f}s"))
            continue
        failed = op.error == "connection" or (op.status is not None and op.status >= 500)
        if failed and op.hostile:
            out.append(Anomaly("server-error-hostile", [op.index],
                               f"{op.args.get('case', op.action)}: {op.status or op.error}",
                               findings=findings or KINDS["server-error-hostile"].findings))
        elif failed:
            out.append(Anomaly("server-error", [op.index], f"{op.action}: {op.status or op.error}",
                               findings=_VALID_5XX_FINDINGS.get(op.action, KINDS["server-error"].findings)))
        elif op.hostile and op.args.get("expect") == "reject" and op.type == OK:
            out.append(Anomaly("invalid-accepted", [op.index],
                               f"{op.args.get('case', op.action)}: answered {op.status}",
                               findings=findings or KINDS["invalid-accepted"].findings))
    return out


def _gone_before(ops: Sequence[Op], t: float) -> bool:
    """Whether any of ``ops`` (deletions that may have happened) began before ``t``."""
    return any(d.type != FAIL and d.t0 < t for d in ops)


def check_roundtrip(history: History) -> List[Anomaly]:
    """What a 2xx creation stored must come back to its owner: the image's bytes and type
    (C2-16, C2-17, C2-18) and the meta (C2-13)."""
    created = {op.value["task_id"]: op for op in history.by_action("create_task")
               if op.type == OK and op.value.get("task_id") is not None}
    deletions = defaultdict(list)
    for op in history.by_action("delete_task"):
        deletions[op.args.get("task_id")].append(op)
    user_deletions = defaultdict(list)
    for op in history.by_action("delete_user"):
        user_deletions[op.args.get("user")].append(op)
    out: List[Anomaly] = []
    for op in history.by_action("get_image", "get_task"):
        task_id = op.args.get("task_id")
        create = created.get(task_id)
        if create is None or _forged(op) or op.actor != create.args.get("owner") or op.t0 < create.t1:
            continue
        if _gone_before(deletions[task_id], op.t1) or _gone_before(user_deletions[op.actor], op.t1):
            continue
        if op.action == "get_image" and create.args.get("image_sha256"):
            kind = create.args.get("image_kind", "")
            if op.type != OK:
                out.append(Anomaly("image-roundtrip", [op.index, create.index],
                                   f"{kind or 'image'} of task {task_id}: download answered {op.status or op.error}",
                                   findings=("C2-17", "C2-16")))
            elif op.value.get("sha256") != create.args["image_sha256"]:
                out.append(Anomaly("image-roundtrip", [op.index, create.index],
                                   f"{kind or 'image'} of task {task_id}: {op.value.get('length')} bytes back, "
                                   f"{create.args.get('image_length')} sent, content differs",
                                   findings=("C2-13", "C2-18")))
            else:
                ctype = (op.value.get("content_type") or "").split(";")[0].strip().lower()
                allowed = images.MIME.get(kind.split("-")[0], ())
                if ctype and allowed and ctype not in allowed:
                    out.append(Anomaly("image-roundtrip", [op.index, create.index],
                                       f"{kind} of task {task_id} served as {ctype}", findings=("C2-18",)))
        elif op.action == "get_task" and op.type == OK and "meta" in create.args:
            sent, back = create.args["meta"], op.value.get("meta")
            if back != sent:
                out.append(Anomaly("meta-roundtrip", [op.index, create.index],
                                   f"task {task_id}: meta sent {_short(sent)}, read back {_short(back)}"))
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def check_rejected(history: History) -> List[Anomaly]:
    """A deletion answered 4xx must not have happened: a later read by the owner that finds the
    task gone, with no other deletion that may have happened, shows it did (C2-04)."""
    by_task = defaultdict(list)
    for op in history.by_action("delete_task"):
        by_task[op.args.get("task_id")].append(op)
    user_deletions = history.by_action("delete_user")
    out: List[Anomaly] = []
    for op in history.by_action("get_task"):
        task_id, owner = op.args.get("task_id"), op.args.get("owner")
        if op.status != 404 or _forged(op) or op.actor != owner or task_id not in by_task:
            continue
        before = [d for d in by_task[task_id] if d.t1 < op.t0]
        if not before or any(d.type != FAIL for d in by_task[task_id] if d.t0 < op.t1):
            continue
        if any(d.type != FAIL and d.args.get("user") == owner and d.t0 < op.t1 for d in user_deletions):
            continue
        out.append(Anomaly("rejected-took-effect", [before[0].index, op.index],
                           f"deletion of task {task_id} answered {before[0].status}, "
                           f"yet its owner then found it gone (op {op.index})"))
    return out


def check_snapshots(history: History) -> List[Anomaly]:
    """Deep checks over the database and image-folder snapshots the run took."""
    out: List[Anomaly] = []
    for snap in history.snapshots():
        label = snap.get("label", "snapshot")
        tasks = snap.get("tasks")
        files = snap.get("files")
        if tasks is not None and files is not None:
            rows = {int(t[0]) for t in tasks}
            file_ids = {int(i) for i in files.get("ids", [])}
            missing = sorted(rows - file_ids)
            stray = sorted(file_ids - rows)
            if missing:
                out.append(Anomaly("row-without-file", [], f"{label}: task rows without an image file: "
                                   f"{_ids(missing)}", count=len(missing)))
            if stray:
                out.append(Anomaly("file-without-row", [], f"{label}: image files without a task row: "
                                   f"{_ids(stray)}", count=len(stray)))
        users = snap.get("users")
        if tasks is not None and users is not None:
            per_owner: Dict[int, int] = defaultdict(int)
            for _, owner in tasks:
                per_owner[int(owner)] += 1
            below = [(uid, n, per_owner[int(uid)]) for uid, n in users if n < per_owner[int(uid)]]
            if below:
                lost = sum(rows - n for _, n, rows in below)
                out.append(Anomaly("counter-below-rows", [], f"{label}: {len(below)} user(s) count fewer "
                                   f"tasks than they own rows, {lost} in all (e.g. user {below[0][0]}: "
                                   f"{below[0][1]} counted, {below[0][2]} rows)", count=lost))
        sessions = snap.get("activity")
        if sessions is not None:
            idle = [s for s in sessions if (s.get("state") or "").startswith("idle in transaction")]
            if idle:
                states = sorted({s["state"] for s in idle})
                out.append(Anomaly("open-transaction", [], f"{label}: {len(idle)} session(s) "
                                   f"{' / '.join(states)}, oldest {max(s.get('xact_age_s') or 0 for s in idle):.1f}s",
                                   count=len(idle)))
        locks = snap.get("locks")
        if locks is not None:
            # Uncommitted writes (a transaction id, row-level or stronger table locks) of an
            # idle session block every writer of those rows until it ends; plain reads do not.
            held = [lk for lk in locks if lk.get("granted") and lk.get("idle_in_transaction")
                    and (lk.get("locktype") == "transactionid" or lk.get("mode") != "AccessShareLock")]
            waiting = [lk for lk in locks if not lk.get("granted")]
            if held or waiting:
                rels = sorted({str(lk.get("relation")) for lk in held if lk.get("relation")})
                out.append(Anomaly("lock-held", [], f"{label}: {len(held)} lock(s) held by idle-in-transaction "
                                   f"sessions{' on ' + ', '.join(rels) if rels else ''}; {len(waiting)} waiting",
                                   count=len({lk.get('pid') for lk in held}) + len(waiting)))
    return out


def _ids(ids: Sequence[int], shown: int = 8) -> str:
    text = ", ".join(str(i) for i in ids[:shown])
    return text + (f" … ({len(ids)} in all)" if len(ids) > shown else "")


def check_recovery(history: History) -> List[Anomaly]:
    """After each healed fault and its grace, requests must succeed again (C2-07)."""
    out: List[Anomaly] = []
    for w in _faults(history):
        ready = w["stop"] + w.get("recover_s", 0.0)
        after = [op for op in history.ops if op.t0 >= ready and op.tags.get("phase") == f"after:{w['fault']}"]
        failed = [op for op in after if op.error is not None or (op.status or 0) >= 500]
        if failed:
            out.append(Anomaly("not-recovered", [failed[0].index],
                               f"{w['fault']}: {len(failed)} of {len(after)} requests after healing failed "
                               f"(first: {failed[0].action} {failed[0].status or failed[0].error})",
                               count=len(failed)))
    return out


CHECKERS: Tuple[Callable[[History], List[Anomaly]], ...] = (
    check_grants, check_counter, check_access, check_leaks, check_errors, check_roundtrip,
    check_rejected, check_snapshots, check_recovery,
)


def coverage(history: History) -> Dict[str, int]:
    """How much each checker had to look at: a check with nothing to look at proves nothing."""
    owners = task_owners(history)
    windows = counter_windows(history)

    def cross_user(op: Op) -> bool:
        if op.actor is None:
            return False
        if _forged(op) or op.args.get("owner") not in (None, op.actor):
            return True  # aimed at another user's task or account
        return op.action == "list_tasks" and bool(set(owners.values()) - {op.actor})

    return {
        "ops": len(history.ops),
        "grants": len(grants(history)),
        "counter_windows_with_creations": sum(1 for w in windows if w["ok"]),
        "creations_counted": sum(len(w["ok"]) for w in windows),
        "cross_user_probes": sum(1 for op in history.ops if cross_user(op)),
        "answers_scanned": sum(1 for op in history.ops if op.response.get("text")),
        "hostile_inputs": sum(1 for op in history.ops if op.hostile),
        "images_checked": sum(1 for op in history.by_action("get_image")
                              if op.args.get("owner") == op.actor and not _forged(op)),
        "snapshots": len(history.snapshots()),
        "faults": len(_faults(history)),
        "unreadable_answers": sum(1 for op in history.ops if op.value.get("shape_error")),
    }


# Coverage a run of the standard workloads must reach before "no anomaly" means anything.
REQUIRED_COVERAGE = ("grants", "counter_windows_with_creations", "cross_user_probes",
                     "hostile_inputs", "images_checked")


def run(history: History, checkers: Sequence[Callable[[History], List[Anomaly]]] = CHECKERS) -> dict:
    """Every checker over ``history``: anomalies, counts by kind, coverage and warnings."""
    anomalies: List[Anomaly] = []
    for checker in checkers:
        anomalies.extend(checker(history))
    counts: Dict[str, int] = defaultdict(int)
    for a in anomalies:
        counts[a.kind] += a.count
    cov = coverage(history)
    warnings = []
    workloads = set(history.meta.get("workloads") or [])
    needs = {"grants": "claims", "counter_windows_with_creations": "counter",
             "cross_user_probes": "isolation", "hostile_inputs": "hostile", "images_checked": "images"}
    for key in REQUIRED_COVERAGE:
        if cov[key] == 0 and (not workloads or needs[key] in workloads):
            warnings.append(f"nothing to check for {key.replace('_', ' ')}: the "
                            f"{needs[key]} workload did not get that far")
    warnings += list(history.meta.get("workload_errors") or [])
    if cov["unreadable_answers"]:
        warnings.append(f"{cov['unreadable_answers']} 2xx answer(s) the adapter could not read: "
                        "is the API mapping right?")
    return {"anomalies": [a.to_json() for a in anomalies],
            "counts": dict(sorted(counts.items())), "coverage": cov, "warnings": warnings}
