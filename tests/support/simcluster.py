"""A real orchestrator on PostgreSQL with simulated agents joined (fuzz/testing/simagents.py).

What the tests of the control plane's dispatch share: the agents join with join tokens
as real ones do, and the block runs once every one of them has registered.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fuzz.api import orchestrator_pb2 as pb
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.orchestrate.server import ServerSettings
from fuzz.orchestrate.store import PostgresTarget
from fuzz.testing.simagents import SimulatedAgents
from tests.support.orchestratorutil import running_orchestrator, wait_until


def array_fuzzfile(tasks: int) -> str:
    """A Fuzzfile of one task array of ``tasks`` one-core tasks for simulated nodes."""
    return f"""\
version: v1
jobs:
  work:
    image: {{uri: "docker://127.0.0.1:9/simulated:1"}}
    command: [/bin/true]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 16MiB}}}}
    task-array: {{start: 1, end: {tasks}}}
"""


@contextmanager
def simulated_cluster(tmp_path: Path, pg_target: PostgresTarget, agents: SimulatedAgents
                      ) -> Iterator[OrchestratorClient]:
    """An orchestrator under ``tmp_path`` with ``agents`` registered; its admin's client."""
    settings = ServerSettings(listen="", data_dir=tmp_path / "server", insecure=True,
                              store=pg_target)
    with running_orchestrator(tmp_path / "server", settings) as orchestrator, agents, \
            orchestrator.client(orchestrator.admin_token) as admin:
        tokens = {node.name: admin.issue_join_token(node.name).token
                  for node in agents.nodes}
        agents.join(orchestrator.endpoint, tokens, spread=False)
        wait_until("the simulated nodes to register",
                   lambda: {node.name for node in admin.list_nodes()} == set(tokens))
        yield admin


def run_to_end(admin: OrchestratorClient, name: str, fuzzfile: str,
               timeout: float = 90) -> pb.Workflow:
    """Start workflow ``name`` and wait for it to end; the workflow as it ended."""
    admin.start_workflow(name, fuzzfile, "Fuzzfile")
    wait_until(f"workflow {name} to finish",
               lambda: admin.get_workflow(name).state not in ("PENDING", "RUNNING"),
               timeout=timeout)
    return admin.get_workflow(name)
