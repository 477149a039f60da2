"""The PostgreSQL state backend: one row per state name, a session advisory lock.

Tables, created on first use in the spec's ``schema`` (default ``fuzz``):

* ``states (name, version, data, updated)`` -- one row per state name. ``version``
  counts the row's writes; every write is an ``UPDATE ... WHERE version = <read>``
  in a transaction (or an ``INSERT`` that must not find a row), so a write based on
  an outdated read changes nothing and is refused. (The document's own serial is
  inside ``data``, which may be encrypted; the backend never looks into it.)
* ``state_history (name, version, data, created)`` -- the last ``history`` versions
  of each state, for ``fuzz state history`` and ``rollback``.
* ``locks (name, info)`` -- the lock holder's :class:`~fuzz.plugin.state.LockInfo`
  (plus its server process id), for messages and ``force-unlock``.

The lock itself is a session advisory lock keyed by a hash of schema and state
name, so different states never block each other. It lives as long as the
holder's database session: a killed holder's lock goes away with its connection.
``fuzz force-unlock ID`` ends the session still holding it (a holder on a machine
that vanished keeps its session until TCP gives up); a holder that was cut off
cannot lose anyone's update, since its writes still check the row version.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field

from fuzz.errors import FuzzError
from fuzz.plugin import (
    BackendConfig,
    LockError,
    LockInfo,
    RegisterStateBackend,
    StateBackendPlugin,
    StateError,
    StateVersion,
    hookimpl,
    lock_mismatch,
    parse_config,
)

NAME = "postgres"
IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"
_INFO_RETRIES = 5  # a new holder writes its info row just after taking the lock
_INFO_RETRY_DELAY = 0.02
_UNKNOWN = "unknown"


class PostgresConfig(BackendConfig):
    """The ``state:`` block of the PostgreSQL backend."""

    conninfo: str = Field(
        default="",
        description="libpq connection string or URI; empty: the PG* environment variables "
                    "(keep passwords in PGPASSWORD or ~/.pgpass, not in the spec)",
    )
    schema_name: str = Field(default="fuzz", alias="schema", pattern=IDENTIFIER)
    name: str = Field(default="default", min_length=1, max_length=200,
                      description="the state's name: one row per name")
    history: int = Field(default=20, ge=2, le=10000, description="versions kept per state")


def open_postgres(config: Mapping[str, Any], base_dir: Path) -> PostgresBackend:
    """Build the PostgreSQL backend from a ``state:`` block (without backend and encryption)."""
    return PostgresBackend(parse_config(PostgresConfig, config, NAME))


@hookimpl
def fuzz_register_state_backends(register: RegisterStateBackend) -> None:
    """Register the ``postgres`` backend."""
    register(StateBackendPlugin(NAME, PostgresConfig, open_postgres))


def advisory_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key from a hash of ``parts``."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresBackend:
    """A :class:`~fuzz.plugin.state.StateBackend` (and versioned backend) in PostgreSQL.

    Holds two connections: one for the document, one whose session holds the
    advisory lock. Remembers the row version of the last read or write; the next
    write is conditional on it. Safe to share between threads.
    """

    shared = True

    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        self.name = config.name
        self.schema = config.schema_name
        self.lock_key = advisory_key("fuzz-state", self.schema, self.name)
        self._mutex = threading.RLock()
        self._data: psycopg.Connection[Any] | None = None
        self._lock_conn: psycopg.Connection[Any] | None = None
        self._held: LockInfo | None = None
        self._version: int | None = None  # of the row we last read or wrote; None: absent

    def describe(self) -> str:
        """``postgres HOST:PORT/DB schema S, state NAME`` (never the password)."""
        try:
            params = conninfo_to_dict(self.config.conninfo)
        except psycopg.ProgrammingError:
            params = {}
        host = params.get("host") or "default host"
        port = f":{params['port']}" if params.get("port") else ""
        database = f"/{params['dbname']}" if params.get("dbname") else ""
        return f"postgres {host}{port}{database} schema {self.schema}, state {self.name}"

    # --- connections ---------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str, error: type[FuzzError] = StateError) -> Iterator[None]:
        """Turn database failures into one-line errors naming the state."""
        try:
            yield
        except psycopg.Error as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise error(f"cannot {action} {self.describe()}: {detail}") from exc

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.config.conninfo, autocommit=True, connect_timeout=10,
                               application_name="fuzz")
        self._create_tables(conn)
        return conn

    def _create_tables(self, conn: psycopg.Connection[Any]) -> None:
        """Create the schema and tables once; concurrent first users queue on a lock."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)",
                         (advisory_key("fuzz-setup", self.schema),))
            schema = sql.Identifier(self.schema)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            for statement in _TABLES:
                conn.execute(sql.SQL(statement).format(schema=schema))

    def _data_conn(self) -> psycopg.Connection[Any]:
        if self._data is None or self._data.closed:
            self._data = self._connect()
        return self._data

    def _table(self, table: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(table))

    # --- the document --------------------------------------------------------------

    def read(self) -> bytes | None:
        """Return the state row's data (remembering its version), or None if absent."""
        with self._mutex, self._errors("read"):
            row = self._data_conn().execute(
                sql.SQL("SELECT version, data FROM {} WHERE name = %s").format(
                    self._table("states")), (self.name,)).fetchone()
        if row is None:
            self._version = None
            return None
        self._version = int(row[0])
        return bytes(row[1])

    def write(self, data: bytes) -> None:
        """Replace the row if its version is still the one last read; StateError if not."""
        with self._mutex, self._errors("write"):
            conn = self._data_conn()
            with conn.transaction():
                if self._version is None:
                    row = conn.execute(
                        sql.SQL("INSERT INTO {} (name, version, data) VALUES (%s, 1, %s) "
                                "ON CONFLICT (name) DO NOTHING RETURNING version").format(
                            self._table("states")), (self.name, data)).fetchone()
                else:
                    row = conn.execute(
                        sql.SQL("UPDATE {} SET data = %s, version = version + 1, "
                                "updated = now() WHERE name = %s AND version = %s "
                                "RETURNING version").format(self._table("states")),
                        (data, self.name, self._version)).fetchone()
                if row is None:
                    raise StateError(
                        f"{self.describe()} changed since fuzz read it (another writer); "
                        "nothing was written: run the command again"
                    )
                version = int(row[0])
                self._keep_history(conn, version, data)
            self._version = version

    def _keep_history(self, conn: psycopg.Connection[Any], version: int, data: bytes) -> None:
        history = self._table("state_history")
        conn.execute(sql.SQL("INSERT INTO {} (name, version, data) VALUES (%s, %s, %s)").format(
            history), (self.name, version, data))
        conn.execute(sql.SQL("DELETE FROM {} WHERE name = %s AND version <= %s").format(history),
                     (self.name, version - self.config.history))

    # --- versions ------------------------------------------------------------------

    def history(self, limit: int) -> list[StateVersion]:
        """The newest ``limit`` kept versions, the current one first."""
        with self._mutex, self._errors("list the versions of"):
            rows = self._data_conn().execute(
                sql.SQL("SELECT h.version, h.created, length(h.data), s.version "
                        "FROM {} h LEFT JOIN {} s ON s.name = h.name "
                        "WHERE h.name = %s ORDER BY h.version DESC LIMIT %s").format(
                    self._table("state_history"), self._table("states")),
                (self.name, limit)).fetchall()
        return [StateVersion(id=str(version), created=created.isoformat(timespec="seconds"),
                             size=int(size), current=version == current)
                for version, created, size, current in rows]

    def read_version(self, version_id: str) -> bytes:
        """The state as it was in version ``version_id`` (a number from the history)."""
        if not version_id.isdigit():
            raise StateError(f"{version_id!r} is not a version of {self.describe()} "
                             "(see fuzz state history)")
        with self._mutex, self._errors(f"read version {version_id} of"):
            row = self._data_conn().execute(
                sql.SQL("SELECT data FROM {} WHERE name = %s AND version = %s").format(
                    self._table("state_history")), (self.name, int(version_id))).fetchone()
        if row is None:
            raise StateError(f"{self.describe()} keeps no version {version_id} "
                             "(see fuzz state history)")
        return bytes(row[0])

    # --- the lock ------------------------------------------------------------------

    def try_lock(self, info: LockInfo) -> LockInfo | None:
        """Take the advisory lock without waiting: None when ours, else the holder."""
        with self._mutex:
            if self._held is not None:
                return None if self._held.id == info.id else self._held
            with self._errors("lock", LockError):
                if self._lock_conn is None or self._lock_conn.closed:
                    self._lock_conn = self._connect()
                conn = self._lock_conn
                taken = conn.execute("SELECT pg_try_advisory_lock(%s)",
                                     (self.lock_key,)).fetchone()
                if not (taken and taken[0]):
                    return self._holder_info()
                held = LockInfo(info.id, info.operation, info.who, info.created,
                                info.path or self.describe())
                pid = conn.info.backend_pid
                conn.execute(
                    sql.SQL("INSERT INTO {} (name, info) VALUES (%s, %s) ON CONFLICT (name) "
                            "DO UPDATE SET info = EXCLUDED.info").format(self._table("locks")),
                    (self.name, json.dumps({**held.to_json(), "pid": pid})))
            self._held = held
            return None

    def unlock(self, lock_id: str) -> None:
        """Release the lock if this object holds it with ``lock_id``; otherwise do nothing."""
        with self._mutex:
            if self._held is None or self._held.id != lock_id or self._lock_conn is None:
                return
            conn, self._held = self._lock_conn, None
            with self._errors("unlock", LockError):
                try:
                    conn.execute(sql.SQL("DELETE FROM {} WHERE name = %s AND info->>'id' = %s")
                                 .format(self._table("locks")), (self.name, lock_id))
                    conn.execute("SELECT pg_advisory_unlock(%s)", (self.lock_key,))
                except psycopg.OperationalError:
                    conn.close()  # the session is gone, and its lock with it

    def _holder_pid(self) -> int | None:
        """The server process id of the session holding the lock, or None if it is free."""
        high, low = (self.lock_key >> 32) & 0xFFFFFFFF, self.lock_key & 0xFFFFFFFF
        row = self._data_conn().execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1",
            (high, low)).fetchone()
        return int(row[0]) if row else None

    def _info_row(self) -> dict[str, Any] | None:
        row = self._data_conn().execute(
            sql.SQL("SELECT info FROM {} WHERE name = %s").format(self._table("locks")),
            (self.name,)).fetchone()
        return row[0] if row and isinstance(row[0], dict) and row[0].get("id") else None

    def _holder_info(self) -> LockInfo:
        """The holder's info while the lock is held by another session; never empty."""
        for attempt in range(_INFO_RETRIES):
            data = self._info_row()
            if data is not None and data.get("pid") == self._holder_pid():
                return LockInfo.from_json(data)
            if attempt + 1 < _INFO_RETRIES:
                time.sleep(_INFO_RETRY_DELAY)
        return LockInfo(_UNKNOWN, _UNKNOWN, f"an unknown holder (no lock info in "
                        f"{self.schema}.locks)", _UNKNOWN, self.describe())

    def lock_holder(self) -> LockInfo | None:
        """Who holds the lock now, or None when it is free (stale info rows are ignored)."""
        with self._mutex:
            if self._held is not None:
                return self._held
            with self._errors("read the lock of", LockError):
                if self._holder_pid() is None:
                    return None
                return self._holder_info()

    def force_unlock(self, lock_id: str) -> None:
        """Break the lock ``lock_id``: end the session holding it and drop its info.

        Raises LockError when the lock is held under another id. Does nothing when
        there is no lock at all.
        """
        with self._mutex:
            if self._held is not None:
                if self._held.id != lock_id:
                    raise lock_mismatch(lock_id, self._held.id)
                self.unlock(lock_id)
                return
            with self._errors("force-unlock", LockError):
                pid = self._holder_pid()
                data = self._info_row()
                if pid is None and data is None:
                    return
                recorded = str(data.get("id")) if data else _UNKNOWN
                if recorded != lock_id:
                    raise lock_mismatch(lock_id, recorded)
                if pid is not None:
                    self._terminate(pid)
                self._data_conn().execute(
                    sql.SQL("DELETE FROM {} WHERE name = %s AND info->>'id' = %s").format(
                        self._table("locks")), (self.name, lock_id))

    def _terminate(self, pid: int) -> None:
        ended = self._data_conn().execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        if not (ended and ended[0]):
            raise LockError(f"could not end the database session (pid {pid}) holding the lock "
                            f"of {self.describe()}")


_TABLES = (
    "CREATE TABLE IF NOT EXISTS {schema}.states (name text PRIMARY KEY, "
    "version bigint NOT NULL, data bytea NOT NULL, updated timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS {schema}.state_history (name text NOT NULL, "
    "version bigint NOT NULL, data bytea NOT NULL, created timestamptz NOT NULL DEFAULT now(), "
    "PRIMARY KEY (name, version))",
    "CREATE TABLE IF NOT EXISTS {schema}.locks (name text PRIMARY KEY, info jsonb NOT NULL)",
)
