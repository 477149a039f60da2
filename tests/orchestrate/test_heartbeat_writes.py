"""Heartbeats reach the store together, seldom, not one transaction per beat.

A real orchestrator on PostgreSQL and simulated agents (fuzz/testing/simagents.py) that
beat 20 times a second each. A trigger the test puts on the nodes table counts the
rows written: a beat of a node whose registration did not change is written only once
its last_seen on record is ``SEEN_SAVE_AGE`` old, with the others of the same second;
a changed registration (here: the node's labels) is written at once, and what is left
unwritten is written when the server stops.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from fuzz.orchestrate.cluster.nodes import SEEN_SAVE_AGE
from fuzz.orchestrate.server import ServerSettings
from fuzz.orchestrate.store import PostgresTarget
from fuzz.testing.simagents import SimulatedAgents
from tests.support.orchestratorutil import running_orchestrator, wait_until

NODES, BEAT, SECONDS = 3, 0.05, 3.0
COUNT_WRITES = """
CREATE TABLE node_writes (name text, labels text);
CREATE FUNCTION count_node_write() RETURNS trigger AS $$
BEGIN INSERT INTO node_writes VALUES (NEW.name, NEW.labels::text); RETURN NEW; END
$$ LANGUAGE plpgsql;
CREATE TRIGGER count_node_write AFTER INSERT OR UPDATE ON nodes
    FOR EACH ROW EXECUTE FUNCTION count_node_write();
"""


def _written(url: str) -> int:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT count(*) FROM node_writes").fetchone()
    return int(row[0]) if row else 0


def test_heartbeats_are_written_together_once_a_second(tmp_path: Path,
                                                       pg_target: PostgresTarget) -> None:
    settings = ServerSettings(listen="", data_dir=tmp_path / "server", insecure=True,
                              store=pg_target)
    agents = SimulatedAgents(NODES, cores=2, memory_bytes=1024**3, heartbeat_interval=BEAT)
    with running_orchestrator(tmp_path / "server", settings) as orchestrator, \
            orchestrator.client(orchestrator.admin_token) as admin:
        with agents:
            with psycopg.connect(pg_target.url, autocommit=True) as db:
                db.execute(COUNT_WRITES)
            tokens = {node.name: admin.issue_join_token(node.name).token
                      for node in agents.nodes}
            agents.join(orchestrator.endpoint, tokens, spread=False)
            wait_until("the simulated nodes to register",
                       lambda: len(admin.list_nodes()) == NODES)
            before, beats_before = _written(pg_target.url), len(agents.heartbeat_latencies())
            time.sleep(SECONDS)
            writes = _written(pg_target.url) - before
            beats = len(agents.heartbeat_latencies()) - beats_before
            assert beats >= NODES * SECONDS / BEAT / 8, beats  # they did beat, many times
            # about one write per node per second (a second's beats go in one transaction)
            assert writes <= NODES * (SECONDS + 2), (writes, beats)
            first = agents.nodes[0]
            assert admin.register_node(first.name, agents.endpoint, first.token,
                                       {"rack": "r7"}, join_token=tokens[first.name]) is False
            with psycopg.connect(pg_target.url) as db:  # a change is written at once
                changed = db.execute("SELECT count(*) FROM node_writes WHERE name = %s AND "
                                     "labels LIKE '%%r7%%'", [first.name]).fetchone()
            assert changed == (1,)
            time.sleep(0.5)  # beats less than a second after the last write: not written yet
        seen: dict[str, float] = {}

        def settled() -> bool:  # the beats stopped: a last one may still be on its way
            nonlocal seen
            before, seen = seen, {node.name: node.last_seen for node in admin.list_nodes()}
            time.sleep(0.2)
            return before == seen

        wait_until("the last heartbeats to arrive", settled)
    with psycopg.connect(pg_target.url) as db:  # the server stopped: every beat is written
        stored = dict(db.execute("SELECT name, last_seen FROM nodes").fetchall())
    assert stored == seen


def test_a_heartbeat_that_changed_nothing_writes_nothing(tmp_path: Path,
                                                         pg_target: PostgresTarget) -> None:
    """Within SEEN_SAVE_AGE of its registration a node's beats write no row (one each
    second was written before: 400 rows a second at 2,000 nodes)."""
    settings = ServerSettings(listen="", data_dir=tmp_path / "server", insecure=True,
                              store=pg_target)
    agents = SimulatedAgents(NODES, cores=2, memory_bytes=1024**3, heartbeat_interval=BEAT)
    with running_orchestrator(tmp_path / "server", settings) as orchestrator, \
            orchestrator.client(orchestrator.admin_token) as admin, agents:
        with psycopg.connect(pg_target.url, autocommit=True) as db:
            db.execute(COUNT_WRITES)
        tokens = {node.name: admin.issue_join_token(node.name).token for node in agents.nodes}
        began = time.monotonic()
        agents.join(orchestrator.endpoint, tokens, spread=False)
        wait_until("the simulated nodes to register", lambda: len(admin.list_nodes()) == NODES)
        registered, beats = _written(pg_target.url), len(agents.heartbeat_latencies())
        time.sleep(SECONDS)
        assert time.monotonic() - began < SEEN_SAVE_AGE  # (the machine was not that slow)
        assert len(agents.heartbeat_latencies()) - beats >= NODES * SECONDS / BEAT / 8
        assert registered == NODES  # each registration, once
        assert _written(pg_target.url) == registered  # and no beat since
