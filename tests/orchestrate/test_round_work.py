"""A scheduling round looks at the nodes that changed, not at every node of the cluster.

A real orchestrator and simulated agents (fuzz/testing/simagents.py) heartbeating fast:
once a first workflow has run, a second one's rounds make node views (what the
placement sees of a node) only for the nodes whose attempts, registration or state
changed since (the nodes the first one's tasks left, those the second one's take), not
for the idle nodes, and a heartbeat that changed nothing makes none. Every round with
queued tasks made a view of every node before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.orchestrate.cluster import nodes as node_directory
from fuzz.orchestrate.store import PostgresTarget
from fuzz.testing.simagents import SimulatedAgents
from tests.orchestrate.test_simagents import TASKS
from tests.support.simcluster import array_fuzzfile, run_to_end, simulated_cluster

NODES = 60  # idle nodes, many more than the tasks' (each node holds every task at once)


def _run(admin: OrchestratorClient, name: str) -> None:
    assert run_to_end(admin, name, array_fuzzfile(TASKS)).state == "SUCCEEDED"


def test_rounds_make_views_of_the_changed_nodes_only(
        tmp_path: Path, pg_target: PostgresTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    view_class = node_directory.NodeView

    def counted_view(**fields: Any) -> Any:
        made.append(fields["name"])
        return view_class(**fields)

    monkeypatch.setattr(node_directory, "NodeView", counted_view)
    agents = SimulatedAgents(NODES, cores=TASKS, memory_bytes=1024**3, run_seconds=0.3,
                             heartbeat_interval=0.2)
    with simulated_cluster(tmp_path, pg_target, agents) as admin:
        _run(admin, "first")  # every node is new to the rounds: each is looked at once
        beats = len(agents.heartbeat_latencies())
        made.clear()
        _run(admin, "second")
        assert len(agents.heartbeat_latencies()) - beats >= NODES  # the nodes beat meanwhile
    # the nodes the first workflow's tasks left and those the second one's took, each at
    # most a few times (a round, the end of its attempts): not the idle nodes
    assert len(set(made)) <= 2 * TASKS, sorted(set(made))
    assert len(made) <= 6 * TASKS, len(made)
