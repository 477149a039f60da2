"""A node whose agent stops answering: avoided at once, lost after the grace, back on answer.

A real :class:`~fuzz.orchestrate.store.Store` and :class:`NodeDirectory`, and real gRPC
calls to an address on 127.0.0.1 where nothing listens (what a killed agent leaves).
The end-to-end behaviour, with real agents killed and restarted, is in
tests/e2e/test_agent_restart_e2e.py.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.clients.agent import AgentClient, AgentUnreachableError
from fuzz.crypto.envelope import Sealer
from fuzz.orchestrate.cluster.nodes import HEARTBEAT_TIMEOUT, NodeDirectory, NodeUse
from fuzz.orchestrate.messages import node_message
from fuzz.orchestrate.records import NodeRecord
from fuzz.orchestrate.store import PostgresTarget, Store
from fuzz.orchestrate.workflows.agentcalls import AgentCalls, CallsStoppedError, NodeLostError
from fuzz.testing.oci import free_port

GRACE = 0.5


@pytest.fixture
def nodes(store_target: Path | PostgresTarget) -> Iterator[NodeDirectory]:
    """A directory holding node ``n0``, whose agent's endpoint answers nothing."""
    store = Store(store_target)
    sealer = Sealer.from_keys(os.urandom(32))
    store.save(NodeRecord(name="n0", endpoint=f"127.0.0.1:{free_port()}",
                          agent_token=sealer.seal(b"token"), cores=2, memory_bytes=2**30,
                          registered=time.time(), last_seen=time.time()))
    directory = NodeDirectory(store, sealer, node_grace=GRACE)
    try:
        yield directory
    finally:
        directory.close()
        store.close()


def _schedulable(nodes: NodeDirectory) -> bool:
    view = nodes.view("n0", NodeUse())
    assert view is not None
    return view.schedulable


def _state(nodes: NodeDirectory) -> str:
    (record,) = nodes.records()
    return str(node_message(record, NodeUse(), nodes).state)


def test_a_silent_node_is_avoided_then_lost_after_the_grace_then_back(
        nodes: NodeDirectory) -> None:
    assert _schedulable(nodes) and _state(nodes) == "READY"
    assert nodes.silent("n0", "no answer") is None  # it may be restarting
    assert not _schedulable(nodes) and not nodes.lost("n0")
    time.sleep(GRACE)
    reason = nodes.silent("n0", "no answer")
    assert reason is not None and reason.startswith("node n0 is lost: its agent has not "
                                                    "answered for")
    assert nodes.lost("n0") and _state(nodes) == "LOST" and not _schedulable(nodes)
    assert nodes.silent("n0", "still no answer") == reason  # declared once
    nodes.answered("n0")
    assert not nodes.lost("n0") and _schedulable(nodes) and _state(nodes) == "READY"


def test_a_node_that_refused_a_lease_is_skipped_until_rechecked(nodes: NodeDirectory) -> None:
    nodes.refused("n0")
    assert nodes.refusing() == ["n0"] and not _schedulable(nodes)
    nodes.recheck("n0")  # its agent cannot say: the next start will find out
    assert nodes.refusing() == [] and _schedulable(nodes)


def test_calls_ride_out_a_silent_agent_until_its_node_is_lost(nodes: NodeDirectory) -> None:
    calls = AgentCalls(nodes)
    tries: list[float] = []

    def inventory(client: AgentClient) -> object:
        tries.append(time.monotonic())
        return client.inventory(timeout=1.0)

    with pytest.raises(NodeLostError, match=r"^node n0 is lost: .* is not reachable"):
        calls.ride("n0", inventory)
    assert len(tries) >= 2  # retried, with a pause between tries
    assert tries[-1] - tries[0] >= GRACE - 0.05
    assert nodes.lost("n0")


def test_a_call_on_a_closed_agent_client_reads_as_an_unreachable_agent() -> None:
    client = AgentClient(f"127.0.0.1:{free_port()}", "token")
    client.close()  # as the node directory does when the agent registers a new endpoint
    with pytest.raises(AgentUnreachableError, match="was closed"):
        client.list_leases()


def test_a_stopping_orchestrator_stops_waiting_for_a_silent_agent(tmp_path: Path) -> None:
    store = Store(tmp_path / "server.db")
    sealer = Sealer.from_keys(os.urandom(32))
    store.save(NodeRecord(name="n0", endpoint=f"127.0.0.1:{free_port()}",
                          agent_token=sealer.seal(b"token"), cores=2, memory_bytes=2**30))
    nodes = NodeDirectory(store, sealer, node_grace=3600.0)  # it would wait for an hour
    calls = AgentCalls(nodes)
    tried = threading.Event()

    def inventory(client: AgentClient) -> object:
        tried.set()
        return client.inventory(timeout=1.0)

    threading.Timer(0.0, lambda: tried.wait(10) and calls.stop()).start()
    began = time.monotonic()
    try:
        with pytest.raises(CallsStoppedError, match="the orchestrator is stopping"):
            calls.ride("n0", inventory)
        assert time.monotonic() - began < 5
        assert not nodes.lost("n0")  # stopping says nothing about the node
    finally:
        nodes.close()
        store.close()


def test_the_scheduler_is_told_of_every_change_of_a_node_and_of_nothing_else(
        store_target: Path | PostgresTarget) -> None:
    """The scheduler's kept rooms look again only at the nodes :meth:`take_changed` names:
    each change of a node's state, its silence past the heartbeat timeout and its return
    are named once; a heartbeat that changed nothing is not."""
    store = Store(store_target)
    sealer = Sealer.from_keys(os.urandom(32))
    endpoint = f"127.0.0.1:{free_port()}"
    now = [time.time()]
    store.save(NodeRecord(name="n0", endpoint=endpoint, agent_token=sealer.seal(b"token"),
                          cores=2, memory_bytes=2**30, registered=now[0], last_seen=now[0]))
    nodes = NodeDirectory(store, sealer, clock=lambda: now[0], node_grace=GRACE)
    try:
        assert nodes.take_changed() == {"n0"}  # new to the scheduler
        assert nodes.take_changed() == set()
        nodes.register("n0", endpoint, "token", {})  # a heartbeat that changed nothing
        assert nodes.take_changed() == set()
        for change in (lambda: nodes.silent("n0", "no answer"), lambda: nodes.answered("n0"),
                       lambda: nodes.refused("n0"), lambda: nodes.recheck("n0"),
                       lambda: nodes.cordon("n0"), lambda: nodes.uncordon("n0")):
            schedulable = _schedulable(nodes)
            change()
            assert nodes.take_changed() == {"n0"} and _schedulable(nodes) != schedulable
        now[0] += HEARTBEAT_TIMEOUT + 1  # not heard from: not reachable
        assert nodes.take_changed() == {"n0"} and not _schedulable(nodes)
        assert nodes.take_changed() == set()
        nodes.register("n0", endpoint, "token", {})  # back
        assert nodes.take_changed() == {"n0"} and _schedulable(nodes)
        nodes.register("n0", endpoint, "token", {"rack": "r1"})  # new labels
        assert nodes.take_changed() == {"n0"}
        nodes.forget("n0")
        assert nodes.take_changed() == {"n0"} and nodes.view("n0", NodeUse()) is None
    finally:
        nodes.close()
        store.close()
