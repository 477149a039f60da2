"""Long-lived calls are limited per user and in all, and never starve node heartbeats.

A real orchestrator (in a thread, plain text, the default limits) with one real
agent that joined it; the node is marked draining before the server starts, so
the users' workflows stay queued and their watches stay open. Ten users each
try to open more watches than they may: past their own limit, and past the
server's, calls are refused with RESOURCE_EXHAUSTED, while registrations (the
heartbeat RPC) keep being answered at once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from fuzz.api import orchestrator_pb2 as pb
from fuzz.api import orchestrator_pb2_grpc
from fuzz.clients.iam import IamClient
from fuzz.clients.orchestrator import InvalidRequestError, OrchestratorClient
from fuzz.fsutil import read_json, write_private_file
from fuzz.orchestrate.records import DrainRecord, TaskRecord, WorkflowRecord
from fuzz.orchestrate.server import ServerSettings, serve
from fuzz.orchestrate.store import Store
from fuzz.rpc.auth import bearer_metadata
from fuzz.spec.cluster import LimitsSpec
from fuzz.testing.oci import free_port

NODE = "limits-node"
AGENT_TOKEN = "agent-token-for-the-limits-test"
USERS = 10
LIMITS = LimitsSpec()  # the defaults: 32 streams per user, 192 in all
QUEUED = """\
version: v1
jobs:
  wait:
    image: {uri: "docker://127.0.0.1:9/nothing:1"}
    command: [/bin/true]
    resource: {cpu: {cores: 1}, memory: {size: 16MiB}}
"""


@dataclass
class Server:
    """The running orchestrator, the joined agent, and every user's token."""

    endpoint: str
    data_dir: Path
    agent_endpoint: str
    join_token: str
    tokens: dict[str, str]


def _wait(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("limits")
    data = root / "server"
    data.mkdir(mode=0o700)
    store = Store(data / "server.db")
    store.save(DrainRecord(NODE, 0.0))  # nothing is placed there: workflows stay queued
    store.close()
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(ServerSettings(
        listen=f"127.0.0.1:{free_port()}", data_dir=data, cluster="limits", insecure=True,
        limits=LIMITS), stop))
    thread.start()
    agent: subprocess.Popen[bytes] | None = None
    try:
        _wait("the server", lambda: read_json(data / "server.json") is not None)
        endpoint = str((read_json(data / "server.json") or {})["endpoint"])
        admin = (data / "admin.token").read_text().strip()
        tokens = {"admin": admin}
        with IamClient(endpoint, admin) as iam:
            join_token = iam.issue_join_token(NODE).token
            for number in range(USERS):
                user = f"user{number}"
                iam.put_user(user, ["user"], [])
                tokens[user] = iam.login(iam.issue_login_code(user).code).token
        write_private_file(root / "token", AGENT_TOKEN.encode())
        write_private_file(root / "join-token", join_token.encode())
        with open(root / "agent.log", "wb") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "fuzz.substrate", "serve", "--listen", "127.0.0.1:0",
                 "--state-dir", str(root / "agent"), "--token-file", str(root / "token"),
                 "--join", endpoint, "--join-token-file", str(root / "join-token"),
                 "--insecure", "--node-name", NODE],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        with OrchestratorClient(endpoint, admin) as client:
            _wait("the node to join", lambda: [n.name for n in client.list_nodes()] == [NODE])
        agent_endpoint = str((read_json(root / "agent" / "agent.json") or {})["endpoint"])
        for number in range(USERS):
            with OrchestratorClient(endpoint, tokens[f"user{number}"]) as client:
                client.start_workflow(f"flow{number}", QUEUED, "flow.yaml")
        yield Server(endpoint, data, agent_endpoint, join_token, tokens)
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(10)
        stop.set()
        thread.join(30)


@dataclass
class Watches:
    """Open WatchWorkflow calls and their channels."""

    channels: list[grpc.Channel]
    calls: list[Any]  # grpc's call objects: iterators of replies and grpc.Call

    def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            channel.close()


def _open_watches(server: Server, users: list[str], each: int) -> Watches:
    """``each`` watches of their own workflow for every one of ``users``, one channel each."""
    watches = Watches([], [])
    for user in users:
        channel = grpc.insecure_channel(server.endpoint)
        watches.channels.append(channel)
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        ref = pb.WorkflowRef(name=user.replace("user", "flow"))
        for _ in range(each):
            watches.calls.append(stub.WatchWorkflow(
                ref, metadata=bearer_metadata(server.tokens[user]), timeout=120))
    return watches


def _first(call: Any) -> str:
    """What a watch did first: "open" (it sent the workflow) or its error code's name."""
    try:
        next(call)
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return "open"


def test_a_users_streams_past_their_limit_are_refused(server: Server) -> None:
    watches = _open_watches(server, ["user0"], LIMITS.streams_per_user)
    try:
        assert [_first(call) for call in watches.calls] == ["open"] * LIMITS.streams_per_user
        one_more = _open_watches(server, ["user0"], 1)
        with pytest.raises(grpc.RpcError) as refused:
            next(one_more.calls[0])
        one_more.close()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.details() == (
            "user0 has 32 long-lived calls open (watches, followed logs, exec, "
            "port-forward), the most one user may (orchestrator.limits.streams_per_user): "
            "end one and try again")
        other = _open_watches(server, ["user1"], 1)  # another user is not affected
        assert _first(other.calls[0]) == "open"
        other.close()
    finally:
        watches.close()

    def reopened() -> bool:  # closed ones are given back
        more = _open_watches(server, ["user0"], 1)
        try:
            return _first(more.calls[0]) == "open"
        finally:
            more.close()

    _wait("a closed watch's slot", reopened)


def test_heartbeats_arrive_on_time_while_every_stream_is_held(server: Server) -> None:
    users = [f"user{number}" for number in range(USERS)]
    watches = _open_watches(server, users, LIMITS.streams_per_user)  # 320 > 256 workers
    try:
        time.sleep(2)  # let every call reach the server and hold what it can
        latencies = []
        with OrchestratorClient(server.endpoint, "", timeout=5) as node:
            for _ in range(10):
                began = time.monotonic()
                node.register_node(NODE, server.agent_endpoint, AGENT_TOKEN, {},
                                   join_token=server.join_token)
                latencies.append(time.monotonic() - began)
                time.sleep(0.3)
        assert max(latencies) < 2.0, latencies  # they timed out (5 s) before
        with OrchestratorClient(server.endpoint, server.tokens["admin"], timeout=5) as admin:
            assert [n.state for n in admin.list_nodes()] == ["DRAINING"]  # heard from, unused
        outcomes = [_first(call) for call in watches.calls]
        assert outcomes.count("open") == LIMITS.streams_total
        assert outcomes.count("RESOURCE_EXHAUSTED") == len(outcomes) - LIMITS.streams_total
        refusals = {call.details() for call in watches.calls  # done(): code() would wait
                    if call.done() and call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert ("the orchestrator has 192 long-lived calls open, the most it serves at once "
                "(orchestrator.limits.streams_total): try again later") in refusals
    finally:
        watches.close()


BOMB = QUEUED + """\
  bomb:
    image: {uri: "docker://127.0.0.1:9/nothing:1"}
    command: [/bin/true]
    task-array: {start: 1, end: 999999999}
"""


def test_a_task_array_bomb_is_refused_at_start_and_makes_no_records(server: Server) -> None:
    tracemalloc.start()
    began = time.monotonic()
    try:
        with OrchestratorClient(server.endpoint, server.tokens["user3"]) as client, \
                pytest.raises(InvalidRequestError) as refused:
            client.start_workflow("bomb", BOMB, "bomb.yaml")
        _, peak = tracemalloc.get_traced_memory()  # the server runs in this process
    finally:
        tracemalloc.stop()
    assert time.monotonic() - began < 5
    assert peak < 50 * 1024 * 1024
    assert str(refused.value) == (
        "bomb.yaml:10:33: jobs.bomb.task-array.end: this workflow would make 1,000,000,000 "
        "tasks (job 'bomb' makes 999,999,999), over the cluster's limit of 10,000 tasks per "
        "workflow (orchestrator.limits.tasks_per_workflow)")
    store = Store(server.data_dir / "server.db")
    try:
        assert store.load(WorkflowRecord, name="bomb") == []
        assert store.load(TaskRecord, job="bomb") == []
    finally:
        store.close()
