"""taskcheck: a black-box checker for implementations of the Case 2 task service.

In the spirit of Jepsen: *workloads* (``workloads``) drive the service over HTTP through an
*adapter* that knows its protocol (``protocol``); every request and response is recorded with
its timings in a *history* (``history``, JSON lines); *checkers* (``checks``) are pure functions
over that history; a *nemesis* (``faults``) can kill a worker, restart PostgreSQL or fill the
disk when the service runs under the workbench's runner. ``report`` renders what the checkers
found as Markdown and HTML.

    python -m taskcheck --url http://127.0.0.1:8080 --api original|fixed|MAPPING.yaml
    python -m taskcheck --replay build/taskcheck/history.jsonl

The code is kept importable on Python 3.8 (it may run from an old environment).
"""
from __future__ import annotations

__version__ = "1.0"
