"""Tests for :mod:`fuzz.orchestrate.store`: records survive a reopen, field for field."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from fuzz.orchestrate.records import NodeRecord, TaskRecord, TransferRecord, WorkflowRecord
from fuzz.orchestrate.states import TaskState, WorkflowState
from fuzz.orchestrate.store import SCHEMA_VERSION, PostgresTarget, Store, StoreError


def test_states_are_kept_as_their_text_and_load_as_their_enums(tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    store = Store(path)
    task = TaskRecord("wf.1", "a", "a", 0, 0, state=TaskState.NOT_RUN)
    store.save(task, WorkflowRecord("wf.1", "wf", 1, "alice", "f.yaml", "", "",
                                    state=WorkflowState.CANCELED))
    [loaded] = store.load(TaskRecord)
    assert loaded.state is TaskState.NOT_RUN
    assert store.load(WorkflowRecord)[0].state is WorkflowState.CANCELED
    store.close()
    db = sqlite3.connect(path)
    rows = db.execute("SELECT state, typeof(state) FROM tasks UNION ALL "
                      "SELECT state, typeof(state) FROM workflows").fetchall()
    db.close()
    assert rows == [("NOT_RUN", "text"), ("CANCELED", "text")]


def test_records_round_trip_through_a_reopen(store_target: Path | PostgresTarget) -> None:
    path = store_target
    store = Store(path)
    workflow = WorkflowRecord("wf.1", "wf", 1, "alice", "f.yaml", "version: v1\n", "ab" * 32,
                              created=1.5, cancel_requested=True)
    task = TaskRecord("wf.1", "sweep[3]", "sweep", 3, 7, state="RUNNING", attempt=2,
                      nodes=["n0", "n1"], leases=["l0", "l1"], containers=["c0", "c1"])
    node = NodeRecord("pool.cpu.node[0]", "127.0.0.1:1", b"\x00sealed", 4, 2**30,
                      devices={"nvidia.com/gpu": 2}, labels={"zone": "a"})
    store.save(workflow, task, node)
    store.close()
    again = Store(path)
    assert again.load(WorkflowRecord) == [workflow]
    assert again.load(TaskRecord, workflow_id="wf.1") == [task]
    assert again.load(NodeRecord) == [node]
    task.state = "SUCCEEDED"
    again.save(task)
    assert again.load(TaskRecord, state="SUCCEEDED") == [task]
    again.delete(node)
    assert again.load(NodeRecord) == []


def test_ordering_and_unknown_columns(store_target: Path | PostgresTarget) -> None:
    store = Store(store_target)
    for run in (1, 3, 2):
        store.save(WorkflowRecord(f"w.{run}", "w", run, "o", "f", "", "", created=run))
    assert [r.run for r in store.load(WorkflowRecord, order_by="run DESC", name="w")] == [3, 2, 1]
    for name in ("b", "B", "a", "_"):  # text sorts by byte on both databases
        store.save(WorkflowRecord(f"{name}.1", name, 1, "o", "f", "", ""))
    assert [r.name for r in store.load(WorkflowRecord, order_by="name", run=1)] == [
        "B", "_", "a", "b", "w"]
    with pytest.raises(ValueError, match="unknown column"):
        store.load(WorkflowRecord, nmae="w")


def test_a_database_from_a_newer_fuzz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer fuzz"):
        Store(path)


def test_a_table_of_an_older_fuzz_gains_the_new_columns_with_their_defaults(
        tmp_path: Path) -> None:
    path = tmp_path / "server.db"
    db = sqlite3.connect(path)  # transfers as fuzz wrote them before waiting_for existed
    db.execute('CREATE TABLE transfers ("workflow_id" TEXT, "volume" TEXT, "direction" TEXT, '
               '"seq" INTEGER, "source" TEXT, "destination" TEXT, "secret" TEXT, '
               '"state" TEXT, "bytes_done" INTEGER, "bytes_total" INTEGER, "sha256" TEXT, '
               '"error" TEXT, PRIMARY KEY ("workflow_id", "volume", "direction", "seq"))')
    db.execute("INSERT INTO transfers VALUES ('wf.1','v','ingress',0,'http://x/y','file://y',"
               "'','SUCCEEDED',3,3,'ab','')")
    db.commit()
    db.close()
    store = Store(path)
    [old] = store.load(TransferRecord)
    assert (old.state, old.waiting_for) == ("SUCCEEDED", "")
    new = TransferRecord("wf.2", "v", "egress", 0, "file://y", "s3://b/y",
                         waiting_for="job 'sim' of another workflow mounts volume v")
    store.save(new)
    assert store.load(TransferRecord, workflow_id="wf.2") == [new]


def test_a_postgres_database_from_a_newer_fuzz_is_refused(pg_target: PostgresTarget) -> None:
    Store(pg_target).close()
    with psycopg.connect(pg_target.url, autocommit=True) as db:
        db.execute("UPDATE fuzz_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer fuzz"):
        Store(pg_target)


def test_a_password_in_the_url_is_refused() -> None:
    for url in ("postgres://fuzz:hunter2@db.example/fuzz",
                "postgresql://db.example/fuzz?password=hunter2"):
        with pytest.raises(StoreError, match="password in the store's URL is refused"):
            PostgresTarget(url)


def test_the_password_comes_from_its_file(pg_target: PostgresTarget, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("not-needed-by-trust\n")
    store = Store(PostgresTarget(pg_target.url, password_file=secret))
    store.save(WorkflowRecord("w.1", "w", 1, "o", "f", "", ""))
    assert len(store.load(WorkflowRecord)) == 1
    with pytest.raises(StoreError, match="cannot read the store's password file"):
        Store(PostgresTarget(pg_target.url, password_file=tmp_path / "missing"))


def test_a_lost_postgres_connection_is_opened_again(pg_target: PostgresTarget) -> None:
    store = Store(pg_target)
    store.save(WorkflowRecord("w.1", "w", 1, "o", "f", "", ""))
    with psycopg.connect(pg_target.url, autocommit=True) as admin:  # as a server restart does
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    store.save(WorkflowRecord("w.2", "w", 2, "o", "f", "", ""))
    assert [r.id for r in store.load(WorkflowRecord, order_by="run")] == ["w.1", "w.2"]


def test_two_stores_on_one_postgres_database_see_each_others_writes(
        pg_target: PostgresTarget) -> None:
    first, second = Store(pg_target), Store(pg_target)  # nothing cached in the process
    first.save(NodeRecord("n0", "127.0.0.1:1", b"\x00", 4, 2**40))
    [node] = second.load(NodeRecord)
    assert (node.agent_token, node.memory_bytes) == (b"\x00", 2**40)
    second.delete(node)
    assert first.load(NodeRecord) == []


def test_a_postgres_table_of_an_older_fuzz_gains_the_new_columns(
        pg_target: PostgresTarget) -> None:
    store = Store(pg_target)
    store.save(TransferRecord("wf.1", "v", "ingress", 0, "http://x/y", "file://y",
                              waiting_for="before"))
    store.close()
    with psycopg.connect(pg_target.url, autocommit=True) as db:  # as before waiting_for
        db.execute('ALTER TABLE transfers DROP COLUMN "waiting_for"')
    again = Store(pg_target)
    assert again.migrated == ["added column transfers.waiting_for (default '')"]
    [old] = again.load(TransferRecord)
    assert (old.source, old.waiting_for) == ("http://x/y", "")
    assert Store(pg_target).migrated == []


def test_text_with_nul_is_kept_on_postgres_as_a_replacement_character(
        pg_target: PostgresTarget) -> None:
    store = Store(pg_target)
    task = TaskRecord("wf.1", "a", "a", 0, 0, error="agent said \x00 oops")
    store.save(task)
    assert store.load(TaskRecord)[0].error == "agent said \ufffd oops"


def test_a_refused_batch_on_postgres_raises_its_error_and_logs_nothing_else(
        pg_target: PostgresTarget, caplog: pytest.LogCaptureFixture) -> None:
    """psycopg sends a batch as a pipeline; when the server refuses a row the error is
    raised to the caller, and the pipeline's own "error ignored terminating" warning (which
    a CLI without log handlers printed as a second stderr line) is not logged."""
    store = Store(pg_target)
    with psycopg.connect(pg_target.url, autocommit=True) as db:
        db.execute("ALTER TABLE workflows ADD CONSTRAINT not_b CHECK (name <> 'b')")
    names = ["a", "b", *(f"c{index}" for index in range(200))]
    for attempt in range(10):
        with pytest.raises(psycopg.errors.CheckViolation):
            store.save(*(WorkflowRecord(f"{name}.{attempt}", name, attempt, "o", "f", "", "")
                         for name in names))
    assert not [record.getMessage() for record in caplog.records], caplog.text
    assert store.counts()["workflows"] == 0


def test_a_record_saved_twice_in_one_transaction_keeps_its_last_state(
        store_target: Path | PostgresTarget) -> None:
    store = Store(store_target)
    first = TaskRecord("wf.1", "a", "a", 0, 0, state="STARTING")
    last = TaskRecord("wf.1", "a", "a", 0, 0, state="RUNNING")
    other = TaskRecord("wf.1", "b", "b", 1, 1)
    store.save(first, other, last)
    assert store.load(TaskRecord, order_by="seq") == [last, other]
