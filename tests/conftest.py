"""Fixtures shared by every evidence suite."""
from __future__ import annotations

import psutil  # noqa: F401  (loaded before any pytester run snapshots and restores sys.modules:
# psutil finds itself there at call time, so a copy first loaded inside such a run breaks later)
import pytest

from workbench import pg


@pytest.fixture(scope="session")
def database_url():
    """URL of a PostgreSQL server for the whole run: embedded by default, DATABASE_URL if set."""
    with pg.database_url() as url:
        yield url


@pytest.fixture(scope="session")
def empty_databases(database_url):
    """Empty databases on the session's server, reused from test to test (``pg.EmptyDatabases``:
    emptying one takes tens of milliseconds, creating one a few hundred); dropped at the end."""
    databases = pg.EmptyDatabases(database_url)
    yield databases
    databases.close()


@pytest.fixture
def fresh_database_url(empty_databases):
    """An empty database on the session's server, this test's alone: nothing of an earlier test
    is left in it (no table or other schema object, no session, no ``ALTER DATABASE`` setting)."""
    url = empty_databases.take()
    try:
        yield url
    finally:
        empty_databases.give_back(url)
