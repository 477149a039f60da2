"""A scheduling round writes the attempts it makes in one transaction, before any starts.

A real orchestrator on PostgreSQL and simulated agents (fuzz/testing/simagents.py) with
room for every task at once. A trigger the test puts on the tasks table records the
transaction of every row written: the 12 tasks of one task array, all placed in the
first round, go to STARTING in one transaction (they were one transaction each).
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from fuzz.orchestrate.store import PostgresTarget
from fuzz.orchestrate.workflows import base
from fuzz.orchestrate.workflows.tallying import TallyingCommit
from fuzz.testing.simagents import SimulatedAgents
from tests.orchestrate.test_simagents import TASKS
from tests.support.simcluster import array_fuzzfile, run_to_end, simulated_cluster

RECORD_WRITES = """
CREATE TABLE task_writes (key text, state text, xid bigint, at timestamptz);
CREATE FUNCTION record_task_write() RETURNS trigger AS $$
BEGIN INSERT INTO task_writes VALUES (NEW.key, NEW.state, txid_current(), clock_timestamp());
RETURN NEW; END
$$ LANGUAGE plpgsql;
CREATE TRIGGER record_task_write AFTER INSERT OR UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION record_task_write();
"""


def _run_recording_writes(tmp_path: Path, pg_target: PostgresTarget, nodes: int, cores: int,
                          tasks: int, run_seconds: float, query: str, arrays: int = 1
                          ) -> tuple[list[tuple], int]:
    """Run ``arrays`` task arrays of ``tasks`` in all on ``nodes`` simulated nodes of
    ``cores`` cores each, with every write to the tasks table recorded; ``query``'s rows
    of those records and how many starts the agents saw."""
    agents = SimulatedAgents(nodes, cores=cores, memory_bytes=1024**3,
                             run_seconds=run_seconds, heartbeat_interval=0.5)
    array = array_fuzzfile(tasks // arrays).split("jobs:\n")[1]
    fuzzfile = "version: v1\njobs:\n" + "".join(
        array.replace("  work:", f"  work{n}:") for n in range(arrays))
    with simulated_cluster(tmp_path, pg_target, agents) as admin:
        with psycopg.connect(pg_target.url, autocommit=True) as db:
            db.execute(RECORD_WRITES)
        assert run_to_end(admin, "simulated", fuzzfile).state == "SUCCEEDED"
        with psycopg.connect(pg_target.url) as db:
            rows = db.execute(query).fetchall()
    return rows, len(agents.starts())


def test_one_round_starts_its_tasks_in_one_transaction(tmp_path: Path,
                                                       pg_target: PostgresTarget) -> None:
    starting, starts = _run_recording_writes(
        tmp_path, pg_target, 3, TASKS, TASKS, 0.5,
        "SELECT key, xid, at FROM task_writes WHERE state = 'STARTING' ORDER BY at")
    assert len(starting) == TASKS, starting  # one attempt each
    assert len({xid for _, xid, _ in starting}) == 1, starting  # all in one round's transaction
    assert starts == TASKS


def test_rounds_grow_while_everything_they_look_at_is_placed(tmp_path: Path,
                                                            pg_target: PostgresTarget) -> None:
    """A deep queue on an idle cluster is placed in a few growing rounds (each round's
    work on the nodes is then shared by more tasks): 400 tasks were 7 rounds of 64."""
    starting, starts = _run_recording_writes(
        tmp_path, pg_target, 8, 64, 400, 3.0,
        "SELECT key, xid, at FROM task_writes WHERE state = 'STARTING' ORDER BY at", arrays=4)
    assert len(starting) == 400 and starts == 400
    rounds = len({xid for _, xid, _ in starting})
    assert rounds <= 4, rounds  # 64, 128, then the 208 left: three when all are queued at once


REPORTED = 40  # tasks started in one round that end together


def test_attempts_reports_are_written_together(tmp_path: Path,
                                               pg_target: PostgresTarget) -> None:
    """The running, ended and finished reports of attempts that run and end at the same
    time share transactions (group commit): there were three transactions per attempt."""
    reports, starts = _run_recording_writes(
        tmp_path, pg_target, 4, REPORTED // 4, REPORTED, 1.0,
        "SELECT key, state, xid FROM task_writes WHERE state IN ('RUNNING', 'SUCCEEDED')")
    assert starts == REPORTED
    by_state = {state: [row for row in reports if row[1] == state]
                for state in ("RUNNING", "SUCCEEDED")}
    # RUNNING: the running and the ended report (one row when they meet in one group);
    # SUCCEEDED: the finished one
    assert REPORTED <= len(by_state["RUNNING"]) <= 2 * REPORTED
    assert len(by_state["SUCCEEDED"]) == REPORTED
    assert {key for key, _, _ in reports} == {key for key, _, _ in by_state["SUCCEEDED"]}
    # How many share one depends on how the reports meet (a quiet machine writes each
    # before the next comes: 55 to 80 transactions for 120 reports were seen); without
    # group commit it was exactly one each. The grouping itself is pinned down in
    # tests/orchestrate/test_group_commit.py.
    transactions = len({xid for _, _, xid in reports})
    assert transactions < len(reports), (transactions, len(reports))


def test_an_attempts_worker_waits_for_the_store_twice(
        tmp_path: Path, pg_target: PostgresTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    """Of an attempt's three reports (running, ended, finished) its worker waits for the
    first two: a restart must find it RUNNING once a watcher saw it so, and its end
    before its containers go. The finish goes with the next write: the end on record,
    a restart would conclude it the same. It waited for all three."""
    waits: Counter[str] = Counter()

    class CountingCommit(TallyingCommit):
        def wait(self, ticket: int) -> None:
            waits[threading.current_thread().name.partition("_")[0]] += 1
            super().wait(ticket)

    monkeypatch.setattr(base, "TallyingCommit", CountingCommit)
    rows, starts = _run_recording_writes(
        tmp_path, pg_target, 4, REPORTED // 4, REPORTED, 0.5,
        "SELECT key FROM task_writes WHERE state = 'SUCCEEDED'")
    assert starts == REPORTED
    assert len(rows) == REPORTED  # every finished report on record all the same
    assert waits == Counter(task=2 * REPORTED), waits
