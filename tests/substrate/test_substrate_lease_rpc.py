"""Leases over gRPC, on a real agent process serving a declared (larger) node."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from fuzz.api import substrate_pb2, substrate_pb2_grpc
from fuzz.clients.agent import (
    AgentClient,
    AgentInvalidRequestError,
    AgentNotFoundError,
    AgentResourceExhaustedError,
)
from fuzz.substrate.capacity.inventory import read_online_cpus
from tests.substrate.test_substrate_agent import (
    TOKEN,
    Agent,
    _run_failing,
    _spawn,
    _stop,
    _token_file,
    _wait_ready,
)
from tests.support.declared import GiB, declared_node_yaml

NODE_YAML = declared_node_yaml("{site: test, rack: declared}")


def _inventory_file(tmp_path: Path) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(NODE_YAML)
    return path


@contextmanager
def _declared_agent(tmp_path: Path) -> Iterator[Agent]:
    """An agent on ``tmp_path/state`` serving the declared node, stopped on the way out."""
    started = _spawn(
        tmp_path / "state", _token_file(tmp_path / "secrets"),
        "--inventory", str(_inventory_file(tmp_path)), "--label", "rack=r1",
    )
    try:
        _wait_ready(started)
        yield started
    finally:
        _stop(started)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    with _declared_agent(tmp_path) as started:
        yield started


def test_inventory_reports_the_declared_node_and_its_host_cpus(agent: Agent) -> None:
    with AgentClient(agent.endpoint, TOKEN) as client:
        inventory = client.inventory()
    online = read_online_cpus()
    assert inventory.declared
    assert (inventory.cores, inventory.sockets, inventory.memory_bytes) == (32, 2, 64 * GiB)
    assert [list(d.cpu_ids) for d in inventory.numa] == [
        list(range(n * 8, n * 8 + 8)) for n in range(4)
    ]
    assert [c.host_cpu for c in inventory.cpus] == [online[i % len(online)] for i in range(32)]
    assert [(g.index, g.model, g.numa_node) for g in inventory.gpus] == [
        (0, "A100", 0), (1, "A100", 2)
    ]
    assert dict(inventory.labels) == {  # the hardware's, the declared ones, --label wins
        "fuzz.io/cpu.architecture": os.uname().machine, "nvidia.com/gpu.count": "2",
        "nvidia.com/gpu.model": "A100", "site": "test", "rack": "r1"}


def test_leases_over_grpc(agent: Agent) -> None:
    with AgentClient(agent.endpoint, TOKEN) as client:
        lease = client.acquire_lease(
            4, affinity="NUMA", memory_bytes=8 * GiB, devices={"nvidia.com/gpu": 1},
            holder="wf-1/job", ttl_seconds=120,
        )
        assert list(lease.cpus) == [0, 1, 2, 3] and list(lease.numa_nodes) == [0]
        assert {k: list(v.ids) for k, v in lease.devices.items()} == {"nvidia.com/gpu": ["0"]}
        assert set(lease.host_cpus) <= set(read_online_cpus())
        assert lease.affinity == substrate_pb2.AFFINITY_NUMA
        assert lease.memory_bytes == 8 * GiB and lease.holder == "wf-1/job"
        assert lease.expires_at.seconds - lease.created_at.seconds in (119, 120, 121)

        with pytest.raises(AgentResourceExhaustedError) as short:
            client.acquire_lease(30, affinity="NUMA")
        assert str(short.value) == (
            f"agent at {agent.endpoint} cannot grant the lease: not enough free cores: "
            "asked 30, free 28 of 32 (NUMA affinity: at most 8 in one domain)"
        )
        with pytest.raises(AgentInvalidRequestError, match="unknown device kind 'fpga'"):
            client.acquire_lease(1, devices={"fpga": 1})
        with pytest.raises(AgentInvalidRequestError, match="unknown affinity 'RACK'"):
            client.acquire_lease(1, affinity="RACK")

        renewed = client.renew_lease(lease.id, ttl_seconds=300)
        assert renewed.expires_at.seconds > lease.expires_at.seconds
        other = client.acquire_lease(0, memory_bytes=GiB)  # memory only, default TTL
        assert [x.id for x in client.list_leases()] == [lease.id, other.id]

        client.release_lease(lease.id)
        client.release_lease(lease.id)  # idempotent
        with pytest.raises(AgentNotFoundError, match=f"no lease '{lease.id}'"):
            client.renew_lease(lease.id)
        assert [x.id for x in client.list_leases()] == [other.id]


def test_status_codes_on_the_wire(agent: Agent) -> None:
    channel = grpc.insecure_channel(agent.endpoint, options=(("grpc.enable_http_proxy", 0),))
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    with channel:
        stub = substrate_pb2_grpc.SubstrateStub(channel)
        with pytest.raises(grpc.RpcError) as exhausted:
            stub.AcquireLease(substrate_pb2.LeaseRequest(cores=33), metadata=metadata, timeout=5)
        assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as invalid:
            stub.AcquireLease(substrate_pb2.LeaseRequest(), metadata=metadata, timeout=5)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as missing:
            stub.RenewLease(substrate_pb2.RenewLeaseRequest(lease_id="x"), metadata=metadata,
                            timeout=5)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as unauthenticated:
            stub.ListLeases(substrate_pb2.ListLeasesRequest(), timeout=5)
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_leases_survive_an_agent_restart(tmp_path: Path) -> None:
    with _declared_agent(tmp_path) as first, AgentClient(first.endpoint, TOKEN) as client:
        kept = client.acquire_lease(8, affinity="SOCKET", holder="orchestrator", ttl_seconds=600)
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(10) == 0, first.stderr()
    with _declared_agent(tmp_path) as second, AgentClient(second.endpoint, TOKEN) as client:
        leases = client.list_leases()
        assert [(x.id, list(x.cpus), x.holder) for x in leases] == [
            (kept.id, list(kept.cpus), "orchestrator")
        ]
        assert leases[0].expires_at == kept.expires_at
        assert set(client.acquire_lease(24).cpus).isdisjoint(kept.cpus)


def test_a_bad_inventory_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("sockets: 2\ncores_per_numa: many\n")
    code, stderr = _run_failing(
        tmp_path / "state", _token_file(tmp_path / "secrets"), "--inventory", str(path)
    )
    assert code == 1
    assert stderr.strip().splitlines() == [
        f"Error: inventory file {path}: cores_per_numa: must be a positive integer, got 'many'"
    ]
