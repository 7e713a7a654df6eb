"""Configuration of the task service: one frozen dataclass, read from the environment once.

Every limit the service enforces lives here, so that the code, the OpenAPI document and the
tests read the same numbers. Paths are made absolute when the configuration is read (against
the working directory of that moment), so no later change of directory can move the storage.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    database_url: str | None = None
    storage_dir: str = "storage/task_images"
    # Whole request body (JSON with base64, or multipart), bytes.
    max_content_length: int = 10 * 2**20
    # Decoded image: width x height. About a 24-megapixel photo; a decompression bomb declares
    # far more in a few kilobytes and is refused before its pixels are decoded.
    max_image_pixels: int = 25_000_000
    db_max_connections: int = 20
    # PostgreSQL session limits (milliseconds): no request waits on a lock, runs a statement or
    # sits in an open transaction longer than this.
    lock_timeout_ms: int = 3_000
    statement_timeout_ms: int = 10_000
    idle_in_transaction_timeout_ms: int = 15_000
    connect_timeout_s: int = 5
    # The longest this process waits for PostgreSQL to answer one statement or COMMIT
    # (database.StatementWatchdog): past it the connection is cut and the request answers 503.
    # Above statement_timeout, so a live server always cancels first; it fires only when the
    # server cannot answer at all (frozen, partitioned away).
    db_response_timeout_ms: int = 12_000
    # How long a client should wait before retrying when the database is unavailable.
    retry_after_s: int = 2
    # Reading requests (the gunicorn worker, server.py). A request head (line and headers)
    # must be complete this long after the connection opened or, on a kept-alive connection,
    # after its first byte; else 408. A body gets this long too, plus one second for every
    # request_min_rate_bps bytes received, request_read_max_s at most; else 408. No single
    # wait for the client, reading or writing, lasts longer than request_body_timeout_s.
    request_head_timeout_s: int = 10
    request_body_timeout_s: int = 10
    request_min_rate_bps: int = 16 * 1024
    request_read_max_s: int = 120
    # Claims: default and longest lease a claim may ask for.
    lease_seconds: int = 300
    max_lease_seconds: int = 86_400
    # A staged upload older than this is debris of a crash, whoever wrote it.
    staged_max_age_s: int = 900
    # A file whose COMMIT failed (its row may or may not exist) is checked again after this
    # long, doubling up to reconcile_retry_max_s, until the database says (reconcile.Pending).
    reconcile_retry_s: int = 1
    reconcile_retry_max_s: int = 60

    def __post_init__(self):
        object.__setattr__(self, "storage_dir", str(Path(self.storage_dir).absolute()))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Config":
        """``DATABASE_URL``, ``IMAGE_STORAGE_DIR`` and, for every other field, its name in upper
        case (``MAX_CONTENT_LENGTH``, ``LEASE_SECONDS``, ...)."""
        values = {}
        for field in dataclasses.fields(cls):
            name = "IMAGE_STORAGE_DIR" if field.name == "storage_dir" else field.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[field.name] = raw if field.name in ("database_url", "storage_dir") else int(raw)
        return cls(**values)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)
