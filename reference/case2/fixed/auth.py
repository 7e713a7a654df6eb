"""Opaque bearer tokens: issued at user creation, stored as SHA-256 hashes.

``Authorization: Bearer <token>``; the scheme name is case-insensitive (RFC 9110, section 11.1),
one or more spaces may separate it from the token.
"""
from __future__ import annotations

import hashlib
import re
import secrets

from flask import Request
from werkzeug.exceptions import Unauthorized

from .prepared import Prepared, Slot
from .models import User, db

TOKEN_PATTERN = r"[A-Za-z0-9_-]{20,128}"
_BEARER = re.compile(rf"bearer +({TOKEN_PATTERN})", re.IGNORECASE | re.ASCII)
_TOKEN_HASH = Slot(0)
# The query of User.get_or_none(User.token_hash == …), compiled once: every request sends it.
BY_TOKEN = Prepared(User.select().where(User.token_hash == _TOKEN_HASH).limit(1),
                    User, token_hash=_TOKEN_HASH)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token and the hash to store."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def authenticate(request: Request) -> User:
    """The user whose token is in ``Authorization: Bearer …``; 401 otherwise."""
    match = _BEARER.fullmatch(request.headers.get("Authorization", ""))
    if match is None:
        raise Unauthorized("a bearer token is required")
    rows = BY_TOKEN.run(db, token_hash=hash_token(match.group(1)))
    if not rows:
        raise Unauthorized("invalid token")
    user = User(__no_default__=1, **rows[0])  # as peewee builds a fetched row: nothing dirty
    user._dirty.clear()
    return user
