"""Every checker against a clean history (it must stay silent) and against a mutant of that
history holding exactly the anomaly it is for (it must flag it, and only it)."""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional

import pytest

from taskcheck import checks, report
from taskcheck.history import History, Op, outcome

SHA = "ab" * 32


class Builder:
    """A history written by hand: ops one after another on a fake clock."""

    def __init__(self):
        self.h = History({"workloads": ["claims", "counter", "isolation", "hostile", "images"],
                          "hang_threshold_s": 5.0})
        self.t = 0.0

    def op(self, action: str, actor: Optional[str] = None, status: Optional[int] = 200,
           args: Optional[dict] = None, value: Optional[dict] = None, t0: Optional[float] = None,
           dur: float = 0.01, error: Optional[str] = None, text: Optional[str] = None,
           tags: Optional[dict] = None) -> Op:
        start = self.t if t0 is None else t0
        self.t = max(self.t, start + dur + 0.001)
        op = Op(index=self.h.next_index(), process="p", workload="w", action=action, actor=actor,
                t0=start, t1=start + dur, request={"method": "GET", "path": f"/{action}"},
                status=None if error else status, response={"text": text} if text else {},
                error=error, type=outcome(None if error else status, error), args=dict(args or {}),
                value=dict(value or {}), tags=dict(tags or {}))
        return self.h.add(op)

    def user(self, label: str) -> None:
        self.op("create_user", args={"account": label, "email": f"{label}@example.test",
                                     "marker": f"marker-{label}-0123"},
                value={"user_id": len(label), "credential": f"token-of-{label}-0123456789"},
                text=json.dumps({"email": f"{label}@example.test", "token": f"token-of-{label}-0123456789"}))

    def task(self, owner: str, task_id: int, kind: str = "png") -> Op:
        return self.op("create_task", owner, 201,
                       args={"owner": owner, "meta": f"meta marker-{owner}-0123", "image_sha256": SHA,
                             "image_kind": kind, "image_length": 10},
                       value={"task_id": task_id}, text=json.dumps({"id": task_id}))


def clean() -> Builder:
    """Two users, their tasks, claims, totals, reads of their own data, a rejected hostile
    request and a rejected cross-user read: every checker has something to look at."""
    b = Builder()
    b.user("alice")
    b.user("bob")
    b.op("total", "alice", value={"total": 0})
    b.task("alice", 1)
    b.task("alice", 2)
    b.task("bob", 3)
    b.op("total", "alice", value={"total": 3})
    b.op("claim", "alice", value={"task_id": 1}, text='{"id": 1}')
    b.op("claim", "alice", value={"task_id": 2}, text='{"id": 2}')
    b.op("claim", "alice", status=204, value={"none_free": True})
    b.op("list_tasks", "bob", value={"task_ids": [3]}, text='[{"id": 3, "meta": "meta marker-bob-0123"}]')
    b.op("get_task", "bob", 404, args={"task_id": 1, "owner": "alice"}, text='{"error": "no such task"}')
    b.op("delete_task", "bob", 404, args={"task_id": 2, "owner": "alice"})
    b.op("get_task", "alice", args={"task_id": 2, "owner": "alice"},
         value={"meta": "meta marker-alice-0123"}, text='{"id": 2, "meta": "meta marker-alice-0123"}')
    b.op("get_image", "alice", args={"task_id": 1, "owner": "alice"},
         value={"sha256": SHA, "length": 10, "content_type": "image/png"})
    b.op("get_task", "bob", 401, args={"task_id": 1, "owner": "alice", "as": "alice"})
    b.op("create_task", "bob", 400, args={"input": "hostile", "case": "image missing", "expect": "reject",
                                          "findings": ["C2-13"], "owner": "bob"})
    b.op("delete_task", "alice", 204, args={"task_id": 2, "owner": "alice"})
    b.op("get_task", "alice", 404, args={"task_id": 2, "owner": "alice"})
    b.op("total", "alice", value={"total": 3})
    return b


def kinds(history: History) -> Dict[str, int]:
    return checks.run(history)["counts"]


def test_a_clean_history_has_no_anomaly_and_full_coverage():
    result = checks.run(clean().h)
    assert result["anomalies"] == [] and result["warnings"] == []
    cov = result["coverage"]
    for key in checks.REQUIRED_COVERAGE:
        assert cov[key] > 0, key


def _duplicate_grant(b):
    b.op("claim", "alice", value={"task_id": 1})


def _grant_of_deleted(b):
    b.task("alice", 8)
    b.op("delete_task", "alice", 204, args={"task_id": 8, "owner": "alice"})
    b.op("claim", "alice", value={"task_id": 8})  # deleted (204) before this claim began


def _lost_increment(b):
    b.task("bob", 4)
    b.task("bob", 5)
    b.op("total", "alice", value={"total": 4})  # two creations answered 2xx, one counted


def _overcount(b):
    b.op("create_task", "bob", 400, args={"owner": "bob"})
    b.op("total", "alice", value={"total": 4})  # a rejected creation was counted


def _decreased(b):
    b.op("delete_user", "bob", 204, args={"user": "bob", "owner": "bob"})
    b.op("total", "alice", value={"total": 2})


def _foreign_list(b):
    b.op("list_tasks", "bob", value={"task_ids": [3, 1]})


def _foreign_read(b):
    b.op("get_image", "bob", args={"task_id": 1, "owner": "alice"}, value={"sha256": SHA})


def _foreign_claim(b):
    b.op("claim", "bob", value={"task_id": 3})
    b.task("alice", 9)
    b.op("claim", "bob", value={"task_id": 9})  # alice's task handed to bob


def _foreign_delete(b):
    b.op("delete_task", "bob", 204, args={"task_id": 1, "owner": "alice"})
    b.op("get_task", "alice", 404, args={"task_id": 1, "owner": "alice"})  # it is gone


def _foreign_delete_no_effect(b):  # an idempotent 204 that changed nothing
    b.op("delete_task", "bob", 204, args={"task_id": 1, "owner": "alice"})
    b.op("get_task", "alice", 200, args={"task_id": 1, "owner": "alice"}, value={"meta": "meta marker-alice-0123"})


def _foreign_account_deletion(b):
    b.op("delete_user", "bob", 204, args={"user": "alice", "owner": "alice"})
    b.op("total", "alice", 401)


def _impersonation(b):
    b.op("list_tasks", "bob", args={"as": "alice"}, value={"task_ids": []})


def _leak(b):
    b.op("total", "bob", value={"total": 3}, text='{"total": 3, "by": "alice@example.test"}')


def _echo(b):  # the service repeats what the caller sent: not a leak
    b.op("create_user", None, 409, args={"input": "hostile", "case": "duplicate", "expect": "reject"},
         text='{"error": "alice@example.test is taken"}')
    b.h.ops[-1].request["json"] = {"email": "alice@example.test"}


def _server_error(b):
    b.op("get_task", "alice", 500, args={"task_id": 1, "owner": "alice"}, text="Internal Server Error")


def _dropped(b):
    b.op("total", "alice", error="connection")


def _server_error_hostile(b):
    b.op("create_user", None, 500, args={"input": "hostile", "case": "email missing", "expect": "reject",
                                         "findings": ["C2-13"]})


def _invalid_accepted(b):
    b.op("create_user", None, 200, args={"input": "hostile", "case": "email empty", "expect": "reject",
                                         "findings": ["C2-14"]})


def _hang(b):
    b.op("total", "alice", error="timeout", dur=5.0)


def _slow(b):
    b.op("total", "alice", dur=7.5, value={"total": 3})


def _image_missing(b):
    b.op("get_image", "alice", 404, args={"task_id": 1, "owner": "alice"})


def _image_bytes(b):
    b.op("get_image", "alice", args={"task_id": 1, "owner": "alice"},
         value={"sha256": "cd" * 32, "length": 0, "content_type": "image/png"})


def _image_type(b):
    b.op("get_image", "alice", args={"task_id": 1, "owner": "alice"},
         value={"sha256": SHA, "length": 10, "content_type": "image/jpeg"})


def _meta(b):
    b.op("get_task", "alice", args={"task_id": 1, "owner": "alice"}, value={"meta": "something else"})


def _rejected_took_effect(b):
    b.op("delete_task", "bob", 403, args={"task_id": 1, "owner": "alice"})
    b.op("get_task", "alice", 404, args={"task_id": 1, "owner": "alice"})


def _snapshot(**data: Any) -> Callable[[Builder], None]:
    base = {"tasks": [[1, 5], [3, 3]], "users": [[5, 2], [3, 1]], "files": {"ids": [1, 3]},
            "activity": [{"pid": 7, "state": "idle", "xact_age_s": 0}], "locks": []}

    def mutate(b):
        b.h.event("snapshot", label="final", **{**base, **data})
    return mutate


def _not_recovered(b):
    b.h.event("nemesis", fault="pg-restart", phase="start")
    b.t += 0.1
    b.h.event("nemesis", fault="pg-restart", phase="stop", recover_s=0.5)
    b.op("total", "alice", 500, t0=b.t + 1.0, tags={"phase": "after:pg-restart"})


def _clean_fault(b):  # a 5xx inside the fault window is the nemesis's doing, not an anomaly
    b.t = max(b.t, b.h.now())
    b.h.event("nemesis", fault="kill-worker", phase="start")
    b.op("total", "alice", error="connection", t0=b.h.now())
    b.h.event("nemesis", fault="kill-worker", phase="stop", recover_s=0.5)


MUTANTS = {
    "duplicate-grant": _duplicate_grant,
    "grant-of-deleted": _grant_of_deleted,
    "lost-increment": _lost_increment,
    "counter-overcount": _overcount,
    "counter-decreased": _decreased,
    "foreign-list": _foreign_list,
    "foreign-read": _foreign_read,
    "foreign-write": _foreign_claim,
    "impersonation": _impersonation,
    "data-leak": _leak,
    "server-error": _server_error,
    "server-error-hostile": _server_error_hostile,
    "invalid-accepted": _invalid_accepted,
    "hang": _hang,
    "image-roundtrip": _image_missing,
    "meta-roundtrip": _meta,
    "rejected-took-effect": _rejected_took_effect,
    "row-without-file": _snapshot(files={"ids": [3]}),
    "file-without-row": _snapshot(files={"ids": [1, 3, 8]}),
    "counter-below-rows": _snapshot(users=[[5, 0], [3, 1]]),
    "open-transaction": _snapshot(activity=[{"pid": 7, "state": "idle in transaction", "xact_age_s": 9}]),
    "lock-held": _snapshot(locks=[{"pid": 7, "locktype": "transactionid", "mode": "ExclusiveLock",
                                   "granted": True, "idle_in_transaction": True}]),
    "not-recovered": _not_recovered,
}
# A request that fails after a fault was healed is also a server error: both are reported.
COMPANIONS = {"not-recovered": {"server-error"}}
VARIANTS = {  # further mutants of a kind, flagged as that kind
    "server-error (dropped connection)": ("server-error", _dropped),
    "hang (slow answer)": ("hang", _slow),
    "image-roundtrip (bytes)": ("image-roundtrip", _image_bytes),
    "image-roundtrip (type)": ("image-roundtrip", _image_type),
    "foreign-write (deleted a task)": ("foreign-write", _foreign_delete),
    "foreign-write (deleted an account)": ("foreign-write", _foreign_account_deletion),
}


def test_every_kind_has_a_mutant_and_a_known_finding():
    assert set(MUTANTS) == set(checks.KINDS)
    registry = open("review/findings/case2.yaml", encoding="utf-8").read()
    for kind in checks.KINDS.values():
        for finding in kind.findings:
            assert f"- id: {finding}\n" in registry, finding


@pytest.mark.parametrize("kind", sorted(MUTANTS))
def test_each_checker_flags_exactly_its_mutant(kind):
    b = clean()
    MUTANTS[kind](b)
    found = kinds(b.h)
    assert kind in found, found
    assert set(found) == {kind} | COMPANIONS.get(kind, set()), found


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_further_mutants_are_flagged(name):
    kind, mutate = VARIANTS[name]
    b = clean()
    mutate(b)
    assert set(kinds(b.h)) == {kind}


def test_a_foreign_delete_that_changed_nothing_is_no_hole():
    b = clean()
    _foreign_delete_no_effect(b)
    assert kinds(b.h) == {}


def test_an_answer_echoing_the_request_is_no_leak():
    b = clean()
    _echo(b)
    assert kinds(b.h) == {}


def test_anomalies_inside_a_fault_window_are_not_the_services():
    b = clean()
    _clean_fault(b)
    assert kinds(b.h) == {}


def test_indeterminate_creations_widen_the_counter_bounds():
    b = clean()
    b.op("create_task", "bob", 500, args={"owner": "bob"})  # may have happened
    b.op("create_task", "bob", error="timeout", args={"owner": "bob"}, dur=0.5)
    b.op("total", "alice", value={"total": 5})  # both happened: fine
    b.op("create_task", "bob", 500, args={"owner": "bob"})
    b.op("total", "alice", value={"total": 5})  # it did not: fine too
    found = kinds(b.h)
    assert "lost-increment" not in found and "counter-overcount" not in found
    assert found == {"server-error": 2, "hang": 1}


def test_a_creation_overlapping_a_read_may_or_may_not_be_counted():
    b = clean()
    start = b.t
    b.op("total", "alice", value={"total": 4}, t0=start, dur=0.2)  # saw the creation below
    b.op("create_task", "bob", 201, args={"owner": "bob"}, value={"task_id": 7}, t0=start + 0.05, dur=0.05)
    b.op("total", "alice", value={"total": 4}, t0=start + 0.3)
    assert kinds(b.h) == {}


def test_a_released_task_may_be_granted_again():
    b = clean()
    b.op("release", "alice", args={"task_id": 1})
    b.op("claim", "alice", value={"task_id": 1})
    assert kinds(b.h) == {}


def test_counts_weigh_each_anomaly_and_the_report_renders_them(tmp_path):
    b = clean()
    _lost_increment(b)
    _duplicate_grant(b)
    result = checks.run(b.h)
    assert result["counts"] == {"duplicate-grant": 1, "lost-increment": 1}
    b.task("bob", 10)
    b.task("bob", 11)
    b.task("bob", 12)
    b.op("total", "alice", value={"total": 4})
    assert checks.run(b.h)["counts"]["lost-increment"] == 4  # 1 + 3 lost in the second window
    summary = report.summarise(b.h)
    md, page = report.markdown(summary), report.html_page(summary)
    for kind, finding in (("duplicate-grant", "C2-01"), ("lost-increment", "C2-02")):
        assert kind in md and finding in md and kind in page and finding in page
    assert "| task granted to two claims (`duplicate-grant`) | 1 |" in md


def test_history_round_trips_through_its_file(tmp_path):
    b = clean()
    _duplicate_grant(b)
    _snapshot(files={"ids": [3]})(b)
    path = b.h.write(tmp_path / "h.jsonl")
    again = History.read(path)
    assert [op.to_json() for op in again.ops] == [op.to_json() for op in b.h.ops]
    assert checks.run(again) == checks.run(b.h)


def test_a_corrupt_or_newer_history_is_refused(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "meta", "format": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        History.read(bad)
    bad.write_text('{"kind": "meta", "format": 99}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="newer"):
        History.read(bad)


def test_a_workload_that_broke_makes_the_run_inconclusive():
    b = clean()
    b.h.meta["workload_errors"] = ["workload images stopped: WorkloadError: no account"]
    assert checks.run(b.h)["warnings"] == b.h.meta["workload_errors"]


def test_duplicates_primitive():
    assert checks.duplicates([1, 2, 3]) == 0
    assert checks.duplicates([1, 2, 1, 1, 3, 2]) == 3


def test_grant_summary_counts_like_the_load_runs():
    b = clean()
    _duplicate_grant(b)
    s = checks.grant_summary(b.h)
    assert (s["ok"], s["no_free_task"], s["duplicate_grants"], s["distinct_tasks"]) == (3, 1, 1, 2)
    assert s["granted"] == {"1": 2, "2": 1}


