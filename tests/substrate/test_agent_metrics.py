"""The node agent's health and metrics: a real agent process, a real grpc.health.v1
client, real HTTP on its metrics listener."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from fuzz.clients.agent import AgentClient
from fuzz.testing.web import plain_get
from tests.support.orchestratorutil import wait_until

TOKEN = "metrics-test-token"


def _argv(tmp_path: Path, *extra: str) -> list[str]:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return [sys.executable, "-m", "fuzz.substrate", "serve", "--state-dir",
            str(tmp_path / "state"), "--token-file", str(token), "--insecure", *extra]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A running agent's agent.json."""
    proc = subprocess.Popen(_argv(tmp_path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    info = tmp_path / "state" / "agent.json"
    try:
        wait_until("agent.json", lambda: info.exists() or proc.poll() is not None)
        assert proc.poll() is None, "the agent exited"
        yield json.loads(info.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_agent_health_and_metrics(agent: dict[str, str]) -> None:
    channel = grpc.insecure_channel(agent["endpoint"], options=(("grpc.enable_http_proxy", 0),))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as watch:
            next(iter(stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)))
        assert watch.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with AgentClient(agent["endpoint"], TOKEN) as client:
        client.inventory()
    metrics = agent["metrics"]
    assert metrics.startswith("127.0.0.1:") and not metrics.endswith(":0")
    assert plain_get(f"http://{metrics}/healthz") == (200, "ok\n")
    assert plain_get(f"http://{metrics}/readyz") == (200, "ready\n")
    code, text = plain_get(f"http://{metrics}/metrics")
    assert code == 200
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    assert samples[("fuzz_agent_leases", ())] == 0
    assert samples[("fuzz_agent_image_pulls_total", ())] == 0
    inventory = ("fuzz_rpc_duration_seconds_count",
                 (("code", "OK"), ("method", "/fuzz.substrate.v1.Substrate/Inventory")))
    assert samples[inventory] == 1


def test_agent_metrics_off_and_a_bad_address_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(_argv(tmp_path, "--metrics-listen", "nowhere"), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: metrics listen address 'nowhere': expected HOST:PORT, e.g. 127.0.0.1:9464")
    proc = subprocess.Popen(_argv(tmp_path, "--metrics-listen", "off"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    info = tmp_path / "state" / "agent.json"
    try:
        wait_until("agent.json", lambda: info.exists() or proc.poll() is not None)
        assert json.loads(info.read_text())["metrics"] is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
