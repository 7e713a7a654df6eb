"""Hostile input against the fixed service, property-based: schemathesis generates requests
from the served OpenAPI document; Hypothesis strategies of our own cover what it does not (any
Unicode with NUL and lone surrogates, deep JSON, mutated and malicious images, arbitrary query
strings and Authorization headers). Then the limits of the real server: bodies over the limit
with Content-Length and chunked, request lines and headers at gunicorn's limits.

The invariant everywhere: no 5xx, every response as documented (every error an ``Error``
object: the test client checks each one against the document), and nothing half-written: the
task table and the image directory agree after every run.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import struct
import time
import zlib
from collections import Counter

import pytest

from workbench import results

from .helpers import BMP_1PX, JPEG_4PX, PNG_1PX, b64

hypothesis = pytest.importorskip("hypothesis")
import requests  # noqa: E402
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SHORT = settings(max_examples=25, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))
FUZZ_EXAMPLES = {"short": 8, "long": 150}  # per operation and generation mode
_fuzz_counts: dict = {}


@pytest.fixture
def side():
    return "fixed"


@pytest.fixture
def svc(make_service):
    return make_service(threads=2)


def _limits():
    from reference.case2.fixed.config import Config
    from reference.case2.fixed.validation import MAX_EMAIL, MAX_META

    return Config(), MAX_META, MAX_EMAIL


def _assert_consistent(svc) -> None:
    rows = {f"{i}.{ext}" for i, ext in svc.db.all("SELECT id, image_ext FROM task")}
    assert set(svc.stored_files()) == rows, (svc.stored_files(), rows)


def _storable(text: str, limit: int) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text and len(text) <= limit


# Any code point, surrogates (lone, in JSON escapes) and NUL included, biased towards them.
ANY_TEXT = st.text(st.one_of(st.characters(codec=None, categories=None),
                             st.sampled_from(["\x00", "\ud800", "\udfff", "\ufffd", "\U0010ffff"])),
                   max_size=40)


# --------------------------------------------------------------------------- schemathesis


def _fuzz(base_url: str, api, examples: int) -> dict:
    """Every operation of the served document, positive and negative cases; the checks are
    schemathesis' response checks (no 5xx, documented status, content type, headers and body
    schema). Every case is sent with a valid token (else nearly all would stop at 401), so
    schemathesis' "negative data rejected" check is not used: a case meant to lack the header
    has it, and unknown query parameters are ignored by design, not refused. A fuzzed
    ``DELETE /users/{id}`` may delete the fuzzing user: a new one takes over."""
    import schemathesis
    from hypothesis import Phase
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_headers_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    user = {"token": api.create_user("fuzz-0@example.com")["token"]}
    counts: Counter = Counter()
    run_settings = settings(max_examples=examples, deadline=None, database=None,
                            derandomize=True, phases=[Phase.explicit, Phase.generate],
                            suppress_health_check=list(HealthCheck))
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @run_settings
            @given(case=operation.as_strategy(generation_mode=mode))
            def one(case):
                response = case.call(base_url=base_url, timeout=10,
                                     headers={"Authorization": f"Bearer {user['token']}"})
                counts[f"{operation.label} {mode.value} {response.status_code}"] += 1
                case.validate_response(response, checks=checks)
                if operation.label.startswith("DELETE /users/") and response.status_code == 204:
                    user["token"] = api.create_user(f"fuzz-{len(counts)}@example.com")["token"]

            one()
    return dict(sorted(counts.items()))


def _record_fuzz(run: str, counts: dict) -> None:
    per_status: Counter = Counter()
    for key, n in counts.items():
        per_status[key.rsplit(" ", 1)[1]] += n
    _fuzz_counts[run] = {"examples_per_operation_and_mode": FUZZ_EXAMPLES[run],
                         "requests": sum(counts.values()), "by_status": dict(per_status),
                         "by_operation": counts}
    results.record("case2_fuzz", _fuzz_counts)


@pytest.mark.finding("C2-12", side="fixed")
@pytest.mark.finding("C2-13", side="fixed")
def test_schemathesis_short_run_finds_no_server_error(svc):
    counts = _fuzz(svc.base_url, svc.api, FUZZ_EXAMPLES["short"])
    _record_fuzz("short", counts)
    assert sum(counts.values()) > 100 and not any(k.endswith(" 500") for k in counts)
    _assert_consistent(svc)


@pytest.mark.slow
@pytest.mark.finding("C2-12", side="fixed")
@pytest.mark.finding("C2-13", side="fixed")
def test_schemathesis_long_run_under_gunicorn(make_process, inspector, workdir):
    proc = make_process("gunicorn", threads=4)
    counts = _fuzz(proc.base_url, proc.api, FUZZ_EXAMPLES["long"])
    _record_fuzz("long", counts)
    assert not any(k.endswith(" 500") for k in counts)
    rows = {f"{i}.{ext}" for i, ext in inspector.all("SELECT id, image_ext FROM task")}
    files = {p.name for p in (workdir / "storage" / "task_images").iterdir()}
    assert files == rows


# --------------------------------------------------------------------------- strings


@pytest.mark.finding("C2-13", side="fixed")
def test_any_unicode_meta_is_stored_exactly_or_refused_with_400(svc):
    _, max_meta, _ = _limits()
    user = svc.api.create_user("a@example.com")

    @SHORT
    @given(meta=ANY_TEXT, via=st.sampled_from(["json", "multipart"]))
    def check(meta, via):
        if via == "json":  # ensure_ascii: a lone surrogate travels as a \\udXXX escape
            r = svc.api.request("POST", "/tasks", user, data=json.dumps(
                {"meta": meta, "image": b64(PNG_1PX)}), headers={"Content-Type": "application/json"})
        else:  # surrogatepass: the bytes of a lone surrogate, which are not UTF-8
            r = svc.api.post_task_multipart(user, meta=meta, image=PNG_1PX)
        if _storable(meta, max_meta):
            assert r.status_code == 201, (meta, r.text)
            assert svc.api.get(f"/tasks/{r.json()['id']}", user).json()["meta"] == meta
        else:
            assert r.status_code == 400 and r.json()["error"]["field"] == "meta", (meta, r.text)

    check()
    _assert_consistent(svc)


@pytest.mark.finding("C2-14", side="fixed")
def test_any_unicode_email_is_a_user_or_a_400(svc):
    @SHORT
    @given(local=ANY_TEXT, domain=st.sampled_from(["example.com", "ex\x00ample.com", "пример.рф"]))
    def check(local, domain):
        r = svc.api.request("POST", "/users", data=json.dumps({"email": f"{local}@{domain}"}),
                            headers={"Content-Type": "application/json"})
        assert r.status_code in (201, 400, 409), r.text
        if r.status_code == 201:
            assert "\x00" not in r.json()["email"]

    check()


@pytest.mark.finding("C2-13", side="fixed")
def test_deeply_nested_json_is_a_400(svc):
    user = svc.api.create_user("a@example.com")

    @settings(max_examples=15, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(depth=st.integers(1, 200_000), opener=st.sampled_from(["[", '{"a":']),
           where=st.sampled_from(["body", "meta"]))
    def check(depth, opener, where):
        closer = "]" if opener == "[" else "}"
        nested = opener * depth + "1" + closer * depth
        body = nested if where == "body" else f'{{"meta": {nested}, "image": "{b64(PNG_1PX)}"}}'
        r = svc.api.request("POST", "/tasks", user, data=body,
                            headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text

    check()
    assert svc.db.tasks() == []


# --------------------------------------------------------------------------- images


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb(edge: int = 30_000) -> bytes:
    """A 1-bit PNG of edge x edge pixels, all zero: a few kilobytes that decode to gigabytes."""
    row = b"\x00" + bytes((edge + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(edge)) + compressor.flush()
    header = struct.pack(">IIBBBBB", edge, edge, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def _real_image(fmt: str, size=(64, 48)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(out, fmt)
    return out.getvalue()


def _zip_of(name: str, data: bytes) -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.finding("C2-18", side="fixed")
def test_bomb_truncated_and_polyglot_images_are_refused(svc):
    user = svc.api.create_user("a@example.com")
    jpeg, gif = _real_image("JPEG"), _real_image("GIF")
    refused = {
        "decompression bomb": decompression_bomb(),
        "truncated PNG": _real_image("PNG")[:-40],
        "truncated JPEG": jpeg[: len(jpeg) // 2],
        "JPEG + ZIP polyglot": jpeg + _zip_of("x.html", b"<script>alert(1)</script>"),
        "GIF + HTML polyglot (GIFAR-style)": gif + b"<html><script>alert(1)</script></html>",
        "PNG + appended PNG": PNG_1PX + PNG_1PX,
        "signature only": b"\x89PNG\r\n\x1a\n" + bytes(64),
        "TIFF (not accepted)": _real_image("TIFF"),
    }
    for name, data in refused.items():
        started = time.monotonic()
        r = svc.api.post_task(user, image=data)
        assert r.status_code == 400 and r.json()["error"]["field"] == "image", (name, r.text)
        assert time.monotonic() - started < 5, name  # the bomb is refused before decoding
    for data in (jpeg, gif, PNG_1PX, BMP_1PX, JPEG_4PX, _real_image("WEBP")):
        assert svc.api.post_task(user, image=data).status_code == 201
    assert len(svc.db.tasks()) == 6
    _assert_consistent(svc)


@pytest.mark.finding("C2-18", side="fixed")
def test_mutated_images_are_stored_whole_or_refused(svc):
    from reference.case2.fixed.images import inspect_image

    user = svc.api.create_user("a@example.com")
    seeds = [PNG_1PX, JPEG_4PX, BMP_1PX, _real_image("GIF", (8, 8)), _real_image("WEBP", (8, 8))]

    @SHORT
    @given(seed=st.sampled_from(seeds), cut=st.integers(0, 2000), flips=st.lists(
        st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=3),
        tail=st.binary(max_size=16))
    def check(seed, cut, flips, tail):
        data = bytearray(seed[: max(1, len(seed) - cut % len(seed))])
        for at, value in flips:
            data[at % len(data)] = value
        data = bytes(data) + tail
        r = svc.api.post_task(user, image=data)
        assert r.status_code in (201, 400), r.text
        if r.status_code == 201:
            kind = inspect_image(data, 10**6)
            assert svc.image_path(r.json()["id"], kind.ext).read_bytes() == data

    check()
    _assert_consistent(svc)


# --------------------------------------------------------------------------- query and auth


@pytest.mark.finding("C2-12", side="fixed")
def test_any_query_string_is_a_page_or_a_400(svc):
    user = svc.api.create_user("a@example.com")

    @SHORT
    @given(after=ANY_TEXT, limit=ANY_TEXT)
    def check(after, limit):
        params = {k: v.encode("utf-8", "surrogatepass") for k, v in
                  (("after", after), ("limit", limit))}
        r = svc.api.get("/tasks", user, params=params)
        assert r.status_code in (200, 400), r.text

    check()


@pytest.mark.finding("C2-10", side="fixed")
def test_authorization_scheme_is_case_insensitive(svc):
    user = svc.api.create_user("a@example.com")
    token = user["token"]
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        for gap in (" ", "   "):
            r = svc.api.get("/tasks", headers={"Authorization": f"{scheme}{gap}{token}"})
            assert r.status_code == 200, (scheme, gap)
    for header in (token, f"Basic {token}", f"Bearer{token}", f"Bearer {token}x", "Bearer ",
                   f"Bearer {token[:-1]}", f"Bearer\t{token}", f"Bearer {token} extra"):
        assert svc.api.get("/tasks", headers={"Authorization": header}).status_code == 401, header

    @SHORT
    @given(header=ANY_TEXT)
    def check(header):
        value = header.encode("utf-8", "surrogatepass")
        try:
            r = svc.api.get("/tasks", headers={"Authorization": value})
        except requests.exceptions.InvalidHeader:  # CR, LF, leading space: not sendable
            assume(False)
        assert r.status_code == 401

    check()


# --------------------------------------------------------------------------- server limits


def _raw_http(port: int, request: bytes, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Send bytes as they are; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


def _chunked_post(port: int, path: str, token: str, body: bytes, content_type: str):
    """POST ``body`` with chunked transfer encoding over a raw socket; a server that answers
    before the body ends (413) may stop reading: sending stops there, the answer is read."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
                     .encode())
        try:
            for i in range(0, len(body), 65536):
                chunk = body[i:i + 65536]
                sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def _multipart(meta: bytes, image: bytes, boundary: str = "b0undary") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"meta\"\r\n\r\n".encode()
            + meta + f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"i\"\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
            + image + f"\r\n--{boundary}--\r\n".encode())


@pytest.mark.finding("C2-23", side="fixed")
def test_bodies_over_the_limit_are_413_with_content_length_and_chunked(make_process, inspector,
                                                                       workdir, monkeypatch):
    limit = 2**20
    monkeypatch.setenv("MAX_CONTENT_LENGTH", str(limit))  # the service's limit, set smaller
    proc = make_process("gunicorn", threads=2)
    user = proc.api.create_user("a@example.com")
    big = _real_image("PNG", (620, 620))  # over the limit by itself
    assert len(big) > limit
    json_body = json.dumps({"meta": "m", "image": base64.b64encode(big).decode()}).encode()
    form = "multipart/form-data; boundary=b0undary"
    cases = {
        "json, Content-Length": lambda: proc.api.request(
            "POST", "/tasks", user, data=json_body, headers={"Content-Type": "application/json"}),
        "json, chunked": lambda: _chunked_post(proc.port, "/tasks", user["token"], json_body,
                                               "application/json"),
        "multipart, Content-Length": lambda: proc.api.request(
            "POST", "/tasks", user, data=_multipart(b"m", big), headers={"Content-Type": form}),
        "multipart, chunked": lambda: _chunked_post(proc.port, "/tasks", user["token"],
                                                    _multipart(b"m", big), form),
    }
    for name, send in cases.items():
        r = send()
        status, body = (r.status_code, r.content) if hasattr(r, "status_code") else r
        assert status == 413, (name, status, body[:200])
        assert json.loads(body)["error"]["code"] == "request_entity_too_large", name
    assert inspector.tasks() == []
    # Just under the limit, chunked: accepted whole (not a prefix of it).
    fits = _real_image("PNG", (580, 580))
    assert len(_multipart(b"m", fits)) < limit
    status, body = _chunked_post(proc.port, "/tasks", user["token"], _multipart(b"m", fits), form)
    assert status == 201, body[:200]
    stored = workdir / "storage" / "task_images" / f"{json.loads(body)['id']}.png"
    assert stored.read_bytes() == fits


@pytest.mark.finding("C2-13", side="fixed")
def test_server_limits_answer_json_and_documented_meta_fits(make_process):
    _, max_meta, _ = _limits()
    proc = make_process("gunicorn", threads=2)
    user = proc.api.create_user("a@example.com")
    # The longest documented meta, of 4-byte characters, travels in the body both ways.
    meta = "\U0001f600" * max_meta
    assert proc.api.post_task(user, meta=meta, image=PNG_1PX).status_code == 201
    assert proc.api.post_task_multipart(user, meta=meta, image=PNG_1PX).status_code == 201
    assert proc.api.post_task(user, meta=meta + "x", image=PNG_1PX).status_code == 400
    # What gunicorn refuses itself is refused in the service's error format.
    auth = f"Authorization: Bearer {user['token']}\r\n".encode()
    over = {
        "request line": (b"GET /tasks?after=" + b"1" * 9000 + b" HTTP/1.1\r\nHost: x\r\n" + auth
                         + b"\r\n", 414),
        "header field": (b"GET /tasks HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n"
                         + auth + b"\r\n", 431),
        "header count": (b"GET /tasks HTTP/1.1\r\nHost: x\r\n"
                         + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + auth + b"\r\n", 431),
        "malformed request line": (b"GET /tasks HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
    }
    for name, (request, expected) in over.items():
        status, headers, body = _raw_http(proc.port, request)
        assert status in (expected, 400), (name, status)
        assert headers["Content-Type"] == "application/json", (name, headers, body[:200])
        assert set(json.loads(body)["error"]) >= {"code", "message"}, name
    # At the limit, a request line still gets through to the application.
    status, _, _ = _raw_http(proc.port, b"GET /tasks?limit=1&x=" + b"1" * 8000
                             + b" HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
    assert status == 200


# --------------------------------------------------------------------------- costly images


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment of a well-formed JPEG, scan data included."""
    pos, out = 2, []
    while True:
        marker = data[pos + 1]
        if marker == 0xD9:
            return out + [(marker, pos, pos + 2)]
        end = pos + 2 + struct.unpack_from(">H", data, pos + 2)[0]
        if marker == 0xDA:
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
        out.append((marker, pos, end))
        pos = end


def progressive_with_scans(scans: int, edge: int = 5000) -> bytes:
    """A grey progressive JPEG of edge x edge whose first AC scan is repeated until the file
    has ``scans`` scans: a few kilobytes per scan, each a pass over every block."""
    from PIL import Image

    out = io.BytesIO()
    Image.linear_gradient("L").resize((edge, edge)).save(out, "JPEG", progressive=True)
    data = out.getvalue()
    segments = _jpeg_segments(data)
    sos = [(start, end) for marker, start, end in segments if marker == 0xDA]
    ac = next(data[s:e] for s, e in sos if data[s + 5 + 2 * data[s + 4]] > 0)  # Ss > 0
    eoi = segments[-1][1]
    return data[:eoi] + ac * (scans - len(sos)) + data[eoi:]


def _plain_photo(edge: int = 5000, progressive: bool = False) -> bytes:
    """An ordinary RGB JPEG of the largest size the pixel limit allows."""
    from PIL import Image

    grey = Image.linear_gradient("L").resize((edge, edge))
    out = io.BytesIO()
    Image.merge("RGB", (grey, grey.transpose(Image.Transpose.ROTATE_90), grey)).save(
        out, "JPEG", quality=90, progressive=progressive)
    return out.getvalue()


def _costly_containers() -> dict:
    """Over the caps: each took seconds (or minutes) of decoding before it was refused."""
    from PIL import Image

    tiny_jpeg, tiny_png, tiny_gif = (io.BytesIO(), io.BytesIO(), io.BytesIO())
    Image.new("RGB", (8, 8)).save(tiny_jpeg, "JPEG")
    Image.new("RGB", (8, 8)).save(tiny_png, "PNG")
    Image.new("P", (8, 8)).save(tiny_gif, "GIF")
    jpeg, png, gif = tiny_jpeg.getvalue(), tiny_png.getvalue(), tiny_gif.getvalue()
    empty_chunk = _png_chunk(b"zzZz", b"")
    # A comment extension of 2-byte sub-blocks before the image (Pillow reads them in Python),
    # after the header and its global colour table.
    comment = b"\x21\xfe" + b"\x01x" * 1_500_000 + b"\x00"
    gif_blocks = 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)
    return {
        "progressive JPEG, 2000 scans": progressive_with_scans(2000),
        "JPEG, 1.8 million COM segments": jpeg[:2] + b"\xff\xfe\x00\x02" * 1_800_000 + jpeg[2:],
        "PNG, 600 000 empty chunks": png[:33] + empty_chunk * 600_000 + png[33:],
        "GIF, 1.5 million sub-blocks": gif[:gif_blocks] + comment + gif[gif_blocks:],
    }


def _best_of(runs: int, call) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


@pytest.mark.finding("C2-18", side="fixed")
def test_images_that_cost_minutes_are_refused_and_accepted_ones_cost_a_bounded_multiple(svc):
    """The decoding work of an accepted upload is bounded by the container caps: the costliest
    image under them (the scan cap reached, at the pixel limit) takes at most a few times what
    an ordinary progressive photo of that size takes; those over the caps are refused before any
    decoder runs, in less time than the ordinary photo's decoding."""
    from reference.case2.fixed.config import Config
    from reference.case2.fixed.errors import InvalidField
    from reference.case2.fixed.images import MAX_JPEG_SCANS, inspect_image

    limit = Config().max_image_pixels

    def refused(data: bytes) -> str:
        with pytest.raises(InvalidField) as exc:
            inspect_image(data, limit)
        return exc.value.description

    ordinary = _plain_photo(progressive=True)
    at_cap = progressive_with_scans(MAX_JPEG_SCANS)
    over = _costly_containers()
    ordinary_s = _best_of(3, lambda: inspect_image(ordinary, limit))
    worst_s = _best_of(3, lambda: inspect_image(at_cap, limit))
    assert worst_s < 4 * ordinary_s, (worst_s, ordinary_s)
    for name, data in over.items():
        assert "too complex" in refused(data), name
        assert _best_of(1, lambda: refused(data)) < ordinary_s, name
    # Ordinary images, progressive included, are accepted; over the wire the costly ones are
    # a 400 on the image, whichever encoding carries them.
    user = svc.api.create_user("a@example.com")
    for data in (_plain_photo(), ordinary, at_cap):
        assert svc.api.post_task_multipart(user, image=data).status_code == 201
    for name, data in over.items():
        r = svc.api.post_task_multipart(user, image=data)
        assert r.status_code == 400 and r.json()["error"]["field"] == "image", (name, r.text)
    _assert_consistent(svc)


# --------------------------------------------------------------------------- ids, ranges, parts


@pytest.mark.finding("C2-13", side="fixed")
def test_ids_are_accepted_only_in_canonical_ascii_form(svc):
    """Werkzeug's ``int`` converter matches any Unicode digit: ``/tasks/１`` (fullwidth) was
    task 1, ``/tasks/01`` too. One resource, one URL: anything but ASCII digits without a
    leading zero is no route."""
    user = svc.api.create_user("a@example.com")
    task_id = svc.api.create_task(user)["id"]
    assert task_id == 1 and svc.api.get(f"/tasks/{task_id}", user).status_code == 200
    # Fullwidth, Arabic-Indic, Devanagari and mathematical digits; leading zeros and signs.
    spellings = ["\uff11", "\u0661", "\u0967", "\U0001d7cf", "01", "001", "+1", " 1", "1.0",
                 "0x1", "1e0"]
    for path in ("/tasks/{}", "/tasks/{}/image", "/users/{}"):
        for spelling in spellings:
            r = svc.api.get(path.format(spelling), user)
            assert r.status_code == 404, (path, spelling, r.status_code)
    assert svc.api.delete("/tasks/\uff11", user).status_code == 404
    assert svc.api.get(f"/tasks/{task_id}", user).status_code == 200  # still there
    assert svc.api.get("/users/" + str(user["id"]), user).status_code == 200


@pytest.mark.finding("C2-51", side="fixed")
def test_a_range_the_service_cannot_serve_is_ignored_not_refused(image_service):
    """RFC 9110, section 14.2: a Range of an unknown unit must be ignored, a malformed one may
    be; several ranges (which would need multipart/byteranges) may be too. Werkzeug answered
    all of them 416. A single byte range is still served (206), or refused when it lies
    outside the image (416)."""
    svc = image_service
    user = svc.api.create_user("a@example.com")
    task_id = svc.api.create_task(user, image=PNG_1PX)["id"]
    path = f"/tasks/{task_id}/image"
    whole = {"bytes=a-b", "bytes=0-1,3-4", "bytes=0-1, 5-", "items=0-5", "bytes=", "bytes=5-3",
             "bytes=--1", "garbage"}
    for value in whole:
        r = svc.api.get(path, user, headers={"Range": value})
        assert (r.status_code, r.content) == (200, PNG_1PX), value
    part = svc.api.get(path, user, headers={"Range": "bytes=0-3"})
    assert (part.status_code, part.content) == (206, PNG_1PX[:4])
    assert svc.api.get(path, user, headers={"Range": "bytes=100000-"}).status_code == 416


@pytest.mark.finding("C2-13", side="fixed")
def test_a_multipart_body_of_too_many_parts_is_a_400_not_a_413(svc):
    user = svc.api.create_user("a@example.com")
    boundary = "b0undary"
    extra = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"x{i}\"\r\n\r\n"
                     f"{i}\r\n".encode() for i in range(8))
    body = extra + _multipart(b"m", PNG_1PX, boundary)
    r = svc.api.request("POST", "/tasks", user, data=body,
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "body", r.text
    assert "parts" in r.json()["error"]["message"]
    assert svc.db.tasks() == []


@pytest.mark.finding("C2-14", side="fixed")
def test_the_email_limit_applies_after_lower_casing(svc):
    """``"İ".lower()`` is two characters: 254 characters as sent became 503 once normalised,
    and PostgreSQL's varchar(254) refused them with a 500."""
    _, _, max_email = _limits()
    grows = "a@b." + "\u0130" * (max_email - 5)  # 254 characters, 503 in lower case
    assert len(grows) == max_email - 1 and len(grows.lower()) > max_email
    r = svc.api.request("POST", "/users", json={"email": grows})
    assert r.status_code == 400 and r.json()["error"]["field"] == "email", r.text
    fits = "a@b." + "\u0130" * ((max_email - 4) // 2)  # within the limit in lower case
    assert len(fits.lower()) <= max_email
    created = svc.api.request("POST", "/users", json={"email": fits})
    assert created.status_code == 201 and created.json()["email"] == fits.lower()
    assert svc.errors == []
