"""Parsing and validation of request input; every failure is a 400 naming the field."""
from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from flask import Request

from .errors import InvalidField

MAX_EMAIL = 254
MAX_META = 10_000
DEFAULT_PAGE = 50
MAX_PAGE = 100
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
_UINT = re.compile(r"[0-9]{1,18}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_object(request: Request) -> dict[str, Any]:
    """The JSON body; 415 if it is not JSON, 400 if malformed or not an object."""
    body = request.get_json()
    if not isinstance(body, dict):
        raise InvalidField("body", "the body must be a JSON object")
    return body


def string(value: Any, field: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise InvalidField(field, f"{field} must be a string")
    if len(value) > max_length:
        raise InvalidField(field, f"{field} is longer than {max_length} characters")
    # PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded as UTF-8: both
    # would fail in the driver (500) instead of here (found by taskcheck's hostile workload).
    if "\x00" in value or _SURROGATE.search(value):
        raise InvalidField(field, f"{field} contains a NUL character or a lone surrogate")
    return value


def email(value: Any) -> str:
    """A syntactically valid address, normalised to lower case."""
    address = string(value, "email", MAX_EMAIL).strip().lower()
    if not _EMAIL.fullmatch(address):
        raise InvalidField("email", "email is not a valid address")
    return address


def meta(value: Any) -> str:
    return string(value, "meta", MAX_META)


def base64_bytes(value: Any, field: str) -> bytes:
    try:
        data = base64.b64decode(string(value, field, 2**31), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField(field, f"{field} is not valid base64") from None
    if not data:
        raise InvalidField(field, f"{field} is empty")
    return data


def uint(args, name: str, default: int, maximum: int | None = None) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    if not _UINT.fullmatch(raw) or (maximum is not None and not 1 <= int(raw) <= maximum):
        bound = f" between 1 and {maximum}" if maximum is not None else ""
        raise InvalidField(name, f"{name} must be an integer{bound}")
    return int(raw)


def page(args) -> tuple[int, int]:
    """Keyset pagination: (after id, limit)."""
    return uint(args, "after", 0), uint(args, "limit", DEFAULT_PAGE, MAX_PAGE)
