"""The agent's end of the direct port-forward path: single-use tickets and a TLS port.

The orchestrator, once IAM and the curtain allowed a caller to forward to a port of a
task, registers a grant here (:meth:`TicketBook.grant`, through the GrantAccess RPC,
which only the orchestrator may call): the SHA-256 of a random ticket, the container
and port it opens, who it is for and how long it lasts (seconds). The caller presents
the ticket on :class:`DirectListener`'s TLS port; a ticket is redeemed at most once, only
before it expires, and opens exactly its grant's port of its grant's container: there
is nothing in the connection that could name another. An exec grant instead carries
the whole process the orchestrator decided on (command, env, cwd, terminal): its
connection runs that process in the grant's container, and only that
(:mod:`fuzz.substrate.rpc.direct_exec`). The book holds hashes only, and
no log line carries a ticket. Wire format and copying: :mod:`fuzz.rpc.direct`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fuzz.errors import FuzzError
from fuzz.rpc.direct import (
    ACCEPTED,
    AGAIN,
    IDLE_SECONDS,
    MAX_REFUSAL_BYTES,
    REFUSED,
    TICKET_BYTES,
    pump,
    server_context,
)
from fuzz.substrate.rpc.direct_exec import serve_exec
from fuzz.substrate.rpc.listener import ThreadedListener
from fuzz.substrate.runtime.execproc import ExecProcess, ExecSpec

logger = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 10.0  # TLS and the ticket must arrive within this
MAX_TTL_SECONDS = 60.0
MAX_CONNECTIONS = 256  # as many as the agent's gRPC workers


class TicketRefusedError(FuzzError):
    """A ticket that is unknown, used already or expired."""


@dataclass(frozen=True)
class Grant:
    """What one ticket opens, for whom, until when (``time.monotonic``)."""

    container_id: str
    port: int
    user: str
    expires: float
    reusable: bool = False  # the connection may open the port again (AGAIN)
    exec_spec: ExecSpec | None = None  # set: the connection runs this process (port 0)


class TicketBook:
    """The outstanding grants, by ticket hash."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """No grant yet."""
        self._grants: dict[bytes, Grant] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def grant(self, ticket_sha256: bytes, container_id: str, port: int, user: str,
              ttl_seconds: float, reusable: bool = False,
              exec_spec: ExecSpec | None = None) -> None:
        """Register a ticket (by its hash) for ``port`` of ``container_id`` (``reusable``:
        its connection may open that port again and again), or, with ``exec_spec`` (whose
        container is ``container_id``), for running that process once."""
        ttl = min(max(ttl_seconds, 0.0), MAX_TTL_SECONDS)
        now = self._clock()
        with self._lock:
            self._grants = {key: g for key, g in self._grants.items() if g.expires > now}
            self._grants[ticket_sha256] = Grant(container_id, port, user, now + ttl,
                                                  reusable, exec_spec)

    def redeem(self, ticket: bytes) -> Grant:
        """The grant of ``ticket``, used up; TicketRefusedError if there is none now."""
        digest = hashlib.sha256(ticket).digest()
        with self._lock:
            match = next((key for key in self._grants if hmac.compare_digest(key, digest)),
                         None)
            grant = self._grants.pop(match) if match is not None else None
        if grant is None or grant.expires <= self._clock():
            raise TicketRefusedError("the ticket is not valid (unknown, used or expired)")
        return grant


Connector = Callable[[Grant], socket.socket]
ExecStarter = Callable[[ExecSpec], ExecProcess]


class DirectListener(ThreadedListener):
    """The agent's direct TLS port: a thread accepting, a thread per connection."""

    def __init__(self, host: str, cert: str, key: str, book: TicketBook,
                 connect: Connector, start_exec: ExecStarter) -> None:
        """Listen on ``host`` (a free port), serving ``cert``/``key``; ``connect`` opens a
        grant's port, ``start_exec`` an exec grant's process (either raising FuzzError
        when it cannot)."""
        self._context = server_context(cert, key)
        server = socket.create_server((host, 0), backlog=128, family=_family(host))
        super().__init__(server, "direct-access", MAX_CONNECTIONS)
        self.port: int = server.getsockname()[1]
        self._book = book
        self._connect = connect
        self._start_exec = start_exec

    def serve(self, conn: socket.socket) -> None:
        """TLS, the ticket, then the grant's forward or exec."""
        try:
            conn.settimeout(HANDSHAKE_SECONDS)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._context.wrap_socket(conn, server_side=True) as tls:
                self._forward(tls)
        except (OSError, ValueError) as exc:
            logger.debug("direct connection ended: %s", exc)

    def _forward(self, tls: ssl.SSLSocket) -> None:
        ticket = receive_exactly(tls, TICKET_BYTES)
        try:
            grant = self._book.redeem(ticket)
        except FuzzError as exc:
            refuse(tls, exc)
            return
        if grant.exec_spec is not None:
            self._exec(tls, grant.exec_spec, grant.user)
            return
        while self._forward_once(tls, grant) and grant.reusable:
            tls.setblocking(True)
            tls.settimeout(IDLE_SECONDS)
            if receive_exactly(tls, 1) != bytes([AGAIN]):
                return

    def _forward_once(self, tls: ssl.SSLSocket, grant: Grant) -> bool:
        """One forwarded connection to the grant's port; False if it could not be opened."""
        target = open_granted(self._connect, grant, tls)
        if target is None:
            return False
        with contextlib.closing(target):
            logger.debug("direct port-forward for %s to port %d of container %s", grant.user,
                         grant.port, grant.container_id)
            tls.sendall(bytes([ACCEPTED]))
            pump(tls, target)
        return True


    def _exec(self, tls: ssl.SSLSocket, spec: ExecSpec, user: str) -> None:
        """Run the grant's process with the connection as its stdio."""
        try:
            process = self._start_exec(spec)
        except FuzzError as exc:
            refuse(tls, exc)
            return
        try:
            logger.debug("direct exec for %s in container %s", user, spec.container_id)
            try:
                tls.sendall(bytes([ACCEPTED]))
            except OSError:
                process.kill()
                process.wait()
                raise
            serve_exec(tls, process)
        finally:
            process.close()


def refuse(conn: socket.socket, exc: FuzzError) -> None:
    """Tell the client (of the direct port or the hand-off) why its ticket opens nothing."""
    logger.info("direct access refused: %s", exc)
    conn.settimeout(HANDSHAKE_SECONDS)  # after a pump the socket is non-blocking
    conn.sendall(bytes([REFUSED]) + str(exc).encode()[:MAX_REFUSAL_BYTES])


def open_granted(connect: Connector, grant: Grant, client: socket.socket
                 ) -> socket.socket | None:
    """The grant's port opened by ``connect`` (TCP_NODELAY set), or None once ``client``
    was told why it could not be."""
    try:
        target = connect(grant)
    except FuzzError as exc:
        refuse(client, exc)
        return None
    target.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return target


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``sock`` (a ticket, a one-byte answer); ConnectionError if the
    peer leaves first."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client left before its ticket")
        data += chunk
    return bytes(data)
