"""Group commit (fuzz/orchestrate/store_group.py): reports queued while a write is under
way go together in the next transaction, a write made at once keeps the order of the
states, and a failed write fails every report it carried.

On real stores: PostgreSQL (a lock another connection holds on the tasks table keeps
the first write waiting while the others queue) and, where the database's own locks
play no part, SQLite too.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from fuzz.orchestrate.leadership import FencedError
from fuzz.orchestrate.records import TaskRecord
from fuzz.orchestrate.states import TaskState
from fuzz.orchestrate.store import PostgresTarget, Store
from fuzz.orchestrate.store_group import GroupCommit
from tests.orchestrate.test_scheduling_writes import RECORD_WRITES
from tests.support.orchestratorutil import wait_until

QUEUED_MEANWHILE = 20


def _task(index: int, state: TaskState = TaskState.RUNNING) -> TaskRecord:
    return TaskRecord(workflow_id="w1", key=f"work[{index}]", job="work", index=index,
                      seq=index, state=state)


def _waiting_on_lock(db: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = db.execute("SELECT count(*) FROM pg_stat_activity "
                     "WHERE wait_event_type = 'Lock'").fetchone()
    return row is not None and int(str(row[0])) > 0


def test_reports_queued_during_a_write_go_in_the_next_one(pg_target: PostgresTarget) -> None:
    store = Store(pg_target)
    group = GroupCommit(store)
    with psycopg.connect(pg_target.url, autocommit=True) as db:
        db.execute(RECORD_WRITES)
    try:
        with psycopg.connect(pg_target.url) as holder, \
                psycopg.connect(pg_target.url, autocommit=True) as watcher:
            holder.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            first = threading.Thread(target=group.wait, args=(group.save_later(_task(0)),))
            first.start()
            wait_until("the first write to wait on the lock", lambda: _waiting_on_lock(watcher))
            tickets = [group.save_later(_task(n)) for n in range(1, QUEUED_MEANWHILE + 1)]
            waiters = [threading.Thread(target=group.wait, args=(ticket,)) for ticket in tickets]
            for waiter in waiters:
                waiter.start()
            time.sleep(0.2)  # give the waiters the chance to write alone, which they must not
            holder.rollback()  # the lock goes: the first write, then the rest
            for thread in (first, *waiters):
                thread.join(timeout=30)
                assert not thread.is_alive()
        with psycopg.connect(pg_target.url) as db:
            writes = db.execute("SELECT key, xid FROM task_writes").fetchall()
        assert len(writes) == QUEUED_MEANWHILE + 1, writes
        assert len({xid for _, xid in writes}) == 2, writes  # the first, then all the others
    finally:
        store.close()


def test_a_write_made_at_once_comes_after_what_is_queued(
        store_target: Path | PostgresTarget) -> None:
    store = Store(store_target)
    group = GroupCommit(store)
    try:
        task = _task(1, TaskState.QUEUED)
        ticket = group.save_later(task)  # a copy: the state of this moment
        task.state = TaskState.STARTING
        group.save(task)  # takes the queued report with it, the later state last
        group.wait(ticket)  # already on record: returns at once
        assert [t.state for t in store.load(TaskRecord)] == [TaskState.STARTING]
    finally:
        store.close()


def test_a_failed_write_fails_every_report_it_carried(
        store_target: Path | PostgresTarget) -> None:
    store = Store(store_target)
    group = GroupCommit(store)
    fenced: list[FencedError] = []
    try:
        store.fence(1, fenced.append, leading=lambda: False)
        tickets = [group.save_later(_task(n)) for n in range(3)]
        for ticket in tickets:
            with pytest.raises(FencedError):
                group.wait(ticket)
        assert len(fenced) == 1  # one transaction tried, for the three
        with pytest.raises(FencedError):
            group.save(_task(9))
    finally:
        store.close()
    reopened = Store(store_target)
    try:
        assert reopened.load(TaskRecord) == []
    finally:
        reopened.close()
