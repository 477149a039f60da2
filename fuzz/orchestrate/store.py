"""The orchestrator's embedded store: SQLite (the standard library's ``sqlite3``).

One table per record type of :mod:`fuzz.orchestrate.records`, its columns derived
from the dataclass fields (lists and mappings as JSON). The database runs in WAL
mode with ``synchronous=NORMAL``: every committed change survives the server being
killed (only a power loss may drop the last few), and readers never block the
writer. One connection is shared under a lock: the server is one process and its
writes are small.

A write that finds the disk full (``SQLITE_FULL``) calls the store's ``on_full``
(the server gives the database its reserved space, :mod:`fuzz.orchestrate.diskspace`)
and is tried once more; if the disk is still full it fails with
:class:`DiskFullError`, one sentence, never SQLite's raw "database or disk is full".
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sqlite3
import threading
import typing
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from fuzz.errors import FuzzError
from fuzz.orchestrate.records import RECORD_TYPES

# 2: workflows are keyed by (owner, name) (rows of 1 are kept as they are: each run stays
#    its recorded owner's) and owners have job ids (owner_ids). A fuzz that knows only 1
#    would mix owners' runs of one name, so it must refuse a database of 2.
SCHEMA_VERSION = 2
RecordT = TypeVar("RecordT")

_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL", bool: "INTEGER", bytes: "BLOB"}


class StoreError(FuzzError):
    """The database cannot be opened or is of a newer version than this server."""


class DiskFullError(FuzzError):
    """The database's disk is full: nothing can be recorded until space is freed."""


def _disk_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _columns_of(record_type: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(record_type)
    return {f.name: hints[f.name] for f in dataclasses.fields(record_type)}


_COLUMNS = {record_type: _columns_of(record_type) for record_type in RECORD_TYPES}


def _column_types(record_type: type[Any]) -> dict[str, Any]:
    """The columns of a record type's table and their Python types (worked out once)."""
    return _COLUMNS[record_type]


def _sql_type(python_type: Any) -> str:
    return _SQL_TYPES.get(python_type, "TEXT")


def _is_json(python_type: Any) -> bool:
    return typing.get_origin(python_type) in (list, dict)


def _is_enum(python_type: Any) -> bool:
    """Whether a column holds an enum (a state), kept as its value's text."""
    return isinstance(python_type, type) and issubclass(python_type, enum.Enum)


def _quoted(name: str) -> str:
    """A column name as an SQL identifier (``index`` is a keyword)."""
    return f'"{name}"'


def _create_statement(record_type: type[Any]) -> str:
    columns = ", ".join(
        f"{_quoted(name)} {_sql_type(kind)}" for name, kind in _column_types(record_type).items()
    )
    key = ", ".join(_quoted(name) for name in record_type.KEY)
    return f"CREATE TABLE IF NOT EXISTS {record_type.TABLE} ({columns}, PRIMARY KEY ({key}))"


def _default_literal(record_type: type[Any], name: str) -> str:
    """The SQL literal of field ``name``'s default, for a column added to an older table."""
    field = next(f for f in dataclasses.fields(record_type) if f.name == name)
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        raise StoreError(f"table {record_type.TABLE} lacks column {name!r}, which has no "
                         "default: this database cannot be upgraded in place")
    encoded = Store._encode(value, _column_types(record_type)[name])
    if isinstance(encoded, str):
        return "'" + encoded.replace("'", "''") + "'"
    return repr(encoded)


def _add_missing_columns(db: sqlite3.Connection, record_type: type[Any]) -> None:
    """Give a table an older fuzz made the columns added since, each with its default
    (adding a field with a default to a record needs no schema version of its own)."""
    present = {row[1] for row in db.execute(f"PRAGMA table_info({record_type.TABLE})")}
    for name, kind in _column_types(record_type).items():
        if name not in present:
            db.execute(f"ALTER TABLE {record_type.TABLE} ADD COLUMN {_quoted(name)} "
                       f"{_sql_type(kind)} DEFAULT {_default_literal(record_type, name)}")


class Store:
    """Saves and loads orchestrator records; every method is one transaction."""

    def __init__(self, path: Path, on_full: Callable[[], bool] | None = None) -> None:
        """Open (creating if needed) the database at ``path``.

        ``on_full``: called when a write finds the disk full; True when it freed
        space, and the write is tried once more.
        """
        self._path = path
        self._on_full = on_full
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the orchestrator database {path}: {exc}") from exc
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer fuzz (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade fuzz"
            )
        self._lock = threading.Lock()
        with self._transaction() as db:
            for record_type in RECORD_TYPES:
                db.execute(_create_statement(record_type))
                _add_missing_columns(db, record_type)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already
                    self._db.execute("ROLLBACK")
                raise

    def _write(self, work: Callable[[sqlite3.Connection], object]) -> None:
        """Run ``work`` in one transaction; on a full disk, once more after ``on_full``."""
        for last in (False, True):
            try:
                with self._transaction() as db:
                    work(db)
                return
            except sqlite3.Error as exc:
                if not _disk_full(exc):
                    raise
            if last or self._on_full is None or not self._on_full():
                break
        raise DiskFullError(
            f"the orchestrator's disk is full: its database {self._path} cannot be "
            "written; free space on that disk")

    def save(self, *records: Any) -> None:
        """Insert or replace ``records`` (of any record types) in one transaction."""
        self._write(lambda db: self._insert(db, records))

    def _insert(self, db: sqlite3.Connection, records: Iterable[Any]) -> None:
        for record in records:
            types = _column_types(type(record))
            names = list(types)
            values = [self._encode(getattr(record, n), types[n]) for n in names]
            marks = ", ".join("?" for _ in names)
            db.execute(
                f"INSERT OR REPLACE INTO {record.TABLE} "
                f"({', '.join(_quoted(n) for n in names)}) "
                f"VALUES ({marks})",
                values,
            )

    def delete(self, record: Any) -> None:
        """Delete ``record`` (found by its key)."""
        where = " AND ".join(f"{_quoted(name)} = ?" for name in record.KEY)
        self._write(lambda db: db.execute(
            f"DELETE FROM {record.TABLE} WHERE {where}",
            [getattr(record, name) for name in record.KEY],
        ))

    def load(self, record_type: type[RecordT], order_by: str = "", **where: Any) -> list[RecordT]:
        """Records of ``record_type`` whose columns equal ``where`` (all when empty)."""
        types = _column_types(record_type)
        column, _, direction = order_by.partition(" ")
        unknown = set(where) - set(types)
        if unknown or (column and column not in types) or direction not in ("", "ASC", "DESC"):
            raise ValueError(f"unknown column in {sorted(unknown) or order_by}")
        columns = ", ".join(_quoted(name) for name in types)
        sql = f"SELECT {columns} FROM {record_type.TABLE}"  # type: ignore[attr-defined]
        if where:
            sql += " WHERE " + " AND ".join(f"{_quoted(name)} = ?" for name in where)
        if column:
            sql += f" ORDER BY {_quoted(column)} {direction}"
        with self._lock:
            rows = self._db.execute(sql, list(where.values())).fetchall()
        return [self._decode_row(record_type, types, row) for row in rows]

    @staticmethod
    def _encode(value: Any, kind: Any) -> Any:
        if _is_json(kind):
            return json.dumps(value, sort_keys=True)
        if kind is bool:
            return int(value)
        if isinstance(value, enum.Enum):
            return value.value
        return value

    @staticmethod
    def _decode_row(record_type: type[RecordT], types: dict[str, Any], row: Iterable[Any]
                    ) -> RecordT:
        values: dict[str, Any] = {}
        for (name, kind), value in zip(types.items(), row, strict=True):
            if _is_json(kind):
                values[name] = json.loads(value)
            elif kind is bool:
                values[name] = bool(value)
            elif _is_enum(kind) and value in kind._value2member_map_:
                values[name] = kind(value)  # a state another fuzz wrote stays its text
            else:
                values[name] = value
        return record_type(**values)
