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
import http.server
import os
import socket
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
from fuzz.orchestrate.endpoints.gateway import Gateway, GatewayTls
from fuzz.orchestrate.endpoints.proxy import EndpointNotFoundError, GatewayParts, Route
from fuzz.orchestrate.endpoints.sessions import SignIns
from fuzz.orchestrate.iam.audit import AuditLog
from fuzz.orchestrate.iam.directory import IamDirectory
from fuzz.orchestrate.store import Store
from fuzz.rpc.direct import client_context
from fuzz.spec.endpoint_urls import EndpointAddress
from fuzz.substrate.rpc.direct import DirectListener, Grant, TicketBook
from fuzz.substrate.runtime.execproc import ExecProcess, ExecSpec
from fuzz.testing.web import serve_handler
from tests.support.endpoints import Browser, ca_context, websocket_echo, websocket_echo_server
from tests.support.nodecerts import write_node_certificate

NODE = "node-a"
BIG = os.urandom(24 * 2**20 + 12345)  # more than many of the tunnel's chunks


class ClosingHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.0 answers, the connection closed after each: ``/big`` is :data:`BIG`,
    a POST is answered with the SHA-256 and length of its body."""

    def do_GET(self) -> None:
        body = BIG if self.path.endswith("/big") else b"small\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        body = f"{hashlib.sha256(data).hexdigest()} {len(data)}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@dataclass
class Agent:
    """The direct listener and its book; what it was asked to open."""

    book: TicketBook
    port: int
    ca_pem: bytes
    opened: list[tuple[str, int]] = field(default_factory=list)  # (container, port)


@dataclass
class Services:
    """The test's resolver: endpoint ``web`` (container ``c-web``) and ``ws``
    (``c-ws``), public, reached through the agent's direct port."""

    agent: Agent
    ports: dict[str, int]
    granted: int = 0
    idle: IdleTunnels = field(default_factory=IdleTunnels)

    def route(self, address: EndpointAddress) -> Route:
        if address.endpoint not in self.ports:
            raise EndpointNotFoundError(f"no endpoint {address.endpoint}")
        return Route(address, "public", "", self.ports[address.endpoint])

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

    def connect(grant: Grant) -> socket.socket:
        opened.append((grant.container_id, grant.port))
        try:
            return socket.create_connection(("127.0.0.1", grant.port))
        except OSError as exc:
            raise FuzzError(f"cannot connect to port {grant.port}: {exc.strerror}") from None

    listener = DirectListener("127.0.0.1", str(tmp_path / "cert.pem"),
                              str(tmp_path / "key.pem"), book, connect, _no_exec)
    listener.start()
    try:
        yield Agent(book, listener.port, ca_pem, opened)
    finally:
        listener.close()


@dataclass
class Running:
    gateway: Gateway
    services: Services
    ca: bytes

    def browser(self) -> Browser:
        return Browser("127.0.0.1", self.gateway.port, ca_context(self.ca))


@pytest.fixture
def running(tmp_path: Path, agent: Agent) -> Iterator[Running]:
    authority = pki.CertificateAuthority.create("gateway-test")
    key = pki.new_key()
    cert = tmp_path / "gateway.crt"
    cert.write_bytes(pki.cert_pem(authority.issue(key.public_key(), "gateway", ["127.0.0.1"])))
    key_file = tmp_path / "gateway.key"
    key_file.write_bytes(pki.key_pem(key))
    with serve_handler(ClosingHandler) as http_port, websocket_echo_server() as ws_port:
        services = Services(agent, {"web": http_port, "ws": ws_port})
        audit = AuditLog(tmp_path / "audit.log")
        parts = GatewayParts(services, IamDirectory(Store(tmp_path / "server.db")),
                             SignIns(3600.0), "", is_code=lambda _: False, audit=audit.record)
        gateway = Gateway("127.0.0.1:0", GatewayTls(cert, key_file))
        gateway.start(parts)
        try:
            yield Running(gateway, services, authority.cert_pem)
        finally:
            gateway.stop()
            services.idle.close()
            audit.close()


def _path(endpoint: str, rest: str) -> str:
    return EndpointAddress("olive", "nb", "svc", endpoint).path_prefix + rest


def test_a_large_download_is_byte_exact_and_one_tunnel_serves_every_request(
        running: Running) -> None:
    """Content-Length bodies pass the gateway unparsed: each download equals the file;
    the service closes after every answer, yet one ticket (one TLS connection to the
    agent) serves them all, reopening only the endpoint's port of its container."""
    connection = running.browser().connection()
    for _ in range(3):
        connection.request("GET", _path("web", "big"))
        response = connection.getresponse()
        data = response.read()
        assert response.status == 200 and not response.will_close
        assert (len(data), hashlib.sha256(data).digest()) == (
            len(BIG), hashlib.sha256(BIG).digest())
    connection.close()
    assert running.browser().request("GET", _path("web", "small")).body == b"small\n"
    assert running.services.granted == 1
    agent = running.services.agent
    assert agent.opened == [("c-web", running.services.ports["web"])] * 4


def test_a_large_upload_reaches_the_service_byte_exact(running: Running) -> None:
    body = os.urandom(5 * 2**20 + 7)
    answer = running.browser().request("POST", _path("web", "upload"), body=body)
    assert (answer.status, answer.body.decode()) == (
        200, f"{hashlib.sha256(body).hexdigest()} {len(body)}")


def test_a_websocket_echo_over_the_direct_port(running: Running) -> None:
    raw = socket.create_connection(("127.0.0.1", running.gateway.port))
    with ca_context(running.ca).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        messages = [f"hello {n}" for n in range(5)] + ["x" * 300_000]
        assert websocket_echo(sock, "127.0.0.1", _path("ws", ""), messages) == messages


def test_a_port_nothing_listens_on_is_502_with_the_agents_sentence(running: Running) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    running.services.ports["gone"] = closed.getsockname()[1]
    closed.close()
    answer = running.browser().request("GET", _path("gone", "x"))
    assert answer.status == 502 and b"cannot connect to port" in answer.body


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
