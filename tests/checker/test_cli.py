"""The command's safety and its adapters: what it refuses before sending anything, how API
shapes are described, and that every run stays inside its bounds."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from taskcheck import cli, protocol

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "taskcheck" / "examples" / "half_fixed.yaml"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:1/", "http://[::1]:80",
                                 "https://127.8.9.10"])
def test_loopback_targets_are_accepted(url):
    assert cli.check_target(url, []) == url.rstrip("/")


@pytest.mark.parametrize("url, allowed, message", [
    ("http://10.1.2.3:8080", [], "only loopback"),
    ("http://192.168.1.5", [], "only loopback"),
    ("http://example.com", [], "--allow-host example.com"),
    ("http://example.com", ["other.example"], "only loopback"),
    ("ftp://127.0.0.1", [], "not an http"),
    ("http://user:pw@127.0.0.1", [], "credentials"),
    ("http://127.0.0.1/?user_id=1", [], "without a query"),
])
def test_other_targets_are_refused(url, allowed, message):
    with pytest.raises(cli.Refused, match=message):
        cli.check_target(url, allowed)


def test_a_named_host_is_allowed_explicitly():
    assert cli.check_target("http://tasks.test:8000", ["tasks.test"]) == "http://tasks.test:8000"


def test_refused_target_sends_nothing_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["--url", "http://10.9.8.7:80", "--out", str(out)]) == cli.EXIT_USAGE
    assert "refusing '10.9.8.7'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--concurrency", "65"], "must be 2..64"),
    (["--max-requests", "20001"], "must be 10..20000"),
    (["--time-limit", "901"], "must be 1..900"),
    (["--request-timeout", "0"], "must be 0.2..60"),
    (["--workloads", "claims,nope"], "unknown workload"),
    (["--faults", "kill-worker"], "--faults needs --serve"),
    (["--none-free", "500"], "2xx or 4xx"),
])
def test_out_of_bounds_arguments_are_refused(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["--url", "http://127.0.0.1:1", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_builtin_adapters_and_overrides():
    original, fixed = protocol.resolve("original"), protocol.resolve("fixed")
    assert original.auth(7) == {"params": {"user_id": "7"}} and original.credential_is_public_id
    assert str(original.claim) == "GET /take_free_task" and original.claim_none_free == (404,)
    assert fixed.auth("t0k") == {"headers": {"Authorization": "Bearer t0k"}}
    assert not fixed.credential_is_public_id
    assert str(fixed.claim) == "POST /tasks/claim" and fixed.claim_none_free == (204,)
    assert fixed.list_page({"items": [{"id": 1}], "next": 5}) == ([{"id": 1}], 5)
    legacy = protocol.resolve("fixed", claim="POST /take_free_task", none_free=[404])
    assert str(legacy.claim) == "POST /take_free_task" and legacy.claim_none_free == (404,)
    assert protocol.resolve("fixed-take").claim == legacy.claim


def test_deep_checks_name_each_service_s_own_tables(tmp_path):
    """The original's users table is the reserved word "user" (quoted), ours is ``users``; a
    mapping that names another table changes the queries that name it, and only those."""
    assert protocol.resolve("original").deep["users_sql"] == 'SELECT id, tasks_number FROM "user"'
    fixed = protocol.resolve("fixed").deep
    assert fixed["users_sql"] == "SELECT id, tasks_number FROM users"
    assert fixed["tasks_sql"] == "SELECT id, owner_id FROM task"
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps({"extends": "fixed", "deep": {"users_table": "accounts"}}), encoding="utf-8")
    deep = protocol.resolve(str(path)).deep
    assert deep["users_sql"] == "SELECT id, tasks_number FROM accounts"
    assert deep["tasks_sql"] == fixed["tasks_sql"]


def test_the_documented_mapping_file_describes_the_half_fixed_service():
    p = protocol.resolve(str(EXAMPLE))
    assert p.name == "half-fixed"
    assert p.auth("k") == {"headers": {"X-Api-Key": "k"}}
    assert p.credential({"id": 3, "api_key": "k"}) == "k"
    assert str(p.claim) == "POST /tasks/claim" and p.claim_none_free == (204,)
    assert p.list_page([{"id": 1}]) == ([{"id": 1}], None)


def test_a_json_mapping_overrides_only_what_it_names(tmp_path):
    path = tmp_path / "svc.json"
    path.write_text(json.dumps({"extends": "fixed", "claim": {"endpoint": "PUT /queue/pop",
                                                              "id": ["task.id"]},
                                "tasks": {"id": ["id", "header:Location"]}}), encoding="utf-8")
    p = protocol.resolve(str(path))
    assert p.name == "svc" and str(p.claim) == "PUT /queue/pop" and p.claim_none_free == (204,)
    assert p.auth_scheme == "Bearer"
    assert protocol.first({"task": {"id": 9}}, p.claim_id_field) == 9
    assert protocol.first({}, p.task_id_field, {"location": "/tasks/41"}) == 41


@pytest.mark.parametrize("mapping, message", [
    ({"auth": {"style": "cookie"}}, "auth.style"),
    ({"claim": {"endpoint": "take it"}}, "METHOD /path"),
    ({"tasks": {"get": "GET /tasks/{id}"}}, "unknown placeholder"),
    ({"claim": {"none_free": [500]}}, "claim.none_free"),
    ({"extends": "nothing"}, "extends"),
    ({"deep": {"file_pattern": "("}}, "deep.file_pattern"),
    ({"deep": {"users_table": ""}}, "deep.users_table"),
    ({"deep": {"tasks_table": None}}, "deep.tasks_table"),
])
def test_a_broken_mapping_is_refused_with_its_reason(tmp_path, mapping, message, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(mapping), encoding="utf-8")
    with pytest.raises(protocol.MappingError, match=message):
        protocol.resolve(str(path))
    assert cli.main(["--url", "http://127.0.0.1:9", "--api", str(path), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_unknown_api_and_missing_history_are_refused(tmp_path, capsys):
    assert cli.main(["--url", "http://127.0.0.1:9", "--api", "nonesuch", "--out", str(tmp_path)]) == 2
    assert cli.main(["--replay", str(tmp_path / "none.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "neither original, fixed, fixed-take nor a mapping file" in err and "no such history" in err


def _stub_service(environ, start_response):
    """Answers every request with 200 and a task-like body: enough for workloads to go on."""
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"id": 1, "total_tasks_created": 0}']


def test_a_run_stops_at_its_request_limit(tmp_path):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, _stub_service, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code = cli.main(["--url", f"http://127.0.0.1:{server.server_port}", "--max-requests", "40",
                         "--request-timeout", "5", "--out", str(tmp_path), "--quiet"])
    finally:
        server.shutdown()
        thread.join(10)
    summary = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    lines = (tmp_path / "history.jsonl").read_text(encoding="utf-8").splitlines()
    ops = [json.loads(line) for line in lines if '"kind": "op"' in line]
    assert len(ops) == 40 and summary["coverage"]["ops"] == 40
    assert "request limit of 40" in summary["stopped_early"]
    # The stub grants task 1 to every claim: the checker says so, from 40 requests.
    assert code == cli.EXIT_ANOMALIES and summary["counts"]["duplicate-grant"] > 0
