"""The store's schema and its versioned migrations (``fuzz server migrate``).

Tables are derived from the record dataclasses (:mod:`fuzz.orchestrate.records`): a
missing table is created, and a column a newer fuzz added (a field with a default) is
added with that default; such a change needs no version of its own. A version marks a
change the derived schema cannot carry by itself, and :data:`MIGRATIONS` says what each
one means. Every migration runs in one transaction (PostgreSQL's DDL is transactional,
SQLite's too), so a crash leaves the schema as it was before or as it is after.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import typing
from dataclasses import dataclass
from typing import Any

from fuzz.orchestrate.records import RECORD_TYPES
from fuzz.orchestrate.store_sql import Dialect
from fuzz.orchestrate.store_target import StoreError


@dataclass(frozen=True)
class Migration:
    """One schema version: what it changed, said once for ``fuzz server migrate``."""

    version: int
    meaning: str


# Each version's tables are those of its records; the steps below are what else it meant.
MIGRATIONS = (
    Migration(1, "the record tables"),
    # rows of 1 are kept as they are: each run stays its recorded owner's. A fuzz that knows
    # only 1 would mix owners' runs of one name, so it must refuse a database of 2.
    Migration(2, "workflows keyed by (owner, name); owners' job ids (owner_ids)"),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def _columns_of(record_type: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(record_type)
    return {f.name: hints[f.name] for f in dataclasses.fields(record_type)}


_COLUMNS = {record_type: _columns_of(record_type) for record_type in RECORD_TYPES}


def column_types(record_type: type[Any]) -> dict[str, Any]:
    """The columns of a record type's table and their Python types (worked out once)."""
    return _COLUMNS[record_type]


@functools.cache  # asked for every field of every record written: thousands a second
def is_json(python_type: Any) -> bool:
    """Whether a column holds a list or a mapping, kept as JSON text."""
    return typing.get_origin(python_type) in (list, dict)


def is_enum(python_type: Any) -> bool:
    """Whether a column holds an enum (a state), kept as its value's text."""
    return isinstance(python_type, type) and issubclass(python_type, enum.Enum)


def quoted(name: str) -> str:
    """A column name as an SQL identifier (``index`` is a keyword)."""
    return f'"{name}"'


def encode(value: Any, kind: Any) -> Any:
    """A field's value as its column keeps it."""
    if is_json(kind):
        return json.dumps(value, sort_keys=True)
    if kind is bool:
        return int(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _create_statement(dialect: Dialect, record_type: type[Any]) -> str:
    columns = ", ".join(f"{quoted(name)} {dialect.column_type(kind)}"
                        for name, kind in column_types(record_type).items())
    key = ", ".join(quoted(name) for name in record_type.KEY)
    return f"CREATE TABLE {record_type.TABLE} ({columns}, PRIMARY KEY ({key}))"


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
    encoded = encode(value, column_types(record_type)[name])
    if isinstance(encoded, str):
        return "'" + encoded.replace("'", "''") + "'"
    return repr(encoded)


def migrate(dialect: Dialect, db: Any) -> list[str]:
    """Bring the schema to :data:`SCHEMA_VERSION` inside the caller's transaction.

    Returns what was done, one line each (empty: nothing to do). A database of a
    newer fuzz is refused with :class:`StoreError`.
    """
    version = dialect.version(db)
    if version > SCHEMA_VERSION:
        raise StoreError(f"{dialect.describe()} was written by a newer fuzz (schema "
                         f"{version}, this one knows {SCHEMA_VERSION}); upgrade fuzz")
    done: list[str] = []
    for record_type in RECORD_TYPES:
        present = dialect.columns(db, record_type.TABLE)
        if not present:
            db.execute(_create_statement(dialect, record_type))
            done.append(f"created table {record_type.TABLE}")
            continue
        for name, kind in column_types(record_type).items():
            if name not in present:
                default = _default_literal(record_type, name)
                db.execute(f"ALTER TABLE {record_type.TABLE} ADD COLUMN {quoted(name)} "
                           f"{dialect.column_type(kind)} DEFAULT {default}")
                done.append(f"added column {record_type.TABLE}.{name} (default {default})")
    for step in MIGRATIONS:
        if step.version > version:
            done.append(f"schema {step.version}: {step.meaning}")
    if version != SCHEMA_VERSION:
        dialect.set_version(db, SCHEMA_VERSION)
    return done
