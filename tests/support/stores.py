"""The orchestrator's store under test, on each database it runs on.

``store_target`` is parametrised: ``sqlite`` (a file under ``tmp_path``) and
``postgres`` (a fresh database on the session's PostgreSQL, dropped after the test), so
a test module that opens its Store on it runs against both, with no copied test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from fuzz.orchestrate.store import PostgresTarget
from tests.support.servers import Postgres

STORES = ("sqlite", "postgres")


def fresh_database(server: Postgres) -> str:
    """Create an empty database on ``server``; its name."""
    name = "fuzz_" + uuid.uuid4().hex[:16]
    with psycopg.connect(server.conninfo, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    return name


def drop_database(server: Postgres, name: str) -> None:
    """Drop database ``name``, whoever is still connected to it."""
    with psycopg.connect(server.conninfo, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def postgres_url(server: Postgres, database: str) -> str:
    """The store URL of ``database`` on ``server`` (trust authentication: no password)."""
    return f"postgres://{server.user}@{server.host}:{server.port}/{database}"


@pytest.fixture
def pg_target(postgres: Postgres) -> Iterator[PostgresTarget]:
    """A fresh, empty PostgreSQL database for one test's store."""
    name = fresh_database(postgres)
    try:
        yield PostgresTarget(postgres_url(postgres, name))
    finally:
        drop_database(postgres, name)


@pytest.fixture(params=STORES)
def store_target(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> Iterator[Path | PostgresTarget]:
    """Where a test's Store lives: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield tmp_path / "server.db"
        return
    yield request.getfixturevalue("pg_target")
