"""``fuzz server migrate-store``: a site's records copied from one store to another.

The copy is one transaction on the target: an interrupted copy leaves the target empty
and can simply be run again. The target must be empty, or already hold exactly the
source's records (a copy that finished: nothing more is done). After the copy the
rows of every table are counted on both sides and must match.
"""

from __future__ import annotations

from typing import Any

from fuzz.orchestrate.records import RECORD_TYPES
from fuzz.orchestrate.store import Store, StoreError
from fuzz.orchestrate.store_sql import DATABASE_ERRORS, first_line


def _everything(store: Store) -> dict[type[Any], list[Any]]:
    """Every record, each table's in the order of its key."""
    return {record_type: sorted(store.load(record_type), key=lambda record: tuple(
                getattr(record, name) for name in record.KEY))
            for record_type in RECORD_TYPES}


def copy_store(source: Store, target: Store) -> tuple[dict[str, int], bool]:
    """Copy every record of ``source`` into ``target``.

    Returns the rows per table and whether they were copied now (False: the target
    already held them all). :class:`StoreError` when the target holds other records,
    or when the counts differ after the copy.
    """
    records = _everything(source)
    held = {table: count for table, count in target.counts().items() if count}
    if held:
        if _everything(target) == records:
            return source.counts(), False
        listed = ", ".join(f"{table} {count}" for table, count in sorted(held.items()))
        raise StoreError(f"{target.describe()} already holds other records ({listed}): "
                         "migrate-store copies into an empty store only")
    try:
        target.save(*(record for group in records.values() for record in group))
    except DATABASE_ERRORS as exc:
        raise StoreError(f"the copy into {target.describe()} failed and was rolled back, "
                         f"nothing copied (run it again once fixed): {first_line(exc)}") from exc
    counts, copied = source.counts(), target.counts()
    if counts != copied:
        differing = ", ".join(f"{table} {counts[table]} != {copied[table]}"
                              for table in counts if counts[table] != copied[table])
        raise StoreError(f"the copy in {target.describe()} does not match its source "
                         f"({differing})")
    return counts, True
