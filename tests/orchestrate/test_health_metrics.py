"""Health and metrics of a real orchestrator (``serve`` in a thread of the test).

gRPC health checking through a real grpc.health.v1 client (Check needs no token,
Watch does; NOT_SERVING while it stops), and ``/healthz``, ``/readyz`` and
``/metrics`` over real HTTP on the metrics listener.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from fuzz.fsutil import read_json
from fuzz.orchestrate.connect import admin_token_path
from fuzz.orchestrate.datadir import init_data_dir
from fuzz.orchestrate.server import ServerSettings, serve
from fuzz.rpc.server import ServerStartError
from fuzz.spec.cluster import MetricsSpec
from fuzz.testing.oci import free_port
from fuzz.testing.web import plain_get
from tests.support.orchestratorutil import wait_until

SERVICES = ("", "fuzz.orchestrator.v1.Orchestrator")


@dataclass
class Server:
    """An orchestrator serving in a thread, with the event that stops it."""

    thread: threading.Thread
    stop: threading.Event
    endpoint: str
    metrics: str
    token: str


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    data_dir = tmp_path / "server"
    init_data_dir(data_dir, "test")
    settings = ServerSettings(listen=f"127.0.0.1:{free_port()}", data_dir=data_dir,
                              cluster="test", insecure=True)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(settings, stop))
    thread.start()
    try:
        wait_until("the server", lambda: read_json(data_dir / "server.json") is not None)
        info = json.loads((data_dir / "server.json").read_text())
        yield Server(thread, stop, info["endpoint"], info["metrics"],
                     admin_token_path(data_dir).read_text().strip())
    finally:
        stop.set()
        thread.join(30)




def _health(endpoint: str) -> tuple[grpc.Channel, health_pb2_grpc.HealthStub]:
    channel = grpc.insecure_channel(endpoint, options=(("grpc.enable_http_proxy", 0),))
    return channel, health_pb2_grpc.HealthStub(channel)


def test_health_check_needs_no_token_and_reveals_nothing_else(server: Server) -> None:
    channel, stub = _health(server.endpoint)
    with channel:
        for service in SERVICES:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        # Watch holds a server worker while it lasts: only for callers with a token
        with pytest.raises(grpc.RpcError) as watch:
            next(iter(stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)))
        assert watch.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # and the rest of the API still asks for one
        listing = channel.unary_unary("/fuzz.orchestrator.v1.Orchestrator/ListNodes")
        with pytest.raises(grpc.RpcError) as other:
            listing(b"", timeout=10)
        assert other.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_says_not_serving_while_it_stops_and_readyz_follows(server: Server) -> None:
    assert plain_get(f"http://{server.metrics}/readyz") == (200, "ready\n")
    channel, stub = _health(server.endpoint)
    with channel:
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30,
                           metadata=(("authorization", f"Bearer {server.token}"),))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        server.stop.set()
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # the open watch keeps the server in its stop grace: the listener still answers
        code, text = plain_get(f"http://{server.metrics}/readyz")
        assert (code, text) == (503, "not ready: the gRPC server is not serving\n")
        assert plain_get(f"http://{server.metrics}/healthz") == (200, "ok\n")
    server.thread.join(30)
    assert plain_get(f"http://{server.metrics}/healthz")[0] == 0  # gone with the server


def test_metrics_count_rpcs_by_method_and_say_it_leads(server: Server) -> None:
    channel, stub = _health(server.endpoint)
    with channel:
        for _ in range(3):
            stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    code, text = plain_get(f"http://{server.metrics}/metrics")
    assert code == 200
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    assert samples[("fuzz_leader", ())] == 1
    assert samples[("fuzz_queue_depth", ())] == 0
    assert samples[("fuzz_task_ends_total", (("state", "SUCCEEDED"),))] == 0
    checks = ("fuzz_rpc_duration_seconds_count",
              (("code", "OK"), ("method", "/grpc.health.v1.Health/Check")))
    assert samples[checks] >= 3
    assert plain_get(f"http://{server.metrics}/nothing-here")[0] == 404


def test_a_metrics_address_in_use_stops_the_start_in_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    init_data_dir(data_dir, "test")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = ServerSettings(listen=f"127.0.0.1:{free_port()}", data_dir=data_dir,
                                  cluster="test", insecure=True,
                                  metrics=MetricsSpec(listen=f"127.0.0.1:{port}"))
        with pytest.raises(ServerStartError) as refused:
            serve(settings, threading.Event())
    assert str(refused.value) == \
        f"cannot listen for metrics on 127.0.0.1:{port}: Address already in use"


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    init_data_dir(data_dir, "test")
    settings = ServerSettings(listen=f"127.0.0.1:{free_port()}", data_dir=data_dir,
                              cluster="test", insecure=True, metrics=MetricsSpec(enabled=False))
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(settings, stop))
    thread.start()
    try:
        wait_until("the server", lambda: read_json(data_dir / "server.json") is not None)
        assert json.loads((data_dir / "server.json").read_text())["metrics"] is None
    finally:
        stop.set()
        thread.join(30)
