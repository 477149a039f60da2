"""Group commit (fuzz/orchestrate/store_group.py): reports queued while a write is under
way go together in the next transaction, a write made at once keeps the order of the
states, and a failed write fails every report it carried; a report nobody waits for goes
with the next write, and stays queued while the disk is full.

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
from fuzz.orchestrate.store import DiskFullError, PostgresTarget, Store
from fuzz.orchestrate.store_group import GroupCommit
from tests.orchestrate.test_scheduling_writes import RECORD_WRITES
from tests.support.disks import fill_up, tmpfs
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


def test_reports_nobody_waits_for_go_with_the_next_write(pg_target: PostgresTarget) -> None:
    """A report queued unwaited is written with the next transaction, whoever makes it:
    a waiter's, a write made at once, or a flush; and before what is queued after it."""
    store = Store(pg_target)
    group = GroupCommit(store)
    with psycopg.connect(pg_target.url, autocommit=True) as db:
        db.execute(RECORD_WRITES)
    try:
        group.queue(_task(0), _task(1))
        assert store.load(TaskRecord) == []  # nobody wrote yet
        group.wait(group.save_later(_task(2)))
        group.queue(_task(3, TaskState.SUCCEEDED))
        group.save(_task(3, TaskState.FAILED))  # the later state, written last
        group.queue(_task(4))
        group.flush()
        group.flush()  # nothing queued: no transaction
        with psycopg.connect(pg_target.url) as db:
            writes = db.execute("SELECT key, state, xid FROM task_writes ORDER BY at").fetchall()
        xids = [xid for _, _, xid in writes]
        assert [key for key, _, _ in writes] == [f"work[{n}]" for n in (0, 1, 2, 3, 4)], writes
        assert xids[0] == xids[1] == xids[2] != xids[3] != xids[4], writes
        assert {t.key: t.state for t in store.load(TaskRecord)}["work[3]"] == TaskState.FAILED
    finally:
        store.close()


def test_a_report_nobody_waits_for_stays_queued_while_the_disk_is_full(tmp_path: Path) -> None:
    """Nobody would hear that its write failed: it goes again with the next write, once
    there is room; a waited report of the same failed write fails its waiter."""
    with tmpfs(tmp_path / "disk", "8m") as disk:
        store = Store(disk / "server.db")
        group = GroupCommit(store)
        try:
            hog = fill_up(disk)
            big = [TaskRecord(workflow_id="w1", key=f"big[{n}]", job="big", index=n, seq=n,
                              error="x" * 65536) for n in range(8)]
            group.queue(*big)
            ticket = group.save_later(_task(0))
            with pytest.raises(DiskFullError):
                group.wait(ticket)
            with pytest.raises(DiskFullError):
                group.flush()
            hog.unlink()
            group.flush()
            assert sorted(t.key for t in store.load(TaskRecord)) == \
                sorted(t.key for t in big)  # the waited report failed, and was told so
        finally:
            store.close()
