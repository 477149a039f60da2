"""The endpoint gateway's data path over an agent's direct TLS port.

A real :class:`DirectListener` (TLS 1.3, a node certificate of a fresh cluster CA) with
its :class:`TicketBook` stands for the agent; its "containers" are HTTP and WebSocket
servers on 127.0.0.1 (the HTTP one closes after every answer, as busybox httpd does).
The gateway is the real one (real TLS) and its resolver opens :class:`DirectTunnel`s
with reusable tickets granted in that book, keeping idle ones in :class:`IdleTunnels`,
as the orchestrator's does through GrantAccess (tests/e2e/test_endpoints_e2e.py runs
that through a real agent and containers).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fuzz.crypto import pki
from fuzz.errors import FuzzError
from fuzz.orchestrate.endpoints.direct import (
    IDLE_KEPT_SECONDS,
    MAX_IDLE_PER_PORT,
    DirectTunnel,
    IdleTunnels,
)
from fuzz.orchestrate.endpoints.proxy import Route
from fuzz.rpc.direct import client_context
from fuzz.substrate.rpc.direct import DirectListener, TicketBook
from fuzz.substrate.runtime.execproc import ExecProcess, ExecSpec
from fuzz.testing.web import serve_handler
from tests.support.gatewaytest import (
    ClosingHandler,
    PortRoutes,
    RunningGateway,
    assert_big_downloads_whole,
    assert_unlistened_port_is_502,
    assert_upload_and_websocket_whole,
    loopback_connector,
    running_gateway,
)
from tests.support.nodecerts import write_node_certificate

NODE = "node-a"
@dataclass
class Agent:
    """The direct listener and its book; what it was asked to open."""

    book: TicketBook
    port: int
    ca_pem: bytes
    opened: list[tuple[str, int]] = field(default_factory=list)  # (container, port)


@dataclass
class Services(PortRoutes):
    """The test's resolver: endpoint ``web`` (container ``c-web``) and ``ws``
    (``c-ws``), public, reached through the agent's direct port."""

    agent: Agent
    granted: int = 0
    idle: IdleTunnels = field(default_factory=IdleTunnels)

    def close(self) -> None:
        """Close the idle links."""
        self.idle.close()

    def connect(self, route: Route) -> DirectTunnel:
        key = (f"c-{route.address.endpoint}", route.port)
        reopened = self.idle.reopened(key)
        if reopened is not None:
            return reopened
        ticket = os.urandom(32)
        self.agent.book.grant(hashlib.sha256(ticket).digest(), key[0], key[1],
                              "endpoint-gateway", 10.0, reusable=True)
        self.granted += 1
        return DirectTunnel("127.0.0.1", self.agent.port, client_context(self.agent.ca_pem),
                            pki.node_dns_name(NODE), ticket,
                            release=lambda tunnel: self.idle.put(key, tunnel))


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    ca_pem = write_node_certificate(tmp_path, NODE)
    book = TicketBook()
    opened: list[tuple[str, int]] = []
    connect = loopback_connector(opened)
    listener = DirectListener("127.0.0.1", str(tmp_path / "cert.pem"),
                              str(tmp_path / "key.pem"), book, connect, _no_exec)
    listener.start()
    try:
        yield Agent(book, listener.port, ca_pem, opened)
    finally:
        listener.close()


Running = RunningGateway[Services]


@pytest.fixture
def running(tmp_path: Path, agent: Agent) -> Iterator[Running]:
    with running_gateway(tmp_path, lambda ports: Services(ports, agent)) as gateway:
        yield gateway


def test_a_large_download_is_byte_exact_and_one_tunnel_serves_every_request(
        running: Running) -> None:
    """Content-Length bodies pass the gateway unparsed: each download equals the file;
    the service closes after every answer, yet one ticket (one TLS connection to the
    agent) serves them all, reopening only the endpoint's port of its container."""
    assert_big_downloads_whole(running)
    assert running.services.granted == 1
    agent = running.services.agent
    assert agent.opened == [("c-web", running.services.ports["web"])] * 4


def test_a_large_upload_and_a_websocket_echo_over_the_direct_port(running: Running) -> None:
    assert_upload_and_websocket_whole(running)


def test_a_port_nothing_listens_on_is_502_with_the_agents_sentence(running: Running) -> None:
    assert_unlistened_port_is_502(running, running.services.ports)


def test_only_a_reusable_ticket_opens_its_port_again(agent: Agent) -> None:
    """A reopened tunnel reaches its grant's port; a single-use ticket's connection is
    closed by the agent rather than opened again."""
    with serve_handler(ClosingHandler) as port:
        for reusable in (True, False):
            ticket = os.urandom(32)
            agent.book.grant(hashlib.sha256(ticket).digest(), "c", port, "t", 10.0, reusable)
            tunnel = DirectTunnel("127.0.0.1", agent.port, client_context(agent.ca_pem),
                                  pki.node_dns_name(NODE), ticket, release=lambda _: None)
            for round_ in range(2 if reusable else 1):
                if round_:
                    tunnel.reopen()
                tunnel.send(b"GET /small HTTP/1.0\r\n\r\n")
                answer = b""
                while data := tunnel.recv():
                    answer += data
                assert answer.endswith(b"\r\n\r\nsmall\n") and tunnel.reusable
                tunnel.close()  # released: kept open
            if not reusable:  # found closed before it is used, or when it is
                with pytest.raises(OSError, match="closed the"):
                    tunnel.reopen()
                    tunnel.send(b"GET /small HTTP/1.0\r\n\r\n")
                    tunnel.recv()
            tunnel.discard()
    assert agent.opened == [("c", port)] * 3


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _used_tunnel(agent: Agent, port: int) -> DirectTunnel:
    """A tunnel whose one exchange with the service on ``port`` ended cleanly."""
    ticket = os.urandom(32)
    agent.book.grant(hashlib.sha256(ticket).digest(), "c", port, "t", 10.0, reusable=True)
    tunnel = DirectTunnel("127.0.0.1", agent.port, client_context(agent.ca_pem),
                          pki.node_dns_name(NODE), ticket, release=lambda _: None)
    tunnel.send(b"GET /small HTTP/1.0\r\n\r\n")
    while tunnel.recv():
        pass
    assert tunnel.reusable
    return tunnel


def test_idle_tunnels_are_capped_per_port_and_expire(agent: Agent) -> None:
    clock = Clock()
    idle = IdleTunnels(clock)
    with serve_handler(ClosingHandler) as port:
        for _ in range(MAX_IDLE_PER_PORT + 1):
            idle.put("k", _used_tunnel(agent, port))
        reopened = [idle.reopened("k") for _ in range(MAX_IDLE_PER_PORT + 1)]
        assert sum(tunnel is not None for tunnel in reopened) == MAX_IDLE_PER_PORT
        for tunnel in reopened:
            if tunnel is not None:
                tunnel.discard()
        idle.put("k", _used_tunnel(agent, port))
        clock.now += IDLE_KEPT_SECONDS
        assert idle.reopened("k") is None
        idle.close()


def _no_exec(spec: ExecSpec) -> ExecProcess:
    """No container here to exec in."""
    raise FuzzError(f"no exec in container {spec.container_id} here")
