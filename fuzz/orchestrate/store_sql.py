"""What differs between the orchestrator's two databases, and nothing else.

:class:`fuzz.orchestrate.store.Store` writes one SQL for both; a dialect gives it the
few pieces that differ: how to connect, the parameter mark (``?`` or ``%s``), column
types (``BLOB``/``BYTEA``, 64-bit integers), how the schema version is kept (SQLite's
``user_version``, a one-row table on PostgreSQL), how a transaction begins (SQLite
takes its write lock at once; PostgreSQL serialises migrations on an advisory lock),
and which error means a full disk. Hand-written rather than SQLAlchemy: the store's
SQL is four statements over tables derived from dataclasses, and this is smaller than
the mapping layer would be.

PostgreSQL credentials never come from the spec: the URL names host, port, database
and user; the password comes from ``password_file`` or libpq's own environment
(``PGPASSWORD``, ``PGPASSFILE``, ``~/.pgpass``).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any, Protocol

import psycopg

from fuzz.orchestrate.store_target import PostgresTarget, StoreError

DATABASE_ERRORS = (sqlite3.Error, psycopg.Error)  # what either driver raises
MIGRATION_LOCK = 0x66757A7A  # "fuzz": the advisory lock replicas take to migrate one at a time
CONNECT_TIMEOUT = 10


def _not_pipeline_teardown(record: logging.LogRecord) -> bool:
    """False for psycopg's "error ignored terminating <Pipeline>" warning.

    ``executemany`` runs as a pipeline; when the server refuses a row, psycopg raises
    that error to the store (which reports it) and also warns that ending the aborted
    pipeline failed, about the same error. Without log handlers (the CLI) Python printed
    that warning as a second stderr line beside the one-line error; in a server log it
    only repeats it. psycopg offers no switch for it, hence this filter.
    """
    return not record.getMessage().startswith("error ignored terminating <psycopg.Pipeline")


logging.getLogger("psycopg").addFilter(_not_pipeline_teardown)


def first_line(exc: Exception) -> str:
    """A driver error's first line (PostgreSQL adds DETAIL lines, which may show a row)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class Dialect(Protocol):
    """The pieces of SQL and connection handling one database does its own way."""

    mark: str  # the parameter placeholder
    holds_nul: bool  # whether text may hold NUL characters (PostgreSQL's may not)

    def connect(self) -> Any:
        """A new connection in autocommit mode (transactions are begun explicitly)."""

    def column_type(self, python_type: Any) -> str:
        """The SQL type of a column holding ``python_type``."""

    def begin(self, db: Any, migrating: bool) -> None:
        """Begin a write transaction (``migrating``: one that may change the schema)."""

    def version(self, db: Any) -> int:
        """The schema version recorded in the database (0: none yet)."""

    def set_version(self, db: Any, version: int) -> None:
        """Record the schema version (inside the migration's transaction)."""

    def columns(self, db: Any, table: str) -> set[str]:
        """The columns table ``table`` has (empty: no such table)."""

    def disk_full(self, exc: Exception) -> bool:
        """Whether ``exc`` says the database's disk is full."""

    def broken(self, db: Any, exc: Exception) -> bool:
        """Whether ``exc`` lost the connection (a new one may do the work again)."""

    def in_transaction(self, db: Any) -> bool:
        """Whether a transaction is open on ``db`` (one a failure left to roll back)."""

    def describe(self) -> str:
        """Where the database is, for messages (never a password)."""


_SQLITE_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL", bool: "INTEGER", bytes: "BLOB"}
# TEXT in the C collation: rows sort by byte, as on SQLite, whatever the server's locale
_POSTGRES_TYPES = {str: 'TEXT COLLATE "C"', int: "BIGINT", float: "DOUBLE PRECISION",
                   bool: "INTEGER", bytes: "BYTEA"}


class SqliteDialect:
    """The embedded database: one file, WAL mode, ``synchronous=NORMAL``."""

    mark = "?"
    holds_nul = True

    def __init__(self, path: Path) -> None:
        """The SQLite database at ``path``."""
        self.path = path

    def connect(self) -> sqlite3.Connection:
        """Open the file (creating it), in WAL mode."""
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def column_type(self, python_type: Any) -> str:
        """SQLite's type of a column (text for JSON and enums)."""
        return _SQLITE_TYPES.get(python_type, "TEXT")

    def begin(self, db: sqlite3.Connection, migrating: bool) -> None:
        """``BEGIN IMMEDIATE``: the write lock at once, so no two writers interleave."""
        db.execute("BEGIN IMMEDIATE")

    def version(self, db: sqlite3.Connection) -> int:
        """``PRAGMA user_version``."""
        return int(db.execute("PRAGMA user_version").fetchone()[0])

    def set_version(self, db: sqlite3.Connection, version: int) -> None:
        """Set ``PRAGMA user_version``."""
        db.execute(f"PRAGMA user_version={int(version)}")

    def columns(self, db: sqlite3.Connection, table: str) -> set[str]:
        """``PRAGMA table_info``."""
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}

    def disk_full(self, exc: Exception) -> bool:
        """``SQLITE_FULL``."""
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL

    def broken(self, db: sqlite3.Connection, exc: Exception) -> bool:
        """A file's connection is never lost."""
        return False

    def in_transaction(self, db: sqlite3.Connection) -> bool:
        """SQLite's own flag (it rolls some failures back by itself)."""
        return db.in_transaction

    def describe(self) -> str:
        """The file's path."""
        return str(self.path)


class PostgresDialect:
    """A PostgreSQL database, shared by whoever connects to it."""

    mark = "%s"
    holds_nul = False

    def __init__(self, target: PostgresTarget) -> None:
        """The database ``target`` names."""
        self.target = target

    def connect(self) -> psycopg.Connection[Any]:
        """Connect, with the password from ``password_file`` when one is named."""
        extra: dict[str, Any] = {}
        if self.target.password_file is not None:
            try:
                extra["password"] = self.target.password_file.read_text().strip()
            except OSError as exc:
                raise StoreError(f"cannot read the store's password file "
                                 f"{self.target.password_file}: {exc.strerror}") from exc
        return psycopg.connect(self.target.url, autocommit=True,
                               connect_timeout=CONNECT_TIMEOUT, **extra)

    def column_type(self, python_type: Any) -> str:
        """PostgreSQL's type of a column (64-bit integers, ``BYTEA``, byte-ordered text)."""
        return _POSTGRES_TYPES.get(python_type, _POSTGRES_TYPES[str])

    def begin(self, db: psycopg.Connection[Any], migrating: bool) -> None:
        """``BEGIN``; a migration also waits for the advisory lock, one replica at a time.

        Every write transaction of the store is a set of upserts and deletes by key,
        which row locks make atomic under READ COMMITTED as SQLite's single writer did.
        """
        db.execute("BEGIN")
        if migrating:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def version(self, db: psycopg.Connection[Any]) -> int:
        """The ``fuzz_schema`` table's version (0 when the table is missing)."""
        if not self.columns(db, "fuzz_schema"):
            return 0
        row = db.execute("SELECT version FROM fuzz_schema").fetchone()
        return int(row[0]) if row else 0

    def set_version(self, db: psycopg.Connection[Any], version: int) -> None:
        """Keep ``version`` as ``fuzz_schema``'s one row."""
        db.execute("CREATE TABLE IF NOT EXISTS fuzz_schema (version INTEGER NOT NULL)")
        db.execute("DELETE FROM fuzz_schema")
        db.execute("INSERT INTO fuzz_schema (version) VALUES (%s)", (version,))

    def columns(self, db: psycopg.Connection[Any], table: str) -> set[str]:
        """The table's columns in the connection's current schema."""
        rows = db.execute("SELECT column_name FROM information_schema.columns "
                          "WHERE table_schema = current_schema() AND table_name = %s",
                          (table,)).fetchall()
        return {row[0] for row in rows}

    def disk_full(self, exc: Exception) -> bool:
        """SQLSTATE 53100 (disk_full)."""
        return isinstance(exc, psycopg.errors.DiskFull)

    def broken(self, db: psycopg.Connection[Any], exc: Exception) -> bool:
        """The connection closed under us (a restarted or failed-over server)."""
        return isinstance(exc, psycopg.OperationalError) and db.closed

    def in_transaction(self, db: psycopg.Connection[Any]) -> bool:
        """An open or failed transaction on a live connection."""
        return not db.closed and \
            db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def describe(self) -> str:
        """The URL (it holds no password)."""
        return self.target.url


def open_database(dialect: Dialect) -> Any:
    """A new connection by ``dialect``; StoreError (one line) when it cannot be opened."""
    try:
        return dialect.connect()
    except DATABASE_ERRORS as exc:
        raise StoreError(f"cannot open the orchestrator database "
                         f"{dialect.describe()}: {first_line(exc)}") from exc


def dialect_of(target: Path | PostgresTarget) -> Dialect:
    """The dialect of a store's target: a file path is SQLite."""
    if isinstance(target, PostgresTarget):
        return PostgresDialect(target)
    return SqliteDialect(target)
