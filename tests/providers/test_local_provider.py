"""The built-in ``local`` provider through its real hook functions: nodes are agent processes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydantic
import pytest

from fuzz.clients.agent import AgentClient
from fuzz.default_plugins import local_provider as local
from fuzz.errors import PluginError
from fuzz.lifecycle.gateway import ProviderGateway
from fuzz.plugin.loader import load_plugins
from fuzz.plugin.provider import (
    TAG_ADDRESS,
    TAG_CLIENT_TOKEN,
    TAG_CLUSTER,
    JoinInfo,
    NodeObservation,
    NodeRequest,
    ProviderContext,
    ProviderError,
)

CLUSTER = "test"
JOIN_TOKEN = "join-token-for-local-tests"


def _agent_pids(state_dir: Path) -> list[int]:
    """Live (non-zombie) agent processes serving ``state_dir``, found through /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and b"fuzz.substrate" in args and str(state_dir).encode() in args:
            found.append(int(entry.name))
    return found


def _context(tmp_path: Path, kind: str = "local", **config: object) -> ProviderContext:
    settings = {"workdir": "nodes", "start_timeout": 20, "stop_timeout": 5, **config}
    return ProviderContext(
        kind=kind,
        name="local",
        cluster=CLUSTER,
        config=local.LocalConfig.model_validate(settings),
        base_dir=tmp_path,
    )


def _request(ctx: ProviderContext, index: int = 0, /, **labels: str) -> NodeRequest:
    address = f"pool.cpu.node[{index}]"
    token = f"{index:032x}"
    node = NodeRequest(
        address=address,
        pool="cpu",
        client_token=token,
        offering="local",
        labels={"pool": "cpu", **labels},
        attributes={},
        tags={TAG_CLUSTER: CLUSTER, TAG_ADDRESS: address, TAG_CLIENT_TOKEN: token},
        join=JoinInfo(token=JOIN_TOKEN, orchestrator="127.0.0.1:9"),
    )
    payload = local.plugin.bootstrap_payload(ctx=ctx, node=node, join=node.join)
    assert payload is not None
    return NodeRequest(**{**node.__dict__, "bootstrap": payload})


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ProviderContext]:
    context = _context(tmp_path)
    try:
        yield context
    finally:  # never leave an agent behind, whatever a test did
        for node in local.plugin.read_nodes(ctx=context) or []:
            local.plugin.delete_node(ctx=context, node=node)


def _read(ctx: ProviderContext) -> dict[str, NodeObservation]:
    nodes = local.plugin.read_nodes(ctx=ctx)
    assert nodes is not None
    return {n.provider_id: n for n in nodes}


def _wait_for_state(ctx: ProviderContext, provider_id: str, state: str) -> NodeObservation:
    deadline = time.monotonic() + 10
    while True:
        node = _read(ctx)[provider_id]
        if node.state == state or time.monotonic() > deadline:
            return node
        time.sleep(0.02)


def test_node_lifecycle(ctx: ProviderContext, assert_pid_gone: Callable[..., None]) -> None:
    request = _request(ctx, rack="r7")
    first = local.plugin.create_node(ctx=ctx, node=request)
    assert first is not None
    node_dir = Path(first.attributes["state_dir"])
    assert node_dir == ctx.base_dir / "nodes" / CLUSTER / request.client_token
    assert first.provider_id == request.client_token
    assert (first.address, first.client_token, first.state) == (
        request.address,
        request.client_token,
        "running",
    )
    token_file = Path(first.attributes["token_file"])
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() != JOIN_TOKEN  # the agent's own token
    assert (token_file.parent / "join-token").read_text().strip() == JOIN_TOKEN
    meta = json.loads((node_dir / "meta.json").read_text())
    assert meta["tags"] == dict(request.tags)
    assert (meta["address"], meta["pool"], meta["client_token"]) == (
        request.address,
        "cpu",
        request.client_token,
    )

    # idempotent: the same client token leaves exactly one agent
    second = local.plugin.create_node(ctx=ctx, node=request)
    assert second is not None
    assert second.attributes["pid"] == first.attributes["pid"]
    assert second.endpoint == first.endpoint
    assert _agent_pids(node_dir) == [first.attributes["pid"]]

    # refresh sees it running, and the agent answers with the join token and the labels
    seen = _read(ctx)[request.client_token]
    assert (seen.state, seen.endpoint, seen.address) == ("running", first.endpoint, request.address)
    assert first.endpoint is not None
    with AgentClient(first.endpoint, token_file.read_text().strip()) as client:
        inventory = client.inventory()
    assert inventory.cores == os.cpu_count()
    assert inventory.labels["rack"] == "r7"
    assert inventory.labels[TAG_ADDRESS] == request.address

    # a dead agent is drift: refresh reports the node gone
    old_pid = first.attributes["pid"]
    os.kill(old_pid, signal.SIGKILL)
    assert _wait_for_state(ctx, request.client_token, "gone").state == "gone"
    assert _read(ctx)[request.client_token].endpoint is None
    assert_pid_gone(old_pid)  # the provider reaped its child

    # creating again with the same token starts a new agent in the same dir
    again = local.plugin.create_node(ctx=ctx, node=request)
    assert again is not None and again.state == "running"
    new_pid = again.attributes["pid"]
    assert new_pid != old_pid
    assert _agent_pids(node_dir) == [new_pid]
    assert _read(ctx)[request.client_token].state == "running"

    # delete stops the agent and removes its dir; deleting twice is fine
    assert local.plugin.delete_node(ctx=ctx, node=again) is True
    assert_pid_gone(new_pid, timeout=1.0)
    assert not node_dir.exists()
    assert local.plugin.delete_node(ctx=ctx, node=again) is True
    assert _read(ctx) == {}


def test_several_nodes_are_several_agents(ctx: ProviderContext) -> None:
    nodes = [
        local.plugin.create_node(ctx=ctx, node=_request(ctx, i)) for i in range(2)
    ]
    endpoints = {n.endpoint for n in nodes if n is not None}
    assert len(endpoints) == 2
    seen = _read(ctx)
    assert {n.state for n in seen.values()} == {"running"}
    assert {n.address for n in seen.values()} == {"pool.cpu.node[0]", "pool.cpu.node[1]"}


def test_concurrent_creates_with_one_token_start_one_agent(ctx: ProviderContext) -> None:
    request = _request(ctx)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(
            pool.map(
                lambda _: local.plugin.create_node(ctx=ctx, node=request), range(3)
            )
        )
    pids = {r.attributes["pid"] for r in results if r is not None}
    assert len(pids) == 1
    assert _agent_pids(local.node_dir(ctx, request.client_token)) == list(pids)


def test_an_agent_that_dies_while_starting_is_reported_with_its_log(
    ctx: ProviderContext,
) -> None:
    request = _request(ctx, **{"": "no key"})  # the agent refuses a label without a key
    with pytest.raises(ProviderError, match=r"exited with code 1 while starting: .*invalid label"):
        local.plugin.create_node(ctx=ctx, node=request)
    assert _read(ctx)[request.client_token].state == "gone"


def test_a_locked_node_dir_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    ctx = _context(tmp_path, start_timeout=0.5)
    request = _request(ctx)
    node_dir = local.node_dir(ctx, request.client_token)
    node_dir.mkdir(parents=True)
    fd = os.open(node_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # looks like an agent that is still starting
        with pytest.raises(ProviderError, match=r"did not become ready within 0\.5s"):
            local.plugin.create_node(ctx=ctx, node=request)
        assert _agent_pids(node_dir) == []  # it did not start a second agent
    finally:
        os.close(fd)


def test_offerings_are_this_machine(ctx: ProviderContext) -> None:
    offerings = local.plugin.offerings(ctx=ctx)
    assert offerings is not None and len(offerings) == 1
    offering = offerings[0]
    assert offering.name == "local"
    assert offering.cores == os.cpu_count()
    assert offering.memory_bytes > 0
    assert offering.price_per_hour == 0
    assert offering.architecture == os.uname().machine
    assert offering.gpus >= 0


def test_config_schema(tmp_path: Path) -> None:
    schema = local.plugin.config_schema
    assert schema is local.LocalConfig
    defaults = schema()
    assert (defaults.workdir, defaults.start_timeout, defaults.stop_timeout) == (
        ".fuzz/nodes",
        30,
        10,
    )
    with pytest.raises(pydantic.ValidationError, match="workdirr"):
        schema.model_validate({"workdirr": "x"})
    with pytest.raises(pydantic.ValidationError):
        schema.model_validate({"start_timeout": 0})
    ctx = ProviderContext("local", "local", CLUSTER, {}, tmp_path)
    assert local.cluster_dir(ctx) == tmp_path / ".fuzz/nodes" / CLUSTER
    bad = ProviderContext("local", "mine", CLUSTER, {"stop_timeout": -1}, tmp_path)
    with pytest.raises(ProviderError, match="local provider 'mine': stop_timeout: Input should"):
        local.cluster_dir(bad)


def test_bootstrap_payload_is_json_with_the_join_token(ctx: ProviderContext) -> None:
    payload = json.loads(_request(ctx, rack="r1").bootstrap)
    assert payload["token"] == JOIN_TOKEN
    assert payload["orchestrator"] == "127.0.0.1:9"
    assert payload["labels"]["rack"] == "r1"
    assert payload["labels"][TAG_CLUSTER] == CLUSTER


def test_other_kinds_never_reach_the_local_provider(tmp_path: Path) -> None:
    found = load_plugins()
    assert local.plugin.kind == "local"
    assert found.require_provider("local").impl is local.plugin
    gateway = ProviderGateway(found, {})
    request = _request(_context(tmp_path))
    other = _context(tmp_path, kind="nosuch")
    with pytest.raises(PluginError, match="no provider plugin for 'nosuch'"):
        gateway.offerings_of(other)
    with pytest.raises(PluginError, match="no provider plugin for 'nosuch'"):
        gateway.bootstrap_payload(other, request, request.join)
    with pytest.raises(PluginError, match="no provider plugin for 'nosuch'"):
        gateway.create_node(other, request)
    with pytest.raises(PluginError, match="no provider plugin for 'nosuch'"):
        gateway.read_nodes(other)
    observation = NodeObservation("x", "a", "x", "gone")
    with pytest.raises(PluginError, match="no provider plugin for 'nosuch'"):
        gateway.delete_node(other, observation)
    assert not list(local.cluster_dir(_context(tmp_path)).parent.glob("*")), "a node was made"


def test_registered_through_the_entry_point() -> None:
    found = load_plugins()
    registered = found.require_provider("local")
    assert registered.plugin.value == "fuzz.default_plugins.local_provider"
    assert registered.plugin.distribution == "fuzz"
    assert registered.impl is local.plugin
    assert registered.impl.config_schema is local.LocalConfig
