"""The search for orphans (:meth:`AgentCalls.find_orphans`) asks for the attempts in
flight again only when a node shows a container or lease that none owned when last
asked: it was asked after every node, walking every attempt each time (a sixth of the
orchestrator's time at 2,000 nodes), and it still finds what no attempt owns.

A real store and :class:`NodeDirectory`, simulated agents (fuzz/testing/simagents.py)
answering real gRPC calls on 127.0.0.1.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fuzz.crypto.envelope import Sealer
from fuzz.orchestrate.cluster.nodes import NodeDirectory
from fuzz.orchestrate.records import NodeRecord
from fuzz.orchestrate.store import PostgresTarget, Store
from fuzz.orchestrate.workflows.agentcalls import AgentCalls
from fuzz.resources import ResourceRequest
from fuzz.testing.simagents import SimulatedAgents

NODES = 12
PREFIX = "fz-test-"


def test_the_attempts_are_asked_for_again_only_for_a_suspect(
        store_target: Path | PostgresTarget) -> None:
    store = Store(store_target)
    sealer = Sealer.from_keys(os.urandom(32))
    with SimulatedAgents(NODES, cores=4, memory_bytes=2**30, run_seconds=600.0) as agents:
        for node in agents.nodes:
            store.save(NodeRecord(name=node.name, endpoint=agents.endpoint,
                                  agent_token=sealer.seal(node.token.encode()), cores=4,
                                  memory_bytes=2**30, registered=time.time(),
                                  last_seen=time.time()))
        directory = NodeDirectory(store, sealer)
        try:
            for node in agents.nodes:  # one live attempt's container on every node
                directory.client(node.name).start_container(
                    f"{PREFIX}{node.name}", "docker://127.0.0.1:9/simulated:1",
                    lease=ResourceRequest(cores=1, memory_bytes=2**20), lease_ttl=600.0)
            live = {f"{PREFIX}{node.name}" for node in agents.nodes}
            asked: list[int] = []

            def attempts() -> set[str]:
                asked.append(1)
                return set(live)

            calls = AgentCalls(directory)
            calls.find_orphans(PREFIX, attempts)
            assert calls.leftovers() == {}
            assert len(asked) == 1, len(asked)  # once, not once per node
            live.discard(f"{PREFIX}{agents.nodes[3].name}")  # its attempt is over
            asked.clear()
            calls.find_orphans(PREFIX, attempts)
            orphan = agents.nodes[3]
            assert list(calls.leftovers()) == [orphan.name]
            assert f"{PREFIX}{orphan.name}" in calls.leftovers()[orphan.name]
            assert len(asked) == 2, len(asked)  # at first, and again for the suspect
        finally:
            directory.close()
            store.close()
