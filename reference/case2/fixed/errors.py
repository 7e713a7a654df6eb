"""Every error leaves the service as JSON: {"error": {"code", "message"[, "field"]}}."""
from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import BadRequest, HTTPException


class InvalidField(BadRequest):
    """400 for one bad input field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _code(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def http_error(exc: HTTPException):
    body = {"code": _code(exc), "message": exc.description}
    if getattr(exc, "field", None):
        body["field"] = exc.field
    response = jsonify({"error": body})
    response.status_code = exc.code or 500
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value  # e.g. Allow on 405
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="tasks"'
    return response


def register(app: Flask) -> None:
    # Unhandled exceptions reach this handler as InternalServerError (after Flask has logged
    # them and sent got_request_exception), so a 500 is JSON too.
    app.register_error_handler(HTTPException, http_error)
