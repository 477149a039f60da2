"""The endpoint gateway's data path on its agent's host: the socket hand-off.

A real :class:`HandoffListener` with its :class:`TicketBook` stands for the agent (its
"containers" are HTTP and WebSocket servers on 127.0.0.1, the HTTP one closing after
every answer, as busybox httpd does); the gateway is the real one (real TLS), and its
resolver is given the service's sockets through :class:`HandedOffConnection` with
reusable tickets, keeping idle links in :class:`IdleTunnels` as the orchestrator's does
(tests/e2e/test_endpoints_e2e.py runs it through a real agent and containers).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fuzz.crypto import pki
from fuzz.errors import FuzzError
from fuzz.orchestrate.endpoints.direct import DirectRefusedError, IdleTunnels
from fuzz.orchestrate.endpoints.gateway import Gateway, GatewayTls
from fuzz.orchestrate.endpoints.handoff import HandedOffConnection
from fuzz.orchestrate.endpoints.proxy import (
    EndpointNotFoundError,
    EndpointUnavailableError,
    GatewayParts,
    Route,
)
from fuzz.orchestrate.endpoints.sessions import SignIns
from fuzz.orchestrate.iam.audit import AuditLog
from fuzz.orchestrate.iam.directory import IamDirectory
from fuzz.orchestrate.store import Store
from fuzz.spec.endpoint_urls import EndpointAddress
from fuzz.substrate.rpc.direct import Grant, TicketBook
from fuzz.substrate.rpc.handoff import HandoffListener
from fuzz.testing.oci import free_port
from fuzz.testing.web import serve_handler
from tests.orchestrate.test_endpoint_direct import BIG, ClosingHandler
from tests.support.endpoints import Browser, ca_context, websocket_echo, websocket_echo_server


@dataclass
class Agent:
    """The hand-off listener's book and direct port; what it was asked to open."""

    book: TicketBook
    direct_port: int
    opened: list[tuple[str, int]] = field(default_factory=list)  # (container, port)

    def ticket(self, container: str, port: int, reusable: bool = True) -> bytes:
        """A ticket granted for ``port`` of ``container``."""
        ticket = os.urandom(32)
        self.book.grant(hashlib.sha256(ticket).digest(), container, port, "endpoint-gateway",
                        10.0, reusable)
        return ticket


@pytest.fixture
def agent() -> Iterator[Agent]:
    book = TicketBook()
    opened: list[tuple[str, int]] = []

    def connect(grant: Grant) -> socket.socket:
        opened.append((grant.container_id, grant.port))
        try:
            return socket.create_connection(("127.0.0.1", grant.port))
        except OSError as exc:
            raise FuzzError(f"cannot connect to port {grant.port}: {exc.strerror}") from None

    direct_port = free_port()  # names the hand-off, as the agent's direct port does
    listener = HandoffListener(direct_port, book, connect)
    listener.start()
    try:
        yield Agent(book, direct_port, opened)
    finally:
        listener.close()


@dataclass
class Services:
    """The test's resolver: endpoints ``web`` (container ``c-web``) and ``ws``
    (``c-ws``), public, their sockets handed off by the agent."""

    agent: Agent
    ports: dict[str, int]
    granted: int = 0
    idle: IdleTunnels[HandedOffConnection] = field(default_factory=IdleTunnels)

    def route(self, address: EndpointAddress) -> Route:
        if address.endpoint not in self.ports:
            raise EndpointNotFoundError(f"no endpoint {address.endpoint}")
        return Route(address, "public", "", self.ports[address.endpoint])

    def connect(self, route: Route) -> HandedOffConnection:
        key = (f"c-{route.address.endpoint}", route.port)
        reopened = self.idle.reopened(key)
        if reopened is not None:
            return reopened
        self.granted += 1
        handed = HandedOffConnection.open(self.agent.direct_port, self.agent.ticket(*key),
                                          lambda link: self.idle.put(key, link))
        if handed is None:
            raise EndpointUnavailableError("no hand-off here")
        return handed


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


def test_downloads_are_byte_exact_and_one_link_serves_every_request(running: Running) -> None:
    """The service closes after every answer, yet one ticket (one link to the agent)
    serves every request, each a new connection to the endpoint's port alone."""
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
    assert running.services.agent.opened == [("c-web", running.services.ports["web"])] * 4


def test_an_upload_and_a_websocket_echo_through_handed_off_sockets(running: Running) -> None:
    body = os.urandom(5 * 2**20 + 7)
    answer = running.browser().request("POST", _path("web", "upload"), body=body)
    assert (answer.status, answer.body.decode()) == (
        200, f"{hashlib.sha256(body).hexdigest()} {len(body)}")
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


def test_tickets_are_the_authority_and_a_single_use_one_opens_once(agent: Agent) -> None:
    """An unknown ticket is refused with the agent's sentence; a single-use ticket's link
    is closed by the agent after its one socket; no hand-off where none listens."""
    with pytest.raises(DirectRefusedError, match="not valid"):
        HandedOffConnection.open(agent.direct_port, os.urandom(32))
    with serve_handler(ClosingHandler) as port:
        handed = HandedOffConnection.open(agent.direct_port,
                                          agent.ticket("c", port, reusable=False))
        assert handed is not None
        handed.send(b"GET /small HTTP/1.0\r\n\r\n")
        answer = b""
        while data := handed.recv():
            answer += data
        assert answer.endswith(b"\r\n\r\nsmall\n")
        with pytest.raises(OSError):  # the agent closed the link after its one socket
            handed.reopen()
        handed.discard()
    assert agent.opened == [("c", port)]
    assert HandedOffConnection.open(free_port(), agent.ticket("c", port)) is None
