"""A scheduling round writes the attempts it makes in one transaction, before any starts.

A real orchestrator on PostgreSQL and simulated agents (fuzz/testing/simagents.py) with
room for every task at once. A trigger the test puts on the tasks table records the
transaction of every row written: the 12 tasks of one task array, all placed in the
first round, go to STARTING in one transaction (they were one transaction each).
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from fuzz.orchestrate.server import ServerSettings
from fuzz.orchestrate.store import PostgresTarget
from fuzz.testing.simagents import SimulatedAgents
from tests.orchestrate.test_simagents import FUZZFILE, TASKS
from tests.support.orchestratorutil import running_orchestrator, wait_until

RECORD_WRITES = """
CREATE TABLE task_writes (key text, state text, xid bigint, at timestamptz);
CREATE FUNCTION record_task_write() RETURNS trigger AS $$
BEGIN INSERT INTO task_writes VALUES (NEW.key, NEW.state, txid_current(), clock_timestamp());
RETURN NEW; END
$$ LANGUAGE plpgsql;
CREATE TRIGGER record_task_write AFTER INSERT OR UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION record_task_write();
"""


def test_one_round_starts_its_tasks_in_one_transaction(tmp_path: Path,
                                                       pg_target: PostgresTarget) -> None:
    settings = ServerSettings(listen="", data_dir=tmp_path / "server", insecure=True,
                              store=pg_target)
    agents = SimulatedAgents(3, cores=TASKS, memory_bytes=1024**3, run_seconds=0.5,
                             heartbeat_interval=0.5)
    with running_orchestrator(tmp_path / "server", settings) as orchestrator, agents, \
            orchestrator.client(orchestrator.admin_token) as admin:
        with psycopg.connect(pg_target.url, autocommit=True) as db:
            db.execute(RECORD_WRITES)
        tokens = {node.name: admin.issue_join_token(node.name).token for node in agents.nodes}
        agents.join(orchestrator.endpoint, tokens, spread=False)
        wait_until("the simulated nodes to register", lambda: len(admin.list_nodes()) == 3)
        admin.start_workflow("simulated", FUZZFILE, "Fuzzfile")
        wait_until("the workflow to finish",
                   lambda: admin.get_workflow("simulated").state == "SUCCEEDED", timeout=60)
        with psycopg.connect(pg_target.url) as db:
            starting = db.execute("SELECT key, xid, at FROM task_writes WHERE state = 'STARTING' "
                                  "ORDER BY at").fetchall()
    assert len(starting) == TASKS, starting  # one attempt each
    assert len({xid for _, xid, _ in starting}) == 1, starting  # all in one round's transaction
    assert len(agents.starts()) == TASKS


REPORTED = 40  # tasks started in one round that end together


def test_attempts_reports_are_written_together(tmp_path: Path,
                                               pg_target: PostgresTarget) -> None:
    """The running, ended and finished reports of attempts that run and end at the same
    time share transactions (group commit): there were three transactions per attempt."""
    settings = ServerSettings(listen="", data_dir=tmp_path / "server", insecure=True,
                              store=pg_target)
    agents = SimulatedAgents(4, cores=REPORTED // 4, memory_bytes=1024**3, run_seconds=1.0,
                             heartbeat_interval=0.5)
    fuzzfile = FUZZFILE.replace(f"end: {TASKS}", f"end: {REPORTED}")
    with running_orchestrator(tmp_path / "server", settings) as orchestrator, agents, \
            orchestrator.client(orchestrator.admin_token) as admin:
        with psycopg.connect(pg_target.url, autocommit=True) as db:
            db.execute(RECORD_WRITES)
        tokens = {node.name: admin.issue_join_token(node.name).token for node in agents.nodes}
        agents.join(orchestrator.endpoint, tokens, spread=False)
        wait_until("the simulated nodes to register", lambda: len(admin.list_nodes()) == 4)
        admin.start_workflow("simulated", fuzzfile, "Fuzzfile")
        wait_until("the workflow to finish",
                   lambda: admin.get_workflow("simulated").state == "SUCCEEDED", timeout=90)
        with psycopg.connect(pg_target.url) as db:
            reports = db.execute("SELECT key, state, xid FROM task_writes "
                                 "WHERE state IN ('RUNNING', 'SUCCEEDED')").fetchall()
    assert len(agents.starts()) == REPORTED
    by_state = {state: [row for row in reports if row[1] == state]
                for state in ("RUNNING", "SUCCEEDED")}
    # RUNNING: the running and the ended report; SUCCEEDED: the finished one
    assert len(by_state["RUNNING"]) == 2 * REPORTED and len(by_state["SUCCEEDED"]) == REPORTED
    transactions = len({xid for _, _, xid in reports})
    assert transactions <= len(reports) // 2, (transactions, len(reports))
