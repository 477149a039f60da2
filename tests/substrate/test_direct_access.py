"""The agent's direct port-forward path: single-use tickets on a real TLS port.

A real :class:`DirectListener` (TLS 1.3 with a certificate of a real cluster CA) in
front of two echo servers on 127.0.0.1 that stand for two containers' ports; the
client is the CLI's own :func:`connect_direct` and :func:`pump`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fuzz.api import orchestrator_pb2 as pb
from fuzz.cli.portforward import DirectRefusedError, connect_direct
from fuzz.crypto import pki
from fuzz.errors import FuzzError
from fuzz.rpc.direct import pump
from fuzz.substrate.rpc.direct import DirectListener, Grant, TicketBook, TicketRefusedError
from fuzz.substrate.runtime.execproc import ExecProcess, ExecSpec
from tests.support.nodecerts import write_node_certificate

NODE = "node-a"


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _serve_tagged(tag: bytes) -> socket.socket:
    """A server on 127.0.0.1 that answers each connection with ``tag``, then echoes until
    the client's end, then ends its own side."""
    server = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(tag)
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)

    threading.Thread(target=run, daemon=True).start()
    return server


@dataclass
class Agent:
    """The listener, its book, the CA, and the two 'containers' behind it."""

    listener: DirectListener
    book: TicketBook
    clock: Clock
    ca_pem: bytes
    ports: dict[str, int]

    def grant(self, container: str, ttl: float = 10.0) -> pb.DirectTicket:
        """A new ticket for ``container``'s port, as the orchestrator would hand it out."""
        ticket = os.urandom(32)
        self.book.grant(hashlib.sha256(ticket).digest(), container, self.ports[container],
                        "alice", ttl)
        return self.ticket(ticket)

    def ticket(self, ticket: bytes) -> pb.DirectTicket:
        """What the CLI gets for ``ticket``."""
        return pb.DirectTicket(ticket=ticket, host="127.0.0.1", port=self.listener.port,
                               server_name=pki.node_dns_name(NODE), ca_pem=self.ca_pem)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    """A direct listener with a node certificate of a fresh CA, before containers a and b."""
    ca_pem = write_node_certificate(tmp_path, NODE)
    servers = {"a": _serve_tagged(b"A"), "b": _serve_tagged(b"B")}
    ports = {name: server.getsockname()[1] for name, server in servers.items()}
    by_port = {port: name for name, port in ports.items()}
    clock = Clock()
    book = TicketBook(clock)

    def connect(grant: Grant) -> socket.socket:
        if by_port.get(grant.port) != grant.container_id:
            raise FuzzError(f"no port {grant.port} in container {grant.container_id}")
        return socket.create_connection(("127.0.0.1", grant.port))

    listener = DirectListener("127.0.0.1", str(tmp_path / "cert.pem"),
                              str(tmp_path / "key.pem"), book, connect, _no_exec)
    listener.start()
    try:
        yield Agent(listener, book, clock, ca_pem, ports)
    finally:
        listener.close()
        for server in servers.values():
            server.close()


def _exchange(ticket: pb.DirectTicket, payload: bytes) -> bytes:
    """Connect with ``ticket``, send ``payload`` then half-close, and return all that came
    back (through the CLI's pump, from a local socket pair)."""
    tls = connect_direct(ticket)
    assert tls is not None
    local, far = socket.socketpair()
    received = bytearray()

    def client_side() -> None:
        far.sendall(payload)
        far.shutdown(socket.SHUT_WR)
        while data := far.recv(65536):
            received.extend(data)

    thread = threading.Thread(target=client_side)
    thread.start()
    with tls, local:
        sent, got = pump(tls, local)
    thread.join(timeout=30)
    far.close()
    assert (sent, got) == (len(payload), len(received))
    return bytes(received)


def test_a_ticket_opens_its_containers_port_once_and_both_halves_close(agent: Agent) -> None:
    payload = os.urandom(3 * 2**20 + 17)
    assert _exchange(agent.grant("a"), payload) == b"A" + payload
    assert _exchange(agent.grant("b"), b"hi") == b"Bhi"


def test_a_replayed_ticket_is_refused(agent: Agent) -> None:
    ticket = agent.grant("a")
    assert _exchange(ticket, b"first") == b"Afirst"
    with pytest.raises(DirectRefusedError, match="not valid"):
        connect_direct(ticket)


def test_a_forged_or_expired_ticket_is_refused(agent: Agent) -> None:
    with pytest.raises(DirectRefusedError, match="not valid"):
        connect_direct(agent.ticket(os.urandom(32)))
    expired = agent.grant("a", ttl=5)
    agent.clock.now += 6
    with pytest.raises(DirectRefusedError, match="not valid"):
        connect_direct(expired)


def test_a_ticket_reaches_only_the_container_and_port_it_was_granted_for(agent: Agent) -> None:
    ticket = os.urandom(32)
    # a grant naming container b but a's port: the agent connects to exactly the grant
    agent.book.grant(hashlib.sha256(ticket).digest(), "b", agent.ports["a"], "alice", 10)
    with pytest.raises(DirectRefusedError, match=r"no port \d+ in container b"):
        connect_direct(agent.ticket(ticket))
    assert _exchange(agent.grant("b"), b"") == b"B"


def test_the_book_redeems_by_hash_once() -> None:
    book = TicketBook(Clock())
    book.grant(hashlib.sha256(b"t" * 32).digest(), "a", 80, "alice", 10)
    assert book.redeem(b"t" * 32).container_id == "a"
    with pytest.raises(TicketRefusedError):
        book.redeem(b"t" * 32)


def test_an_agent_of_another_ca_is_not_trusted(agent: Agent) -> None:
    other = pki.CertificateAuthority.create("other")
    ticket = agent.grant("a")
    ticket.ca_pem = other.cert_pem
    assert connect_direct(ticket) is None  # not this cluster's agent: relay instead
    assert _exchange(agent.grant("a"), b"x") == b"Ax"


def _no_exec(spec: ExecSpec) -> ExecProcess:
    """No container here to exec in: say what was asked for."""
    raise FuzzError(f"no exec of {' '.join(spec.args)} in container {spec.container_id} here")


def test_an_exec_ticket_starts_its_grants_process_and_nothing_else(agent: Agent) -> None:
    ticket = os.urandom(32)
    spec = ExecSpec("b", ("id", "-u"), ("A=1",), "/tmp")
    agent.book.grant(hashlib.sha256(ticket).digest(), "b", 0, "alice", 10, exec_spec=spec)
    with pytest.raises(DirectRefusedError, match="no exec of id -u in container b here"):
        connect_direct(agent.ticket(ticket))
    with pytest.raises(DirectRefusedError, match="not valid"):
        connect_direct(agent.ticket(ticket))  # once only
    assert _exchange(agent.grant("a"), b"x") == b"Ax"  # a port's ticket runs nothing
