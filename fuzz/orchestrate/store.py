"""The orchestrator's store: SQLite (embedded, the default) or PostgreSQL.

One table per record type of :mod:`fuzz.orchestrate.records`, its columns derived
from the dataclass fields (lists and mappings as JSON); one SQL for both databases,
the differences kept in :mod:`fuzz.orchestrate.store_sql`, the schema and its versions
in :mod:`fuzz.orchestrate.store_schema` (opening a store migrates it).

SQLite runs in WAL mode with ``synchronous=NORMAL``: every committed change survives
the server being killed (only a power loss may drop the last few), and readers never
block the writer. PostgreSQL keeps every committed change through its own write-ahead
log (``synchronous_commit`` on by default). Either way one connection is shared under
a lock and every method is one transaction; nothing is cached in the process, so
several processes may share a PostgreSQL store. A PostgreSQL connection that is lost
(the server restarted) is opened again and the work done once more: every write is an
upsert or a delete by key, so doing it twice is doing it once.

A write that finds the disk full calls the store's ``on_full`` (the server gives the
database its reserved space, :mod:`fuzz.orchestrate.diskspace`; SQLite only, the disk
being this machine's) and is tried once more; if the disk is still full it fails with
:class:`DiskFullError`, one sentence, never the database's raw message.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from fuzz.errors import FuzzError
from fuzz.orchestrate.leadership import FencedError, fence_check
from fuzz.orchestrate.records import RECORD_TYPES
from fuzz.orchestrate.store_schema import (
    SCHEMA_VERSION,
    column_types,
    encode,
    is_enum,
    is_json,
    migrate,
    quoted,
)
from fuzz.orchestrate.store_sql import DATABASE_ERRORS, dialect_of, open_database
from fuzz.orchestrate.store_target import PostgresTarget, StoreError

__all__ = ["SCHEMA_VERSION", "DiskFullError", "FencedError", "PostgresTarget", "Store",
           "StoreError"]

RecordT = TypeVar("RecordT")


class DiskFullError(FuzzError):
    """The database's disk is full: nothing can be recorded until space is freed."""


class Store:
    """Saves and loads orchestrator records; every method is one transaction."""

    def __init__(self, target: Path | PostgresTarget,
                 on_full: Callable[[], bool] | None = None) -> None:
        """Open the store at ``target`` (a SQLite file, created if needed, or a
        PostgreSQL database) and bring its schema up to date.

        ``on_full``: called when a write finds the disk full; True when it freed
        space, and the write is tried once more. ``migrated`` then says what opening
        did to the schema, one line each (empty: it was up to date).
        """
        self._dialect = dialect_of(target)
        self._on_full = on_full
        self._lock = threading.Lock()
        self._fence: tuple[int, Callable[[FencedError], None], Callable[[], bool]] | None = None
        self._db = open_database(self._dialect)
        try:
            self.migrated = self._run(lambda db: migrate(self._dialect, db), write=True,
                                      migrating=True)
        except BaseException:
            self._db.close()
            raise

    def describe(self) -> str:
        """Where the store is (a path or a URL without password)."""
        return self._dialect.describe()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def fence(self, epoch: int, on_fenced: Callable[[FencedError], None],
              leading: Callable[[], bool] = lambda: True) -> None:
        """From now on every write first checks that ``epoch`` holds the leadership lease
        (PostgreSQL replicas, :mod:`fuzz.orchestrate.leadership`), and before that that
        this replica still thinks it leads (``leading``); a write that finds either not
        so writes nothing, calls ``on_fenced`` and raises FencedError."""
        self._fence = (epoch, on_fenced, leading)

    @contextmanager
    def _transaction(self, migrating: bool) -> Iterator[Any]:
        self._dialect.begin(self._db, migrating)
        try:
            if self._fence is not None and not migrating:
                epoch, on_fenced, leading = self._fence
                try:
                    if not leading():
                        raise FencedError(f"this orchestrator stopped leading (epoch {epoch}): "
                                          "it writes nothing more")
                    fence_check(self._db, epoch)
                except FencedError as exc:
                    on_fenced(exc)
                    raise
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._dialect.in_transaction(self._db):  # it may have rolled back already
                self._db.execute("ROLLBACK")
            raise

    def _run(self, work: Callable[[Any], RecordT], write: bool,
             migrating: bool = False) -> RecordT:
        """Run ``work`` in one transaction (reads outside one); once more on a new
        connection if the old one was lost; once more after ``on_full`` on a full disk."""
        reconnected = freed = False
        while True:
            try:
                with self._lock:
                    if not write:
                        return work(self._db)
                    with self._transaction(migrating) as db:
                        return work(db)
            except DATABASE_ERRORS as exc:
                if self._dialect.broken(self._db, exc) and not reconnected:
                    reconnected = True
                    with self._lock:
                        self._db = open_database(self._dialect)
                    continue
                if not self._dialect.disk_full(exc):
                    raise
                if freed or self._on_full is None or not self._on_full():
                    raise DiskFullError(
                        f"the orchestrator's disk is full: its database "
                        f"{self._dialect.describe()} cannot be written; free space on "
                        "that disk") from exc
                freed = True

    def save(self, *records: Any) -> None:
        """Insert or replace ``records`` (of any record types) in one transaction."""
        self._run(lambda db: self._upsert(db, records), write=True)

    def _upsert(self, db: Any, records: Iterable[Any]) -> None:
        mark = self._dialect.mark
        by_type: dict[type[Any], list[Any]] = {}
        for record in records:
            by_type.setdefault(type(record), []).append(record)
        for record_type, group in by_type.items():
            types = column_types(record_type)
            names = list(types)
            updates = ", ".join(f"{quoted(n)} = excluded.{quoted(n)}"
                                for n in names if n not in record_type.KEY)
            db.cursor().executemany(
                f"INSERT INTO {record_type.TABLE} ({', '.join(quoted(n) for n in names)}) "
                f"VALUES ({', '.join(mark for _ in names)}) "
                f"ON CONFLICT ({', '.join(quoted(n) for n in record_type.KEY)}) "
                f"DO UPDATE SET {updates}",
                [[self._value(getattr(record, n), types[n]) for n in names]
                 for record in group],
            )

    def _value(self, value: Any, kind: Any) -> Any:
        """A field's value for the database: PostgreSQL's text cannot hold NUL, which
        becomes U+FFFD there (only text from outside, an agent's error say, has any)."""
        encoded = encode(value, kind)
        if isinstance(encoded, str) and not self._dialect.holds_nul and "\x00" in encoded:
            return encoded.replace("\x00", "\ufffd")
        return encoded

    def delete(self, record: Any) -> None:
        """Delete ``record`` (found by its key)."""
        where = " AND ".join(f"{quoted(name)} = {self._dialect.mark}" for name in record.KEY)
        self._run(lambda db: db.execute(f"DELETE FROM {record.TABLE} WHERE {where}",
                                        [getattr(record, name) for name in record.KEY]),
                  write=True)

    def load(self, record_type: type[RecordT], order_by: str = "", **where: Any) -> list[RecordT]:
        """Records of ``record_type`` whose columns equal ``where`` (all when empty)."""
        types = column_types(record_type)
        column, _, direction = order_by.partition(" ")
        unknown = set(where) - set(types)
        if unknown or (column and column not in types) or direction not in ("", "ASC", "DESC"):
            raise ValueError(f"unknown column in {sorted(unknown) or order_by}")
        columns = ", ".join(quoted(name) for name in types)
        sql = f"SELECT {columns} FROM {record_type.TABLE}"  # type: ignore[attr-defined]
        if where:
            sql += " WHERE " + " AND ".join(f"{quoted(name)} = {self._dialect.mark}"
                                            for name in where)
        if column:
            sql += f" ORDER BY {quoted(column)} {direction}"
        values = [encode(value, types[name]) for name, value in where.items()]
        rows = self._run(lambda db: db.execute(sql, values).fetchall(), write=False)
        return [_decode_row(record_type, types, row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Rows per table, every record type's."""
        def count(db: Any) -> dict[str, int]:
            return {record_type.TABLE: int(db.execute(
                f"SELECT COUNT(*) FROM {record_type.TABLE}").fetchone()[0])
                for record_type in RECORD_TYPES}
        return self._run(count, write=False)


def _decode_row(record_type: type[RecordT], types: dict[str, Any], row: Iterable[Any]
                ) -> RecordT:
    values: dict[str, Any] = {}
    for (name, kind), value in zip(types.items(), row, strict=True):
        if is_json(kind):
            values[name] = json.loads(value)
        elif kind is bool:
            values[name] = bool(value)
        elif is_enum(kind) and value in kind._value2member_map_:
            values[name] = kind(value)  # a state another fuzz wrote stays its text
        else:
            values[name] = value
    return record_type(**values)
