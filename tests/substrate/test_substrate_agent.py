"""The node agent as a real process: ``python -m fuzz.substrate serve`` spoken to over gRPC."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import fuzz
from fuzz.api import substrate_pb2, substrate_pb2_grpc
from fuzz.clients.agent import AgentAuthError, AgentClient, AgentUnreachableError
from fuzz.errors import FuzzError
from fuzz.resources import MACHINE_LABEL
from fuzz.rpc.auth import check_authorization, read_token_file, shared_token
from fuzz.rpc.server import endpoint_for
from fuzz.substrate.launch.sharedns import machine_id
from tests.support.threadsignal import a_thread_other_than_main, signal_thread, thread_name

TOKEN = "s3cret-token-for-tests"
START_TIMEOUT = 15.0


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    state_dir: Path
    token_file: Path
    log: Path

    @property
    def info(self) -> dict[str, object]:
        data = json.loads((self.state_dir / "agent.json").read_text())
        assert isinstance(data, dict)
        return data

    @property
    def endpoint(self) -> str:
        return str(self.info["endpoint"])

    def stderr(self) -> str:
        return self.log.read_text()


def _token_file(directory: Path, text: str = TOKEN + "\n", mode: int = 0o600) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "token"
    path.write_text(text)
    path.chmod(mode)
    return path


def _transport(extra: tuple[str, ...]) -> tuple[str, ...]:
    """Plain text (``--insecure``) unless the test chose TLS itself."""
    return () if "--tls-cert" in extra else ("--insecure",)


def _spawn(
    state_dir: Path, token_file: Path, *extra: str, python_flags: tuple[str, ...] = ()
) -> Agent:
    log = state_dir.parent / f"{state_dir.name}-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *python_flags, "-m", "fuzz.substrate", "serve",
             "--state-dir", str(state_dir), "--token-file", str(token_file), *extra,
             *_transport(extra)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )
    return Agent(proc, state_dir, token_file, log)


def _wait_ready(agent: Agent) -> float:
    """Wait for agent.json; return the seconds it took."""
    start = time.monotonic()
    while not (agent.state_dir / "agent.json").exists():
        if agent.proc.poll() is not None:
            pytest.fail(f"agent exited with {agent.proc.returncode}: {agent.stderr()}")
        if time.monotonic() - start > START_TIMEOUT:
            pytest.fail(f"agent not ready after {START_TIMEOUT}s: {agent.stderr()}")
        time.sleep(0.01)
    return time.monotonic() - start


def _stop(agent: Agent) -> None:
    if agent.proc.poll() is None:
        agent.proc.send_signal(signal.SIGTERM)
        try:
            agent.proc.wait(10)
        except subprocess.TimeoutExpired:
            agent.proc.kill()
            agent.proc.wait()


def _run_failing(state_dir: Path, token_file: Path, *extra: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "fuzz.substrate", "serve",
         "--state-dir", str(state_dir), "--token-file", str(token_file), *extra,
         *_transport(extra)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )
    return done.returncode, done.stderr


def _lock_is_free(state_dir: Path) -> bool:
    fd = os.open(state_dir / "agent.lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    started = _spawn(tmp_path / "state", _token_file(tmp_path / "secrets"),
                     "--label", "rack=r1", "--label", "role=test=yes")
    try:
        _wait_ready(started)
        yield started
    finally:
        _stop(started)


def _stub(endpoint: str) -> tuple[grpc.Channel, substrate_pb2_grpc.SubstrateStub]:
    channel = grpc.insecure_channel(endpoint, options=(("grpc.enable_http_proxy", 0),))
    return channel, substrate_pb2_grpc.SubstrateStub(channel)


def test_agents_sharing_a_machine_report_it_as_one_label(tmp_path: Path) -> None:
    # the local provider's agents share their CPUs (and their MPI jobs' namespaces):
    # each reports the same machine, by which an Open MPI job's ranks are one node's
    shared = tmp_path / "nodes"
    shared.mkdir()
    labels = []
    for name in ("a", "b"):
        started = _spawn(tmp_path / name, _token_file(tmp_path / f"secrets-{name}"),
                         "--share-cpus-with", str(shared))
        try:
            _wait_ready(started)
            with AgentClient(started.endpoint, TOKEN) as client:
                labels.append(dict(client.inventory().labels))
        finally:
            _stop(started)
    assert [each[MACHINE_LABEL] for each in labels] == [machine_id(shared)] * 2


def test_inventory_over_grpc_with_the_token(agent: Agent) -> None:
    info = agent.info
    assert info["pid"] == agent.proc.pid
    assert info["version"] == fuzz.__version__
    assert str(info["endpoint"]).startswith("127.0.0.1:")
    assert not str(info["endpoint"]).endswith(":0")
    with AgentClient(agent.endpoint, TOKEN) as client:
        inventory = client.inventory()
    assert inventory.cores == os.cpu_count()
    assert inventory.sockets >= 1
    assert inventory.memory_bytes > 0
    assert sorted(c for d in inventory.numa for c in d.cpu_ids) == [c.id for c in inventory.cpus]
    assert dict(inventory.labels) == {"rack": "r1", "role": "test=yes",
                                      "fuzz.io/cpu.architecture": os.uname().machine}
    assert inventory.agent_version == fuzz.__version__
    assert inventory.node_id == info["node_id"]
    assert inventory.hostname
    assert inventory.architecture == os.uname().machine
    assert inventory.started_at.seconds > 0


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing 'authorization: Bearer <token>'"),
        ((("authorization", "Bearer not-the-token"),), "invalid bearer token"),
        ((("authorization", f"Basic {TOKEN}"),), "must be 'Bearer <token>'"),
    ],
)
def test_calls_without_the_right_token_are_unauthenticated(
    agent: Agent, metadata: tuple[tuple[str, str], ...], message: str
) -> None:
    channel, stub = _stub(agent.endpoint)
    with channel, pytest.raises(grpc.RpcError) as caught:
        stub.Inventory(substrate_pb2.InventoryRequest(), metadata=metadata, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in (caught.value.details() or "")


def test_health_needs_no_token(agent: Agent) -> None:
    channel = grpc.insecure_channel(agent.endpoint, options=(("grpc.enable_http_proxy", 0),))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "fuzz.substrate.v1.Substrate"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with AgentClient(agent.endpoint, "any token") as client:
        assert client.health()
        client.wait_ready(5)


def test_client_errors_are_one_line_fuzz_errors(agent: Agent, tmp_path: Path) -> None:
    with AgentClient(agent.endpoint, "wrong") as client, pytest.raises(AgentAuthError) as auth:
        client.inventory()
    assert isinstance(auth.value, FuzzError)
    assert str(auth.value) == (
        f"agent at {agent.endpoint} refused the token: invalid bearer token"
    )
    port = int(agent.endpoint.rpartition(":")[2])
    _stop(agent)
    dead = f"127.0.0.1:{port}"
    with AgentClient(dead, TOKEN, timeout=5) as client:
        with pytest.raises(AgentUnreachableError) as unreachable:
            client.inventory()
        assert str(unreachable.value) == f"agent at {dead} is not reachable"
        assert client.health(timeout=2) is False
        with pytest.raises(AgentUnreachableError, match=r"did not become ready within 0\.3s"):
            client.wait_ready(0.3)


def test_a_second_agent_on_the_same_state_dir_is_refused(agent: Agent) -> None:
    code, stderr = _run_failing(agent.state_dir, agent.token_file)
    assert code == 1
    assert stderr.strip().splitlines() == [
        f"Error: another agent (pid {agent.proc.pid}) is already running on state dir "
        f"{agent.state_dir}"
    ]
    assert agent.proc.poll() is None
    assert json.loads((agent.state_dir / "agent.json").read_text())["pid"] == agent.proc.pid


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_agent_gracefully(tmp_path: Path, signum: int) -> None:
    started = _spawn(tmp_path / "state", _token_file(tmp_path / "secrets"))
    try:
        _wait_ready(started)
        node_id = started.info["node_id"]
        started.proc.send_signal(signum)
        assert started.proc.wait(10) == 0, started.stderr()
        assert not (started.state_dir / "agent.json").exists()
        assert _lock_is_free(started.state_dir)
        assert "Traceback" not in started.stderr()
    finally:
        _stop(started)
    again = _spawn(tmp_path / "state", started.token_file)
    try:
        _wait_ready(again)
        assert again.info["node_id"] == node_id  # the node keeps its identity
    finally:
        _stop(again)


def test_sigterm_delivered_to_another_thread_stops_the_agent(tmp_path: Path) -> None:
    started = _spawn(tmp_path / "state", _token_file(tmp_path / "secrets"))
    try:
        _wait_ready(started)
        tid = a_thread_other_than_main(started.proc.pid)
        name = thread_name(started.proc.pid, tid)
        signal_thread(started.proc.pid, tid, signal.SIGTERM)
        assert started.proc.wait(5) == 0, f"SIGTERM to thread {name}: {started.stderr()}"
    finally:
        _stop(started)


def test_agent_starts_fast_and_imports_neither_rich_nor_pydantic(tmp_path: Path) -> None:
    started = _spawn(tmp_path / "state", _token_file(tmp_path / "secrets"),
                     python_flags=("-X", "importtime"))
    try:
        took = _wait_ready(started)
    finally:
        _stop(started)
    assert started.proc.returncode == 0
    modules = {
        line.rpartition("|")[2].strip()
        for line in started.stderr().splitlines()
        if line.startswith("import time:")
    }
    assert "grpc" in modules and "fuzz.substrate.server" in modules
    heavy = sorted(m for m in modules if m.split(".")[0] in ("rich", "pydantic"))
    assert heavy == []
    assert took < 3.0, f"agent took {took:.2f}s to become ready"  # ~0.4 s on an idle machine


@pytest.mark.parametrize(
    ("mode", "text", "message"),
    [
        (0o644, TOKEN, "is accessible by group or others (mode 0644); run: chmod 600 {path}"),
        (0o600, "  \n", "is empty"),
    ],
)
def test_bad_token_files_are_refused(
    tmp_path: Path, mode: int, text: str, message: str
) -> None:
    token_file = _token_file(tmp_path / "secrets", text, mode)
    code, stderr = _run_failing(tmp_path / "state", token_file)
    assert code == 1
    expected = f"Error: token file {token_file} {message.format(path=token_file)}"
    assert stderr.strip().splitlines() == [expected]


def test_missing_token_file_and_bad_label_are_one_line_errors(tmp_path: Path) -> None:
    code, stderr = _run_failing(tmp_path / "state", tmp_path / "nope")
    assert code == 1
    assert stderr.strip().splitlines() == [f"Error: token file {tmp_path / 'nope'} does not exist"]
    code, stderr = _run_failing(tmp_path / "state", _token_file(tmp_path), "--label", "=x")
    assert code == 1
    assert stderr.strip().splitlines() == ["Error: invalid label '=x': expected KEY=VALUE"]


def test_a_bad_job_network_is_a_one_line_error(tmp_path: Path) -> None:
    token = _token_file(tmp_path)
    code, stderr = _run_failing(tmp_path / "state", token, "--job-network", "10.300.0.0/24")
    assert code == 1
    assert stderr.strip().splitlines() == [
        "Error: --job-network: job subnet '10.300.0.0/24': "
        "Octet 300 (> 255) not permitted in '10.300.0.0'"]
    code, stderr = _run_failing(tmp_path / "state", token, "--job-network", "192.168.7.0/24")
    assert stderr.strip().splitlines() == [
        "Error: --job-network: job subnet 192.168.7.0/24 is not inside the jobs range "
        "10.200.0.0/13"]


def test_read_token_file_strips_whitespace(tmp_path: Path) -> None:
    assert read_token_file(_token_file(tmp_path, f"\n {TOKEN} \n")) == TOKEN


def test_check_authorization() -> None:
    check = shared_token(TOKEN)
    assert check_authorization(check, [("authorization", f"Bearer {TOKEN}")]) is None
    assert check_authorization(check, [("authorization", f"bearer  {TOKEN} ")]) is None
    assert check_authorization(check, [("x-other", "1")]) is not None
    assert check_authorization(check, [("authorization", "Bearer ")]) is not None
    assert check_authorization(check, [("authorization", f"Bearer {TOKEN}x")]) is not None


def test_endpoint_for() -> None:
    assert endpoint_for("127.0.0.1:0", 4242) == "127.0.0.1:4242"
    assert endpoint_for("0.0.0.0:7000", 7000) == "127.0.0.1:7000"
    assert endpoint_for("[::1]:0", 5000) == "[::1]:5000"


def test_a_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stderr = _run_failing(
            tmp_path / "state", _token_file(tmp_path), "--listen", f"127.0.0.1:{port}"
        )
    assert code == 1
    assert stderr.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert not (tmp_path / "state" / "agent.json").exists()
