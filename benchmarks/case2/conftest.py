"""Fixtures of the Case 2 benchmark: a PostgreSQL server for the run (embedded by default,
``DATABASE_URL`` otherwise), as the evidence suite has."""
from __future__ import annotations

import pytest

from workbench import pg


@pytest.fixture(scope="session")
def database_url():
    with pg.database_url() as url:
        yield url
