"""Group commit over the store: the reports of many attempts written in one transaction.

Hundreds of worker threads report what their attempts do (running, ended, finished),
each a write that must be on record before the worker acts on it. One transaction each
costs a round trip and a commit per report. Here a report is queued (a copy, made under
the runner's lock, so it is the state of that moment) and its worker waits: the first
waiter to get the writer's lock writes every report queued so far in one transaction,
and those queued meanwhile go together in the next. Nobody waits on a timer: a lone
report is written at once; under load the groups grow by themselves.

A write made at once (:meth:`GroupCommit.save`) first takes what is queued, in the same
transaction, so a later state of a record is never overwritten by an earlier one still
queued. (Hand-written: no database library offers group commit to its clients.)

A report that neither its worker nor a restart depends on is queued without a ticket
(:meth:`GroupCommit.queue`): it goes with the next transaction, whoever makes it (at the
latest :meth:`GroupCommit.flush`, which the runner's loop calls every second), and, being
queued before them, before every later write; one that finds the disk full stays queued
for the next.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from typing import Any, TypeVar

from fuzz.orchestrate.store import DiskFullError, Store

RecordT = TypeVar("RecordT")


class GroupCommit:
    """The runner's way to the store: loads pass through, writes keep their order."""

    def __init__(self, store: Store) -> None:
        """Write to ``store``."""
        self._store = store
        self._queue_lock = threading.Lock()  # the queue, the tickets and the failures
        self._writer = threading.Lock()  # one transaction at a time, in ticket order
        self._queued: list[tuple[int, Any]] = []  # (ticket, record); ticket 0: nobody waits
        self._issued = 0  # the last ticket handed out
        self._written = 0  # every ticket up to this one was written (or failed)
        self._failed: dict[int, Exception] = {}

    def load(self, record_type: type[RecordT], order_by: str = "", **where: Any
             ) -> list[RecordT]:
        """The store's :meth:`~fuzz.orchestrate.store.Store.load`."""
        return self._store.load(record_type, order_by, **where)

    def save(self, *records: Any) -> None:
        """Write ``records`` now, after (and with) every report still queued."""
        with self._writer:
            problem = self._write(records)
        if problem is not None:
            raise problem

    def save_later(self, *records: Any) -> int:
        """Queue copies of ``records`` (as they are now) to be written; the ticket to
        :meth:`wait` on before acting on them."""
        with self._queue_lock:
            self._issued += 1
            self._queued.extend((self._issued, copy.copy(record)) for record in records)
            return self._issued

    def queue(self, *records: Any) -> None:
        """Queue copies of ``records`` (as they are now) to be written with the next
        transaction, before every write that comes after; nobody waits for them."""
        with self._queue_lock:
            self._queued.extend((0, copy.copy(record)) for record in records)

    def flush(self) -> None:
        """Write what is queued, if anything; raise what the write raised."""
        with self._queue_lock:
            if not self._queued:
                return
        with self._writer:
            problem = self._write(())
        if problem is not None:
            raise problem

    def wait(self, ticket: int) -> None:
        """Return once the reports of ``ticket`` are on record (writing them, and every
        other queued, if no one else is); raise what their write raised."""
        with self._writer:
            if ticket > self._written:
                self._write(())
        with self._queue_lock:
            problem = self._failed.pop(ticket, None)
        if problem is not None:
            raise problem

    def _write(self, records: Iterable[Any]) -> Exception | None:
        """Under the writer's lock: the queued reports and ``records`` in one transaction;
        what it raised, kept for the queued reports' waiters too."""
        with self._queue_lock:
            queued, self._queued = self._queued, []
            upto = self._issued
        try:
            latest = _latest([record for _, record in queued] + list(records))
            if latest:
                self._store.save(*latest)
            return None
        except Exception as exc:
            with self._queue_lock:
                self._failed.update((ticket, exc) for ticket, _ in queued if ticket)
                if isinstance(exc, DiskFullError):  # those nobody waits for: with the next write
                    self._queued[:0] = [(0, record) for ticket, record in queued if not ticket]
            return exc
        finally:
            self._written = upto


def _latest(records: list[Any]) -> list[Any]:
    """Each record once, in its latest state (a task reported twice in one group)."""
    by_key: dict[tuple[Any, ...], Any] = {}
    for record in records:
        by_key[(type(record), *(getattr(record, name) for name in record.KEY))] = record
    return list(by_key.values())
