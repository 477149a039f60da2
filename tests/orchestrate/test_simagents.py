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

from fuzz.orchestrate.server import ServerSettings
from fuzz.orchestrate.store import PostgresTarget
from fuzz.testing.simagents import SimulatedAgents
from tests.support.orchestratorutil import running_orchestrator, wait_until

NODES, CORES, TASKS = 3, 2, 12
FUZZFILE = f"""\
version: v1
jobs:
  work:
    image: {{uri: "docker://127.0.0.1:9/simulated:1"}}
    command: [/bin/true]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 16MiB}}}}
    task-array: {{start: 1, end: {TASKS}}}
"""


def test_a_workflow_runs_onto_simulated_nodes(tmp_path: Path, pg_target: PostgresTarget
                                              ) -> None:
    settings = ServerSettings(listen="", data_dir=tmp_path / "server", insecure=True,
                              store=pg_target)
    agents = SimulatedAgents(NODES, cores=CORES, memory_bytes=1024**3, run_seconds=0.2,
                             heartbeat_interval=0.5)
    with running_orchestrator(tmp_path / "server", settings) as orchestrator, agents, \
            orchestrator.client(orchestrator.admin_token) as admin:
        tokens = {node.name: admin.issue_join_token(node.name).token
                  for node in agents.nodes}
        agents.join(orchestrator.endpoint, tokens, spread=False)
        wait_until("the simulated nodes to register",
                   lambda: {node.name for node in admin.list_nodes()} == set(tokens))
        admin.start_workflow("simulated", FUZZFILE, "Fuzzfile")
        wait_until("the workflow to finish",
                   lambda: admin.get_workflow("simulated").state not in
                   ("PENDING", "RUNNING"), timeout=60)
        workflow = admin.get_workflow("simulated")
        nodes = {node.name: node for node in admin.list_nodes()}
        left = agents.running()  # every container is removed after its end
    assert workflow.state == "SUCCEEDED", workflow
    assert {task.state for task in workflow.tasks} == {"SUCCEEDED"}
    assert len(workflow.tasks) == TASKS
    starts = agents.starts()
    assert len(starts) == TASKS, starts  # each task started once, on a simulated node
    per_node = Counter(start.node for start in starts)
    assert set(per_node) <= set(tokens) and len(per_node) > 1, per_node  # spread out
    assert all(node.state == "READY" and node.cores == CORES for node in nodes.values()), nodes
    assert left == 0
    assert len(agents.heartbeat_latencies()) >= NODES and not agents.heartbeat_errors()
