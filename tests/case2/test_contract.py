"""The OpenAPI document and the code are one API: every route is documented and every
documented operation is routed; the document is served by the service and is valid; the error
format is the one the document states. (Every response any test of the fixed service gets is
checked against the document by the test client: ``contract.py``.)"""
from __future__ import annotations

import re

import pytest

from .helpers import JPEG_4PX


@pytest.fixture
def side():
    return "fixed"


def _document():
    from reference.case2.fixed.config import Config
    from reference.case2.fixed.openapi import document

    return document(Config())


def _routes(app) -> set[tuple[str, str]]:
    """(method, OpenAPI path template) of every route the application serves."""
    routes = set()
    for rule in app.url_map.iter_rules():
        template = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        routes |= {(m.lower(), template) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


@pytest.mark.finding("C2-29", side="fixed")
def test_every_route_is_documented_and_every_operation_routed():
    from reference.case2.fixed.app import create_app
    from reference.case2.fixed.config import Config

    document = _document()
    documented = {(method, path) for path, item in document["paths"].items()
                  for method in item if method in ("get", "post", "put", "patch", "delete")}
    assert _routes(create_app(Config())) == documented
    # The one API of CONTRIBUTING ("The redesigned Case 2 API").
    assert documented >= {("post", "/users"), ("delete", "/users/{user_id}"), ("get", "/tasks"),
                          ("post", "/tasks"), ("get", "/tasks/{task_id}"),
                          ("get", "/tasks/{task_id}/image"), ("delete", "/tasks/{task_id}"),
                          ("post", "/tasks/claim"), ("post", "/tasks/{task_id}/complete"),
                          ("post", "/tasks/{task_id}/release"), ("get", "/total_tasks_created"),
                          ("get", "/openapi.json")}


@pytest.mark.finding("C2-34", side="fixed")
def test_document_is_valid_openapi_3_1_with_one_error_format():
    from jsonschema import Draft202012Validator

    document = _document()
    assert document["openapi"].startswith("3.1.")
    for name, schema in document["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
    operation_ids = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            operation_ids.append(op["operationId"])
            statuses = set(op["responses"])
            public = op.get("security") == []
            if path != "/openapi.json":
                assert "503" in statuses, (method, path)  # the database may be down
                assert public or "401" in statuses, (method, path)
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert response == {"$ref": f"#/components/responses/{status}"}, (path, status)
            if "requestBody" in op:
                assert {"413", "415"} <= statuses, (method, path)
    assert len(operation_ids) == len(set(operation_ids))
    for status, response in document["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}, status
    retry = document["components"]["responses"]["503"]["headers"]["Retry-After"]
    assert retry["required"] is True


@pytest.mark.finding("C2-29", side="fixed")
def test_the_service_serves_its_document_without_authentication(service):
    served = service.api.get("/openapi.json")
    assert served.status_code == 200 and served.headers["Content-Type"] == "application/json"
    assert served.json() == _document()


@pytest.mark.finding("C2-12", side="fixed")
def test_errors_and_unknown_routes_use_the_documented_format(service):
    api = service.api
    user = api.create_user("a@example.com")
    # Each of these goes through the contract check of the test client (status documented,
    # body an Error); the codes are the reason phrases.
    expected = {
        ("GET", "/nowhere", None): (401, "unauthorized"),
        ("GET", "/nowhere", "user"): (404, "not_found"),
        ("PUT", "/tasks", "user"): (405, "method_not_allowed"),
        ("GET", "/tasks/99999999999", "user"): (404, "not_found"),
        ("GET", "/users/2", "user"): (403, "forbidden"),
        ("POST", "/tasks/claim", "user"): (204, None),
    }
    for (method, path, who), (status, code) in expected.items():
        r = api.request(method, path, user if who else None)
        assert r.status_code == status, (method, path, r.text)
        if code:
            assert r.json()["error"]["code"] == code
    bad = api.request("POST", "/tasks", user, json={"meta": 5, "image": "x"})
    assert bad.json()["error"] == {"code": "bad_request", "message": "meta must be a string",
                                   "field": "meta"}
    created = api.post_task(user, image=JPEG_4PX)
    assert created.headers["Location"] == f"/tasks/{created.json()['id']}"
