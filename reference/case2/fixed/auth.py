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

from .models import User

TOKEN_PATTERN = r"[A-Za-z0-9_-]{20,128}"
_BEARER = re.compile(rf"bearer +({TOKEN_PATTERN})", re.IGNORECASE | re.ASCII)


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
    user = User.get_or_none(User.token_hash == hash_token(match.group(1)))
    if user is None:
        raise Unauthorized("invalid token")
    return user
