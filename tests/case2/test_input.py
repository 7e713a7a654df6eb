"""Bad input of every kind: what comes back, and what is left in the database and on disk."""
from __future__ import annotations

from .helpers import b64, evidence


@evidence("C2-13")
def test_user_creation_bad_bodies(service, side, stack):
    api = service.api
    cases = {
        "no body": api.request("POST", "/users"),
        "form body": api.request("POST", "/users", data={"email": "a@example.com"}),
        "malformed json": api.request("POST", "/users", data="{", headers={"Content-Type": "application/json"}),
        "missing email": api.request("POST", "/users", json={}),
        "json array": api.request("POST", "/users", json=["a@example.com"]),
    }
    codes = {k: r.status_code for k, r in cases.items()}
    if side == "as_given" and stack == "2020":
        # Flask 1.1: request.json is None for a body that is not JSON, and None["email"] is a 500.
        assert codes == {"no body": 500, "form body": 500, "malformed json": 400,
                         "missing email": 500, "json array": 500}
        assert service.error_texts() == ["TypeError: 'NoneType' object is not subscriptable"] * 2 + [
            "KeyError: 'email'", "TypeError: list indices must be integers or slices, not str"]
        assert all(r.headers["Content-Type"].startswith("text/html") for r in cases.values())
    elif side == "as_given":
        # Flask >= 2.3: request.json raises 415 Unsupported Media Type for a non-JSON body.
        assert codes == {"no body": 415, "form body": 415, "malformed json": 400,
                         "missing email": 500, "json array": 500}
        assert service.error_texts() == ["KeyError: 'email'",
                                         "TypeError: list indices must be integers or slices, not str"]
        assert all(r.headers["Content-Type"].startswith("text/html") for r in cases.values())
    else:
        assert codes == {"no body": 415, "form body": 415, "malformed json": 400,
                         "missing email": 400, "json array": 400}
    assert service.db.users() == []


@evidence("C2-13")
def test_meta_of_any_json_type_is_stored_as_python_repr(service, side):
    user = service.api.create_user("a@example.com")
    stored = {}
    for meta in [{"k": "v"}, [1, 2], 42, None]:
        r = service.api.post_task(user, meta=meta)
        read = service.api.get(f"/tasks/{r.json()['id']}", user) if r.status_code == 200 else None
        stored[repr(meta)] = (r.status_code, r.json()["metadata"] if read else None,
                              read.json()["metadata"] if read else None)
    if side == "as_given":
        # The creation echoes the JSON value; what was stored (and is read back) is its repr.
        assert stored["{'k': 'v'}"] == (200, {"k": "v"}, "{'k': 'v'}")
        assert stored["[1, 2]"] == (200, [1, 2], "[1, 2]")
        assert stored["42"] == (200, 42, "42")
        assert stored["None"] == (500, None, None)  # NOT NULL violation, thread poisoned (C2-04)
        assert service.error_names() == ["IntegrityError"]
    else:
        assert {code for code, *_ in stored.values()} == {400}


@evidence("C2-13")
def test_image_that_is_not_base64_or_not_an_image(service, side):
    user = service.api.create_user("a@example.com")
    garbage = service.api.request("POST", "/tasks", user, json={"meta": "m", "image": "!!!!"})
    padding = service.api.request("POST", "/tasks", user, json={"meta": "m", "image": "abc"})
    text = service.api.request("POST", "/tasks", user, json={"meta": "m", "image": b64(b"hello")})
    number = service.api.request("POST", "/tasks", user, json={"meta": "m", "image": 5})
    if side == "as_given":
        # Non-alphabet characters are silently dropped: an empty "image" is stored.
        assert garbage.status_code == 200
        assert service.image_path(garbage.json()["id"]).read_bytes() == b""
        assert padding.status_code == 500
        assert text.status_code == 200  # no check that the bytes are an image
        assert number.status_code == 500
        assert service.error_texts() == ["Error: Incorrect padding",
                                         "TypeError: argument should be a bytes-like object or ASCII "
                                         "string, not 'int'"]
    else:
        assert {garbage.status_code, padding.status_code, text.status_code, number.status_code} == {400}


@evidence("C2-14")
def test_email_neither_validated_nor_unique_case_insensitively(service, side):
    api = service.api
    codes = [api.request("POST", "/users", json={"email": e}).status_code
             for e in ["Alice@Example.com", "alice@example.com", "not an email", "", 123]]
    if side == "as_given":
        assert codes == [200] * 5
        assert [u[1] for u in service.db.users()] == [
            "Alice@Example.com", "alice@example.com", "not an email", "", "123"]
    else:
        assert codes == [201, 409, 400, 400, 400]


@evidence("C2-14", "C2-15")
def test_email_longer_than_column_and_duplicate_are_500(service, side):
    long_email = "a" * 250 + "@x.io"
    r = service.api.request("POST", "/users", json={"email": long_email})
    if side == "as_given":
        assert r.status_code == 500
        assert service.error_texts()[0].startswith("DataError: value too long for type character varying(254)")
    else:
        assert r.status_code == 400


@evidence("C2-22")
def test_total_decreases_when_a_user_is_deleted(service, side):
    alice = service.api.create_user("alice@example.com")
    bob = service.api.create_user("bob@example.com")
    for _ in range(2):
        service.api.create_task(alice)
    service.api.create_task(bob)
    before = service.api.get("/total_tasks_created", bob).json()["total_tasks_created"]
    service.api.delete(f"/users/{alice['id']}", alice)
    after = service.api.get("/total_tasks_created", bob).json()["total_tasks_created"]
    assert before == 3
    if side == "as_given":
        assert after == 1
    else:
        assert after == 3


@evidence("C2-23")
def test_no_request_size_limit(service, side):
    user = service.api.create_user("a@example.com")
    blob = bytes(20 * 2**20)  # 20 MiB of image, ~27 MiB of JSON
    r = service.api.post_task(user, image=blob)
    if side == "as_given":
        assert r.status_code == 200
        assert service.image_path(r.json()["id"]).stat().st_size == len(blob)
    else:
        assert r.status_code == 413
