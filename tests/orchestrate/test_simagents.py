"""A real orchestrator on PostgreSQL runs a workflow onto simulated nodes (fuzz/testing/simagents).

The simulated agents are what bench/control_plane.py measures the control plane with:
this keeps them honest. They join as real agents do (join token, heartbeats), the
orchestrator reads their inventory, and the tasks go through its scheduler, its
dispatch and its agent client to them and back: a task array of 12 one-core tasks on
3 nodes of 2 cores each, so the nodes must be filled, emptied and filled again.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fuzz.orchestrate.store import PostgresTarget
from fuzz.testing.simagents import SimulatedAgents
from tests.support.simcluster import array_fuzzfile, run_to_end, simulated_cluster

NODES, CORES, TASKS = 3, 2, 12


def test_a_workflow_runs_onto_simulated_nodes(tmp_path: Path, pg_target: PostgresTarget
                                              ) -> None:
    agents = SimulatedAgents(NODES, cores=CORES, memory_bytes=1024**3, run_seconds=0.2,
                             heartbeat_interval=0.5)
    with simulated_cluster(tmp_path, pg_target, agents) as admin:
        workflow = run_to_end(admin, "simulated", array_fuzzfile(TASKS), timeout=60)
        nodes = {node.name: node for node in admin.list_nodes()}
        left = agents.running()  # every container is removed after its end
    assert workflow.state == "SUCCEEDED", workflow
    assert {task.state for task in workflow.tasks} == {"SUCCEEDED"}
    assert len(workflow.tasks) == TASKS
    starts = agents.starts()
    assert len(starts) == TASKS, starts  # each task started once, on a simulated node
    per_node = Counter(start.node for start in starts)
    names = {node.name for node in agents.nodes}
    assert set(per_node) <= names and len(per_node) > 1, per_node  # spread out
    assert all(node.state == "READY" and node.cores == CORES for node in nodes.values()), nodes
    assert left == 0
    assert len(agents.heartbeat_latencies()) >= NODES and not agents.heartbeat_errors()
