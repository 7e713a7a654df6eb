"""The gunicorn worker of the task service: gthread, with gunicorn's own errors in JSON.

Gunicorn answers some requests itself, before the application sees them: a request line or a
header over its limits (414, 431), a malformed request (400), an unsupported transfer coding
(501). It writes those as an HTML page. This worker writes them in the service's error format
(``errors.error_body``) instead, so a client parses one format whoever refused its request.
"""
from __future__ import annotations

import json

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from .errors import error_body, error_code


def write_json_error(sock, status_int: int, reason: str, message: str) -> None:
    body = json.dumps(error_body(error_code(reason), message or reason)).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


class JsonErrorThreadWorker(ThreadWorker):
    def init_process(self):
        # gunicorn's Worker.handle_error calls util.write_error; this process serves only the
        # task service, so its error writer is replaced for the whole process.
        util.write_error = write_json_error
        super().init_process()
