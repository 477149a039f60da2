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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fuzz.orchestrate.endpoints.direct import DirectRefusedError, IdleTunnels
from fuzz.orchestrate.endpoints.handoff import HandedOffConnection
from fuzz.orchestrate.endpoints.proxy import (
    EndpointUnavailableError,
    Route,
)
from fuzz.substrate.rpc.direct import TicketBook
from fuzz.substrate.rpc.handoff import HandoffListener
from fuzz.testing.oci import free_port
from fuzz.testing.web import serve_handler
from tests.support.gatewaytest import (
    BLOCK,
    ClosingHandler,
    PortRoutes,
    RunningGateway,
    assert_big_downloads_whole,
    assert_unlistened_port_is_502,
    assert_upload_and_websocket_whole,
    endpoint_path,
    loopback_connector,
    raw_get,
    running_gateway,
    streamed_digest,
    streaming_service,
)
from tests.support.orchestratorutil import wait_until


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
    connect = loopback_connector(opened)
    direct_port = free_port()  # names the hand-off, as the agent's direct port does
    listener = HandoffListener(direct_port, book, connect)
    listener.start()
    try:
        yield Agent(book, direct_port, opened)
    finally:
        listener.close()


@dataclass
class Services(PortRoutes):
    """The test's resolver: endpoints ``web`` (container ``c-web``) and ``ws``
    (``c-ws``), public, their sockets handed off by the agent."""

    agent: Agent
    granted: int = 0
    idle: IdleTunnels[HandedOffConnection] = field(default_factory=IdleTunnels)

    def close(self) -> None:
        """Close the idle links."""
        self.idle.close()

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


Running = RunningGateway[Services]


@pytest.fixture
def running(tmp_path: Path, agent: Agent) -> Iterator[Running]:
    with running_gateway(tmp_path, lambda ports: Services(ports, agent)) as gateway:
        yield gateway


def test_downloads_are_byte_exact_and_one_link_serves_every_request(running: Running) -> None:
    """The service closes after every answer, yet one ticket (one link to the agent)
    serves every request, each a new connection to the endpoint's port alone."""
    assert_big_downloads_whole(running)
    assert running.services.granted == 1
    assert running.services.agent.opened == [("c-web", running.services.ports["web"])] * 4


def test_an_upload_and_a_websocket_echo_through_handed_off_sockets(running: Running) -> None:
    assert_upload_and_websocket_whole(running)


def test_a_port_nothing_listens_on_is_502_with_the_agents_sentence(running: Running) -> None:
    assert_unlistened_port_is_502(running, running.services.ports)


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


def _senders() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "endpoint-sender"]


def _settled(read: Callable[[], int], quiet: float = 1.0) -> Callable[[], bool]:
    """A check that holds once ``read()`` has not changed for ``quiet`` seconds."""
    last = [read(), time.monotonic()]

    def check() -> bool:
        now = read()
        if now != last[0]:
            last[:] = [now, time.monotonic()]
            return False
        return time.monotonic() - last[1] >= quiet

    return check


def test_a_slow_reader_holds_the_service_back_and_a_second_thread_sends(
        running: Running) -> None:
    """A large body goes to the browser from a sender thread of its own while the
    connection's thread reads and encrypts; a browser that stops reading stops the
    service too (bounded buffers, not the whole body in the gateway's memory), and what
    it then reads is the body, byte-exact."""
    mebibytes = 96
    with streaming_service(mebibytes) as (port, streamed):
        running.services.ports["stream"] = port
        with raw_get(running, endpoint_path("stream", "x"), receive_buffer=65536) as (
                sock, head):
            wait_until("the service to be held back", _settled(lambda: streamed.sent))
            assert len(_senders()) == 1
            assert streamed.sent < mebibytes * len(BLOCK), "the gateway took the whole body"
            digest = hashlib.sha256(head.partition(b"\r\n\r\n")[2])
            received = len(head.partition(b"\r\n\r\n")[2])
            while received < mebibytes * len(BLOCK):
                data = sock.recv(1 << 20)
                assert data, f"the body ended short at {received}"
                digest.update(data)
                received += len(data)
            assert (received, digest.digest()) == (mebibytes * len(BLOCK),
                                                   streamed_digest(mebibytes))
    wait_until("the sender thread to end", lambda: not _senders())
    assert running.browser().request("GET", endpoint_path("web", "small")).body == b"small\n"


def test_a_browser_that_closes_mid_body_ends_the_relay_and_the_services_connection(
        running: Running) -> None:
    """The browser reads a few MiB of a large body and closes: the sender ends, the
    service's connection is closed (its writes fail), and the gateway serves on."""
    with streaming_service(256) as (port, streamed):
        running.services.ports["stream"] = port
        with raw_get(running, endpoint_path("stream", "x")) as (sock, _):
            received = 0
            while received < 4 * len(BLOCK):
                data = sock.recv(1 << 20)
                assert data
                received += len(data)
        wait_until("the service's writes to fail", lambda: streamed.broken)
        assert streamed.sent < 256 * len(BLOCK)
    wait_until("the sender thread to end", lambda: not _senders())
    assert_big_downloads_whole(running)


def test_a_service_that_closes_mid_body_cuts_the_browser_off_after_what_it_sent(
        running: Running) -> None:
    """A service that closes after 6 of its 16 MiB: the browser gets those 6 MiB, whole,
    then the connection's end (never a body completed by anything else), and the gateway
    serves on."""
    with streaming_service(16, cut_at=6) as (port, _):
        running.services.ports["cut"] = port
        with raw_get(running, endpoint_path("cut", "x")) as (sock, head):
            body = bytearray(head.partition(b"\r\n\r\n")[2])
            while data := sock.recv(1 << 20):
                body += data
    assert bytes(body) == BLOCK * 6
    wait_until("the sender thread to end", lambda: not _senders())
    assert_big_downloads_whole(running)
