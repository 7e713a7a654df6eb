"""Reading and validating request input; every failure is a 400 naming the field (413 for a
body over the limit, 415 for a body that is neither JSON nor multipart, 408 for a body that
does not arrive in time).

The body is read here, in bounded reads, whatever its framing: with ``Content-Length`` over the
limit Werkzeug refuses it up front, and a chunked body is counted while it arrives. (Werkzeug's
``get_data()`` on a chunked body stops silently at ``MAX_CONTENT_LENGTH`` and returns what it
read, which is how an over-long upload used to be stored truncated with a 201.) A body the
server cannot deframe (a malformed chunk size, a missing chunk terminator, a bad trailer, the
client gone mid-body: gunicorn raises these from ``wsgi.input.read``) is the client's error,
400 on field ``body``, not a 500. Whether the body was read to its end is noted for
``app.close_if_body_unread``: a connection whose body was not consumed is closed after the
answer, since where the next request on it would begin is unknown.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from typing import Any

from flask import Request, g
from werkzeug.exceptions import (HTTPException, RequestEntityTooLarge, RequestTimeout,
                                 UnsupportedMediaType)
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from .errors import InvalidField, RequestReadTimeout

MAX_EMAIL = 254
MAX_META = 10_000
DEFAULT_PAGE = 50
MAX_PAGE = 100
MAX_ID = 2**31 - 1  # task and user ids are PostgreSQL integers
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
_UINT = re.compile(r"[0-9]{1,10}")
_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_READ = 64 * 1024
MAX_PARTS = 8  # of a multipart upload, which needs two (meta, image)


def has_body(request: Request) -> bool:
    """Whether the request carries a body (chunked, or a non-zero Content-Length)."""
    return bool(request.content_length) or "Transfer-Encoding" in request.headers


def body_consumed() -> bool:
    """Whether ``body_bytes`` read this request's body to its end."""
    return bool(g.get("body_consumed"))


def _read(stream, size: int) -> bytes:
    try:
        return stream.read(size)
    except HTTPException:
        raise  # Werkzeug's own (a Content-Length body that ends early: 400)
    except (RequestReadTimeout, TimeoutError):
        raise RequestTimeout("the request body did not arrive in time") from None
    except Exception as exc:  # noqa: BLE001 - the server's deframing of what the client sent
        raise InvalidField("body", f"the request body is malformed: {type(exc).__name__}: "
                                   f"{str(exc)[:120]}") from None


def body_bytes(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes; 413 beyond, however it is framed."""
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
    if request.content_length is None and request.environ.get("wsgi.input_terminated"):
        # Chunked: the server ends the stream; count here (Werkzeug's wrapper would refuse a
        # body of exactly ``limit`` bytes and, read whole, truncate a longer one).
        stream = request.environ["wsgi.input"]
    else:
        stream = request.stream
    chunks, size = [], 0
    while True:
        chunk = _read(stream, min(_READ, limit + 1 - size))
        if not chunk:
            g.body_consumed = True
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
        chunks.append(chunk)


def json_object(request: Request, limit: int, optional: bool = False) -> dict[str, Any]:
    """The JSON body; 415 if it is not JSON, 400 if malformed, nested too deeply or not an
    object. ``optional``: no body at all reads as ``{}``."""
    data = body_bytes(request, limit) if request.is_json or optional else b""
    if optional and not data:
        return {}
    if not request.is_json:
        raise UnsupportedMediaType("the body must be application/json")
    try:
        body = json.loads(data)
    except RecursionError:
        raise InvalidField("body", "the JSON body is nested too deeply") from None
    except ValueError as exc:  # includes UnicodeDecodeError
        raise InvalidField("body", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidField("body", "the body must be a JSON object")
    return body


def multipart_parts(request: Request, limit: int) -> dict[str, bytes]:
    """The parts of a ``multipart/form-data`` body by name, as bytes (text parts are decoded
    strictly by the caller: invalid UTF-8 is an error, not replaced)."""
    boundary = request.mimetype_params.get("boundary", "").encode("latin-1", "replace")
    if not boundary:
        raise InvalidField("body", "multipart body without a boundary")
    decoder = MultipartDecoder(boundary, max_parts=MAX_PARTS)
    decoder.receive_data(body_bytes(request, limit))
    decoder.receive_data(None)
    parts: dict[str, bytes] = {}
    current = None
    try:
        while True:
            event = decoder.next_event()
            if isinstance(event, (Epilogue, NeedData)):
                break
            if isinstance(event, (Field, File)):
                current = event.name
                if current in parts:
                    raise InvalidField(current, f"{current} is given twice")
                parts[current] = b""
            elif isinstance(event, Data) and current is not None:
                parts[current] += event.data
    except ValueError as exc:
        raise InvalidField("body", f"malformed multipart body: {exc}") from None
    except RequestEntityTooLarge:
        # Werkzeug's answer to too many parts; the body is within the size limit, its shape
        # is what is wrong.
        raise InvalidField("body", f"the multipart body has more than {MAX_PARTS} parts "
                                   "(meta and image are expected)") from None
    if isinstance(event, NeedData):
        raise InvalidField("body", "the multipart body ends before its closing boundary")
    return parts


def text(value: Any, field: str, max_length: int) -> str:
    """A string PostgreSQL can store: no NUL, no lone surrogate, at most ``max_length``
    characters."""
    if not isinstance(value, str):
        raise InvalidField(field, f"{field} must be a string")
    if len(value) > max_length:
        raise InvalidField(field, f"{field} is longer than {max_length} characters")
    if "\x00" in value:
        raise InvalidField(field, f"{field} must not contain the NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField(field, f"{field} contains a lone surrogate (not valid Unicode)") from None
    return value


def utf8(data: bytes, field: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidField(field, f"{field} is not valid UTF-8") from None


def email(value: Any) -> str:
    """A syntactically valid address, normalised to lower case; the limit applies to what is
    stored, after normalising (``"İ".lower()`` is two characters)."""
    address = text(value, "email", MAX_EMAIL).strip().lower()
    if len(address) > MAX_EMAIL:
        raise InvalidField("email", f"email is longer than {MAX_EMAIL} characters in lower case")
    if not _EMAIL.fullmatch(address):
        raise InvalidField("email", "email is not a valid address")
    return address


def meta(value: Any) -> str:
    return text(value, "meta", MAX_META)


def base64_bytes(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidField(field, f"{field} must be a base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField(field, f"{field} is not valid base64") from None
    if not data:
        raise InvalidField(field, f"{field} is empty")
    return data


def lease_id(value: Any) -> uuid.UUID:
    if isinstance(value, str) and _UUID.fullmatch(value):
        return uuid.UUID(value)
    raise InvalidField("lease", "lease must be the lease id the claim returned")


def integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidField(field, f"{field} must be an integer between {low} and {high}")
    return value


def uint(args, name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    if not _UINT.fullmatch(raw) or not low <= int(raw) <= high:
        raise InvalidField(name, f"{name} must be an integer between {low} and {high}")
    return int(raw)


def page(args) -> tuple[int, int]:
    """Keyset pagination: (after id, limit)."""
    return uint(args, "after", 0, 0, MAX_ID), uint(args, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
