"""Gunicorn configuration of the task service (``gunicorn -c reference/case2/fixed/gunicorn_conf.py
reference.case2.fixed.app:app``); ``workbench.service_runner`` loads it too.

* gthread workers whose own errors are JSON, that collect request heads in their event loop
  and read every request under a deadline (``server.JsonErrorThreadWorker``: slow clients);
* ``workers`` processes of ``threads`` threads. Threads serve requests that wait on PostgreSQL
  or the disk; processes are what runs Python (image checks) in parallel. The defaults: one
  process per CPU up to 4, 8 threads each (``WEB_CONCURRENCY`` and ``GUNICORN_THREADS``
  override them). Each process has its own pool of at most ``DB_MAX_CONNECTIONS`` (20)
  PostgreSQL sessions, so ``workers × DB_MAX_CONNECTIONS`` must stay below the server's
  ``max_connections`` (100 by default), and ``threads`` at or below ``DB_MAX_CONNECTIONS``;
* kept-alive connections wait ``keepalive`` seconds for their next request (to the reverse
  proxy in front, which must buffer whole requests: see ``server.py``);
* request limits stated in the OpenAPI document: request line 8190 bytes (gunicorn's maximum),
  100 header fields of at most 8190 bytes. Every documented input fits: ``meta`` travels in
  the body (JSON or multipart), never in the URL;
* the reconciler at start-up (``when_ready``, before any worker is forked) and after a worker
  exits (``child_exit``: a worker killed mid-upload leaves debris), in a background thread of
  the master that retries while files of unfinished transactions remain.
"""
from __future__ import annotations

import os
import threading
import time

worker_class = "reference.case2.fixed.server.JsonErrorThreadWorker"
workers = int(os.environ.get("WEB_CONCURRENCY") or min(os.cpu_count() or 1, 4))
threads = int(os.environ.get("GUNICORN_THREADS") or 8)
keepalive = 5
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

RECONCILE_ATTEMPTS = 5
RECONCILE_PAUSE_S = 1.0


def _reconcile(server, why: str, attempts: int = 1) -> None:
    from reference.case2.fixed.reconcile import reconcile_app

    app = server.app.wsgi()
    for attempt in range(attempts):
        try:
            report = reconcile_app(app, dedicated_connection=True)
        except Exception as exc:  # noqa: BLE001 - the database may be down: try again later
            server.log.warning("reconcile (%s) failed: %s", why, exc)
        else:
            server.log.info("reconcile (%s): %s", why, report.as_dict())
            if not report.in_flight:
                return
        time.sleep(RECONCILE_PAUSE_S * (attempt + 1))


def when_ready(server):
    _reconcile(server, "start-up")


def child_exit(server, worker):
    threading.Thread(target=_reconcile, args=(server, f"worker {worker.pid} exited"),
                     kwargs={"attempts": RECONCILE_ATTEMPTS}, daemon=True).start()
