"""Who can read or change what: ownership checks, the user_id "authentication", status codes."""
from __future__ import annotations

from .helpers import evidence, wait_until


def _two_users(svc):
    alice = svc.api.create_user("alice@example.com")
    bob = svc.api.create_user("bob@example.com")
    task = svc.api.create_task(alice, meta="alice's secret")
    return alice, bob, task


@evidence("C2-08", "C2-32")
def test_task_list_contains_other_users_tasks_and_emails(service, side):
    alice, bob, task = _two_users(service)
    r = service.api.get("/tasks", bob)
    assert r.status_code == 200
    if side == "as_given":
        assert r.json() == [{"id": task["id"], "free": True, "metadata": "alice's secret",
                             "owner": {"id": alice["id"], "email": "alice@example.com",
                                       "tasks_number": 1}}]
    else:
        assert r.json() == [] or r.json().get("items") == []


@evidence("C2-09", "C2-32")
def test_any_user_reads_any_task(service, side):
    alice, bob, task = _two_users(service)
    r = service.api.get(f"/tasks/{task['id']}", bob)
    if side == "as_given":
        assert r.status_code == 200
        assert r.json()["metadata"] == "alice's secret"
        assert r.json()["owner"]["email"] == "alice@example.com"
    else:
        assert r.status_code in (403, 404)


@evidence("C2-10")
def test_user_id_parameter_is_the_whole_identity(service, side):
    alice, bob, task = _two_users(service)
    # Bob only needs to know (or guess: ids are sequential) Alice's id.
    forged = {"params": {"user_id": alice["id"]}}
    protocol = service.api.protocol
    image = service.api.request("GET", f"/tasks/{task['id']}/image", **forged)
    taken = service.api.request(protocol.claim_method, protocol.claim_path, **forged)
    deleted = service.api.request("DELETE", f"/users/{alice['id']}", **forged)
    if side == "as_given":
        assert taken.status_code == 200 and taken.json()["id"] == task["id"]
        assert deleted.status_code == 200 and deleted.json() == {}
        assert [u[1] for u in service.db.users()] == ["bob@example.com"]
        assert image.status_code == 500  # the path defect C2-17, not an access check
    else:
        # The same forged requests, now on the routes that exist: all refused, nothing changed.
        assert [image.status_code, taken.status_code, deleted.status_code] == [401] * 3
        assert [u[1] for u in service.db.users()] == ["alice@example.com", "bob@example.com"]
        assert [t[1] for t in service.db.tasks()] == [True]


@evidence("C2-10")
def test_user_id_in_query_string_lands_in_access_logs(make_process, side):
    svc = make_process("gunicorn", threads=1)
    user = svc.api.create_user("a@example.com")
    assert svc.api.get("/tasks", user).status_code == 200
    # What a client that still sends the id in the URL gets.
    forged = svc.api.request("GET", "/tasks", params={"user_id": user["id"]})
    log = wait_until(lambda: "user_id=" in svc.log() and svc.log(), what="the access log line")
    if side == "as_given":
        assert forged.status_code == 200
        assert f'"GET /tasks?user_id={user["id"]} HTTP/1.1" 200' in log
    else:
        assert forged.status_code == 401  # the id in the URL identifies no one
        assert f'"GET /tasks?user_id={user["id"]} HTTP/1.1" 401' in log
        assert '"GET /tasks HTTP/1.1" 200' in log and user["token"] not in log


@evidence("C2-12")
def test_deleting_another_user_is_401_not_403(service, side):
    alice, bob, _ = _two_users(service)
    r = service.api.delete(f"/users/{alice['id']}", bob)
    assert len(service.db.users()) == 2
    if side == "as_given":
        assert r.status_code == 401
        assert "WWW-Authenticate" not in r.headers
        assert r.headers["Content-Type"].startswith("text/html")
    else:
        assert r.status_code == 403 and r.headers["Content-Type"] == "application/json"


@evidence("C2-12")
def test_unknown_ids_and_malformed_user_id_are_500(service, side):
    alice, _, task = _two_users(service)
    responses = {
        "unknown task": service.api.get("/tasks/999", alice),
        "unknown task image": service.api.get("/tasks/999/image", alice),
        "unknown task delete": service.api.delete("/tasks/999", alice),
        "unknown user": service.api.request("GET", "/tasks", params={"user_id": 999}),
        "non-integer user_id": service.api.request("GET", "/tasks", params={"user_id": "abc"}),
        "empty user_id": service.api.request("GET", "/tasks", params={"user_id": ""}),
    }
    codes = {k: r.status_code for k, r in responses.items()}
    if side == "as_given":
        assert codes == dict.fromkeys(responses, 500)
        assert service.error_names() == ["TaskDoesNotExist"] * 3 + ["UserDoesNotExist"] + ["ValueError"] * 2
        # int() is lenient: "0_1" and " 1 " both authenticate as user 1.
        assert service.api.request("GET", "/tasks", params={"user_id": f"0_{alice['id']}"}).status_code == 200
        assert service.api.request("GET", "/tasks", params={"user_id": f" {alice['id']} "}).status_code == 200
    else:
        assert codes == {"unknown task": 404, "unknown task image": 404, "unknown task delete": 404,
                         "unknown user": 401, "non-integer user_id": 401, "empty user_id": 401}


@evidence("C2-12")
def test_missing_user_id_is_401_html(service, side):
    r = service.api.get("/tasks")
    assert r.status_code == 401
    if side == "as_given":
        assert r.headers["Content-Type"].startswith("text/html") and "WWW-Authenticate" not in r.headers
    else:
        assert r.headers["Content-Type"] == "application/json"
