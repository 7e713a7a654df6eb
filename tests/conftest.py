"""Fixtures shared by every evidence suite."""
from __future__ import annotations

import uuid

import pytest

from workbench import pg


@pytest.fixture(scope="session")
def database_url():
    """URL of a PostgreSQL server for the whole run: embedded by default, DATABASE_URL if set."""
    with pg.database_url() as url:
        yield url


@pytest.fixture
def fresh_database_url(database_url):
    """A new, empty database on the session's server; dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:16]
    url = pg.create_database(database_url, name)
    try:
        yield url
    finally:
        pg.drop_database(database_url, name)
