"""The checker against a hostile target and hostile files: a server that trickles its answer or
sends an endless one, answers whose ids are of any JSON type, broken or malicious mapping files,
and server-controlled strings in the report. Each must end in a bounded run, a recorded outcome
or a clear error: never a hang, a traceback or markup injected into the report."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List

import pytest

from taskcheck import cli, protocol, report
from taskcheck.client import RequestsTransport
from taskcheck.history import History

WAIT = 15.0  # the longest any wait of these tests lasts
ROOT = Path(__file__).resolve().parents[2]


class RawServer:
    """A loopback TCP server that reads each request head and then runs ``answer(sock, stop)``;
    stopped (its connections shut, its threads joined) by the test that started it."""

    def __init__(self, answer: Callable[[socket.socket, threading.Event], None]):
        self.answer = answer
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.threads: List[threading.Thread] = []
        self.conns: List[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "RawServer":
        self._accepting.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self._accepting.join(WAIT)
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        for thread in self.threads:
            thread.join(WAIT)
        self.listener.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(WAIT)
            self.conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            self.answer(conn, self.stop)
        except OSError:
            pass  # the client cut the connection: what the tests expect of it


def _trickle(data: bytes, every: float) -> Callable[[socket.socket, threading.Event], None]:
    def answer(sock, stop):
        for i in range(len(data)):
            if stop.wait(every):
                return
            sock.sendall(data[i:i + 1])
        stop.wait(WAIT)
    return answer


def _send_in_thread(transport: RequestsTransport, path: str = "/tasks"):
    """Run one ``send``; (its Raw or None if it did not return within WAIT, seconds taken)."""
    out = []
    thread = threading.Thread(target=lambda: out.append(transport.send("GET", path, path)), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(WAIT)
    return (out[0] if out else None), time.monotonic() - started


@pytest.mark.parametrize("answer", [
    pytest.param(_trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000, 0.1), id="head trickled"),
    pytest.param(_trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000, 0.1),
                 id="body trickled"),
])
def test_a_trickling_server_cannot_hold_a_request_past_its_deadline(answer):
    """A byte every 0.1 s never trips a per-read timeout of 1 s; the deadline covers the whole
    exchange, so the request ends as a timeout about 1 s after it started."""
    with RawServer(answer) as server:
        transport = RequestsTransport(f"http://127.0.0.1:{server.port}", timeout=1.0)
        try:
            raw, took = _send_in_thread(transport)
        finally:
            transport.close()
    assert raw is not None, f"the request was still running after {WAIT} s"
    assert raw.error == "timeout" and raw.status is None, raw
    assert took < 4.0, took


def _endless(sock, stop):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b"[" * 65536)
    while not stop.is_set():
        sock.sendall(chunk)


def test_an_endless_answer_is_read_up_to_the_cap_and_recorded_as_cut():
    """A server streaming an answer without end (fast enough for every read): the transport
    keeps ``max_body`` bytes, drops the rest with the connection, and the op says so."""
    from taskcheck.client import Client
    from taskcheck.protocol import resolve

    cap = 1 << 20
    with RawServer(_endless) as server:
        transport = RequestsTransport(f"http://127.0.0.1:{server.port}", timeout=5.0, max_body=cap)
        try:
            raw, took = _send_in_thread(transport)
            assert raw is not None, f"the request was still running after {WAIT} s"
            assert raw.status == 200 and raw.truncated and len(raw.content) == cap, raw.error_text
            history = History({})
            op = Client(resolve("fixed"), transport, history).exchange("list_tasks", "GET", "/tasks")
        finally:
            transport.close()
    assert op.status == 200 and op.response["over_limit"] and op.response["length"] == cap


@pytest.fixture
def odd_ids_service():
    """A service whose every answer puts objects, lists, floats and bools where ids go."""
    from werkzeug.serving import make_server

    def app(environ, start_response):
        body = {"id": {"nested": 1}, "token": "t" * 20, "items": [{"id": [1]}, {"id": 1.5},
                                                                  {"id": True}, {"id": "a/b"}],
                "next": {"after": 1}, "total_tasks_created": 0, "task": {"id": [2]}}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(WAIT)


def test_ids_of_any_json_type_in_answers_are_shape_errors_not_a_crash(odd_ids_service, tmp_path):
    code = cli.main(["--url", odd_ids_service, "--api", "fixed", "--claim", "POST /tasks/claim",
                     "--none-free", "204", "--max-requests", "200", "--request-timeout", "5",
                     "--out", str(tmp_path), "--quiet"])
    summary = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    # Workloads may stop for want of a usable task (a WorkloadError, noted), never on an
    # exception of the checker's own.
    stops = [n["text"] for n in summary["notes"] if "stopped:" in n["text"]]
    assert all("stopped: WorkloadError:" in s for s in stops), stops
    ops = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text(encoding="utf-8").splitlines()
           if '"kind": "op"' in line]
    errors = [op["value"]["shape_error"] for op in ops if "shape_error" in op.get("value", {})]
    assert any("of type dict" in e for e in errors) and any("of type list" in e for e in errors)
    assert all(not isinstance(op["value"].get("task_id"), (dict, list, float, bool)) for op in ops)
    assert code in (cli.EXIT_CLEAN, cli.EXIT_ANOMALIES, cli.EXIT_INCONCLUSIVE)


BILLION_LAUGHS = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
    + ["extends: fixed", "name: *i"])


@pytest.mark.parametrize("name, content, message", [
    ("bad.yaml", "auth: [unclosed", "not valid YAML"),
    ("bad.json", '{"auth": ', "not valid JSON"),
    ("latin1.yaml", b"name: caf\xe9", "not UTF-8"),
    ("bomb.yaml", BILLION_LAUGHS, "aliases"),
    ("list.yaml", "- extends: fixed", "must be an object"),
    ("extends.json", json.dumps({"extends": ["fixed"]}), "extends must be one of"),
    ("section.json", json.dumps({"auth": "Bearer"}), "auth: expected a mapping"),
    ("field.json", json.dumps({"tasks": {"meta_field": ["meta"]}}), "tasks.meta_field"),
    ("scheme.json", json.dumps({"extends": "fixed", "auth": {"scheme": 7}}), "auth.scheme"),
    ("sql.json", json.dumps({"deep": {"tasks_sql": 5}}), "deep.tasks_sql"),
    ("bool.json", json.dumps({"claim": {"none_free": [True]}}), "claim.none_free"),
    ("dir.yaml", None, "nor a mapping file"),
    ("huge.yaml", "#" * (protocol.MAX_MAPPING_BYTES + 10), "larger than"),
])
def test_a_bad_mapping_file_is_a_clear_error_not_a_traceback(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    # In a process of its own, bounded: an alias bomb that is expanded never ends.
    out = subprocess.run([sys.executable, "-m", "taskcheck", "--url", "http://127.0.0.1:9", "--api",
                          str(path), "--out", str(tmp_path / "o")], cwd=str(ROOT),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == cli.EXIT_USAGE, out.stderr[-2000:]
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "o").exists()
    with pytest.raises(protocol.MappingError, match=message):
        protocol.resolve(str(path))


HOSTILE = ("<img src=x onerror=alert(1)> <script>alert(2)</script> [click](javascript:alert(3)) "
           "![px](http://tracker.example/p.gif) | cell | `code` **bold** <https://evil.example>\n"
           "# heading\n- item")


def _hostile_summary() -> dict:
    example = {"detail": "task 1: meta read back " + HOSTILE, "op": 3, "actor": HOSTILE,
               "request": "GET /tasks/1", "response": "200 " + HOSTILE, "latency_s": 0.01}
    return {"target": "http://127.0.0.1:1/" + HOSTILE, "api": HOSTILE, "started_at": HOSTILE,
            "params": {}, "stopped_early": HOSTILE,
            "anomalies": [{"kind": "meta-mismatch", "title": "meta changed", "count": 1,
                           "findings": ["C2-13"], "examples": [example],
                           "meaning": "what was stored is not what was read"}],
            "total": 1, "counts": {"meta-mismatch": 1}, "coverage": {"ops": 3},
            "warnings": [HOSTILE], "workloads": {HOSTILE: {"ok": 1, "fail": 0, "info": 0}},
            "faults": [{"fault": HOSTILE, "start": 0.0, "stop": 1.0}],
            "notes": [{"kind": "note", "text": HOSTILE}]}


def test_server_controlled_strings_cannot_put_markup_into_the_report():
    """Rendered with HTML allowed (as many Markdown viewers do), the report shows what the
    server sent as text: no element, link or image of its making, no extra table cell."""
    from markdown_it import MarkdownIt

    summary = _hostile_summary()
    md = report.markdown(summary)
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    for page in (rendered, report.html_page(summary)):
        for tag in ("<img", "<script", "<a ", "<strong>bold", "<h1>heading", "<li>item", "<code>code"):
            assert tag not in page, (tag, page)
    assert "onerror=alert(1)" in rendered  # shown, as text
    # Every row of every table keeps its own cells: a pipe the server sent splits none.
    for table in rendered.split("<table>")[1:]:
        head = table.split("</thead>")[0].count("<th>")
        body = table.split("<tbody>")[1].split("</tbody>")[0]
        assert all(row.count("<td>") == head for row in body.split("</tr>")[:-1]), table
