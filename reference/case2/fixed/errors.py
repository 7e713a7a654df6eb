"""Every error leaves the service as JSON: {"error": {"code", "message"[, "field"]}}.

``code`` is the HTTP reason phrase in snake case (``bad_request``, ``not_found``, ...); ``field``
names the input at fault when there is one. The same shape is written by the gunicorn worker
for the errors gunicorn answers itself (``server.py``), and documented in ``openapi.py``.
"""
from __future__ import annotations

import errno

from flask import Flask, current_app, jsonify
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError, ServiceUnavailable

# Write failures that mean "no room": the disk or the quota is full, or the file-size limit.
STORAGE_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# Failures that mean "the image storage cannot be written now": mounted read-only (after an
# I/O error the kernel often remounts so), failing, or its permissions changed under us.
STORAGE_UNAVAILABLE = frozenset({errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM})


class InvalidField(BadRequest):
    """400 for one bad input field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class InsufficientStorage(HTTPException):
    """507 (RFC 4918): Werkzeug has no class for it."""

    code = 507
    description = "There is no room to store the data."


# Set in a request's WSGI environ when the connection must be closed after the answer (its
# body was not read to the end); the gunicorn worker (server.py) honours it. WSGI forbids an
# application to send Connection itself, and gunicorn drops it.
CLOSE_CONNECTION = "task_service.close_connection"


class RequestReadTimeout(Exception):
    """A request did not arrive in time: raised by the server's input stream (the gunicorn
    worker's read deadline, ``server.ReadDeadline``). Not an OSError, so that gunicorn reports
    it through ``handle_error`` (which answers 408) rather than as a socket failure."""


def error_code(name: str) -> str:
    return (name or "error").lower().replace(" ", "_").replace("'", "")


def error_body(code: str, message: str, field: str | None = None) -> dict:
    body = {"code": code, "message": message}
    if field:
        body["field"] = field
    return {"error": body}


def http_error(exc: HTTPException):
    response = jsonify(error_body(error_code(exc.name), exc.description,
                                  getattr(exc, "field", None)))
    response.status_code = exc.code or 500
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value  # e.g. Allow on 405, Retry-After on 503
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="tasks"'
    return response


def os_error(exc: OSError):
    """No room to store an upload is 507, storage that cannot be written now (read-only,
    failing) 503 with Retry-After; in both cases nothing was stored (the upload is written
    before the database is touched). Any other OSError is a bug."""
    if exc.errno in STORAGE_FULL:
        current_app.logger.warning("image storage full: %s", exc)
        return http_error(InsufficientStorage("no room to store the image, retry later"))
    if exc.errno in STORAGE_UNAVAILABLE:
        current_app.logger.error("image storage unavailable: %s", exc)
        retry_after = current_app.extensions["task_config"].retry_after_s
        return http_error(ServiceUnavailable("the image storage cannot be written now, "
                                             "retry later", retry_after=retry_after))
    current_app.logger.error("unexpected OS error", exc_info=exc)
    return http_error(InternalServerError())


def register(app: Flask) -> None:
    # Unhandled exceptions reach this handler as InternalServerError (after Flask has logged
    # them and sent got_request_exception), so a 500 is JSON too.
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(OSError, os_error)
