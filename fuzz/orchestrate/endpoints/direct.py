"""A connection to a port in a task's network namespace, over the agent's direct TLS port.

The data path of issue 21's port-forward (:mod:`fuzz.rpc.direct`), with the gateway
as its client: the orchestrator grants the agent a single-use ticket for the
service's endpoint port of the service's container (the only port the ticket can
open), opens TLS to the agent's direct port (the agent verified against the cluster
CA) and presents the ticket. From then on the gateway's thread reads and writes the
TLS socket itself, ``[length][bytes]`` chunks each way: no gRPC stream, no thread and
no queue per request. The ticket is *reusable*: once the service has closed its
connection and the answer is relayed, the TLS connection waits in :class:`IdleTunnels`
and the next request to the same port of the same container opens the port anew over
it (:meth:`DirectTunnel.reopen`; busybox httpd, for one, closes after every answer),
which spares a grant, a TCP connection and a TLS handshake per request.
:meth:`DirectTunnel.recv` returns a whole chunk as the agent
sent it (up to :data:`~fuzz.rpc.direct.BUFFER_BYTES`, one read of the service's
socket), into a buffer of its own, so a large body moves in few large pieces. After
a protocol switch (WebSocket), :meth:`DirectTunnel.socket` puts a socket pair in
front of the TLS socket, copied by :func:`~fuzz.rpc.direct.pump` in one thread.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, NoReturn, Protocol, TypeVar

from fuzz.rpc.direct import (
    ACCEPTED,
    AGAIN,
    BUFFER_BYTES,
    IDLE_SECONDS,
    MAX_REFUSAL_BYTES,
    REFUSED,
    TICKET_BYTES,
    pump,
)

CONNECT_SECONDS = 10.0
WRITE_JOINED = 64 * 1024  # smaller data goes behind its header in one TLS write
_HEADER = struct.Struct("!I")  # as fuzz.rpc.direct frames a chunk
_END = _HEADER.pack(0)
IDLE_KEPT_SECONDS = IDLE_SECONDS / 2  # well before the agent gives up waiting for AGAIN
# Each kept tunnel holds one of the agent's direct connections (256 at most, shared
# with port-forwards): few are kept.
MAX_IDLE_PER_PORT = 16
MAX_IDLE = 64
FINISH_SECONDS = 2.0  # a service that said it closes, closing
MAX_FINISH_BYTES = 64 * 1024  # ... and sending no more than this past its answer


class DirectRefusedError(OSError):
    """The agent refused the ticket, or could not open the port (its one sentence)."""


class DirectTunnel:
    """One forwarded connection, opened with ``ticket`` at the agent's ``host:port``."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, server_name: str,
                 ticket: bytes, release: Callable[[DirectTunnel], None] | None = None
                 ) -> None:
        """Connect, handshake and redeem ``ticket``; OSError (DirectRefusedError when the
        agent said no) if any of it fails. ``release`` takes the tunnel when it is
        closed after a clean end (a reusable ticket's), to :meth:`reopen` it later."""
        if len(ticket) != TICKET_BYTES:
            raise ValueError(f"a ticket is {TICKET_BYTES} bytes")
        self.error: str | None = None
        self._buffer = bytearray(BUFFER_BYTES)
        self._view = memoryview(self._buffer)
        self._header = bytearray(_HEADER.size)
        self._chunk_left = 0  # bytes of the agent's current chunk not yet read
        self._ended = False  # the agent's end mark was read
        self._sent_end = False
        self._pumping = False
        self._release = release
        raw = socket.create_connection((host, port), timeout=CONNECT_SECONDS)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._tls = context.wrap_socket(raw, server_hostname=server_name)
        except BaseException:
            raw.close()
            raise
        self._fd = self._tls.fileno()
        self._prefix = b""  # what goes before the next chunk: our end, AGAIN
        self._status_due = False  # the agent's answer to AGAIN is still to be read
        try:
            self._tls.settimeout(CONNECT_SECONDS)
            self._tls.sendall(ticket)
            self._read_status()
            self._tls.settimeout(None)
        except BaseException:
            self._tls.close()
            raise

    def _read_status(self) -> None:
        """The agent's answer to a ticket or AGAIN: DirectRefusedError unless accepted."""
        status = self._tls.recv(1)
        if status != bytes([ACCEPTED]):
            reason = self._tls.recv(MAX_REFUSAL_BYTES).decode("utf-8", "replace") \
                if status == bytes([REFUSED]) else "the agent closed the connection"
            self.error = reason or "the agent refused the connection"
            raise DirectRefusedError(self.error)

    @property
    def reusable(self) -> bool:
        """Whether the forwarded connection ended cleanly (the service closed it, and
        nothing failed), so that the port can be opened again over this one."""
        return self._ended and self.error is None and not self._pumping

    def reopen(self) -> None:
        """Open the port again, for a new forwarded connection (only when
        :attr:`reusable`). AGAIN goes with the first chunk sent, and the agent's answer
        is read before the first chunk received (DirectRefusedError there if it said
        no): no round trip of its own. OSError now when the agent has closed the
        connection meanwhile (it is readable: nothing else comes unasked)."""
        if not self.reusable:
            raise ValueError("only a tunnel whose connection ended cleanly opens again")
        if select.select([self._tls], [], [], 0)[0] or self._tls.pending():
            self.error = "the agent closed the idle connection"
            raise ConnectionResetError(self.error)
        self._prefix = bytes([AGAIN]) if self._sent_end else _END + bytes([AGAIN])
        self._ended = self._sent_end = False
        self._status_due = True

    def send(self, data: bytes) -> None:
        """Send ``data`` to the service, as one chunk (small ones in one write)."""
        if not data:
            return  # an empty chunk would end this direction
        head = self._prefix + _HEADER.pack(len(data))
        self._prefix = b""
        try:
            if len(data) < WRITE_JOINED:
                self._tls.sendall(head + data)
            else:
                self._tls.sendall(head)
                self._tls.sendall(data)
        except OSError as exc:
            self._failed(exc)

    def recv(self) -> memoryview:
        """The rest of the agent's current chunk (valid until the next call); empty once
        the service has sent everything."""
        if self._status_due:
            try:
                if self._prefix:  # nothing was sent since AGAIN: it goes alone
                    self._tls.sendall(self._prefix)
                    self._prefix = b""
                self._status_due = False
                self._read_status()
            except OSError as exc:
                self._failed(exc)
        while self._chunk_left == 0:
            if self._ended:
                return self._view[:0]
            self._read_into(memoryview(self._header))
            (self._chunk_left,) = _HEADER.unpack(self._header)
            self._ended = self._chunk_left == 0
        size = min(self._chunk_left, BUFFER_BYTES)
        self._read_into(self._view[:size])
        self._chunk_left -= size
        return self._view[:size]

    def _read_into(self, into: memoryview) -> None:
        got = 0
        try:
            while got < len(into):
                count = self._tls.recv_into(into[got:])
                if count == 0:
                    raise ConnectionResetError("the agent ended the connection mid-stream")
                got += count
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> NoReturn:
        self.error = self.error or str(exc) or type(exc).__name__
        raise exc

    def _pump(self, far: socket.socket) -> None:
        with contextlib.closing(far), contextlib.closing(self._tls), \
                contextlib.suppress(OSError):
            while self._chunk_left:  # what is left of a chunk half read: first
                far.sendall(self.recv())
            pump(self._tls, far)

    def socket(self) -> socket.socket:
        """The rest of the connection as a socket (see the module's docstring); from now
        on the pump's thread alone uses the TLS socket."""
        near, far = socket.socketpair()
        self._pumping = True
        threading.Thread(target=self._pump, args=(far,), name="endpoint-direct-pump",
                         daemon=True).start()
        return near

    def finish(self) -> None:
        """Wait (at most :data:`FINISH_SECONDS`) for the service's end, then close: the
        tunnel is kept when it came (see :meth:`close`)."""
        if self._release is not None and not self._pumping:
            with contextlib.suppress(OSError):
                self._tls.settimeout(FINISH_SECONDS)
                extra = 0  # past the answer: a service that closes has nothing more to say
                while extra <= MAX_FINISH_BYTES and (data := self.recv()):
                    extra += len(data)
                self._tls.settimeout(None)
        self.close()

    def discard(self) -> None:
        """Close it, kept or not."""
        self._release = None
        self.close()

    def close(self) -> None:
        """End the forwarded connection: a clean one goes to ``release`` (with the agent
        told of our end), any other is ended: the agent is told, then TLS closed (while
        the pump runs, the TCP connection is shut down under it instead, which ends it)."""
        if self._release is not None and self.reusable:
            try:
                self._tls.sendall(_END)
            except OSError:
                self.error = "the agent went away"
            else:
                self._sent_end = True
                self._release(self)
                return
        if self._pumping:
            with contextlib.suppress(OSError), \
                    socket.socket(fileno=os.dup(self._fd)) as duplicate:
                duplicate.shutdown(socket.SHUT_RDWR)
            return
        if not self._sent_end:
            self._sent_end = True
            with contextlib.suppress(OSError, ValueError):
                self._tls.setblocking(False)
                self._tls.send(_END)  # best effort: the agent ends cleanly
        with contextlib.suppress(OSError):
            self._tls.close()


class Reopenable(Protocol):
    """A connection to a service whose way there can open the port again: a
    :class:`DirectTunnel`, or a socket handed off by an agent on this host
    (:class:`~fuzz.orchestrate.endpoints.handoff.HandedOffConnection`)."""

    def reopen(self) -> None:
        """Open the port again over it (OSError: it cannot)."""

    def discard(self) -> None:
        """Close it for good."""


Kept = TypeVar("Kept", bound=Reopenable)


class IdleTunnels(Generic[Kept]):
    """Tunnels whose connection ended cleanly, by what they open (agent, container,
    port): the next connection there reopens one rather than a new tunnel. At most
    :data:`MAX_IDLE_PER_PORT` are kept per key and :data:`MAX_IDLE` in all, each for
    :data:`IDLE_KEPT_SECONDS` (older ones are closed as others are put)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """None idle yet."""
        self._idle: dict[Hashable, list[tuple[float, Kept]]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def put(self, key: Hashable, tunnel: Kept) -> None:
        """Keep ``tunnel`` (closed instead when enough are kept)."""
        now = self._clock()
        with self._lock:
            expired = [t for kept in self._idle.values() for since, t in kept
                       if now - since >= IDLE_KEPT_SECONDS]
            if expired:
                self._idle = {k: fresh for k, kept in self._idle.items() if (fresh := [
                    (since, t) for since, t in kept if now - since < IDLE_KEPT_SECONDS])}
            kept = self._idle.setdefault(key, [])
            total = sum(len(tunnels) for tunnels in self._idle.values())
            if len(kept) >= MAX_IDLE_PER_PORT or total >= MAX_IDLE:
                expired.append(tunnel)
                if not kept:
                    del self._idle[key]
            else:
                kept.append((now, tunnel))
        for old in expired:
            old.discard()

    def reopened(self, key: Hashable) -> Kept | None:
        """A kept tunnel for ``key``, reopened (None: none could be)."""
        while True:
            with self._lock:
                kept = self._idle.get(key)
                if not kept:
                    return None
                since, tunnel = kept.pop()
                if not kept:
                    del self._idle[key]
            if self._clock() - since < IDLE_KEPT_SECONDS:
                try:
                    tunnel.reopen()
                except OSError:
                    tunnel.discard()
                    continue  # the agent closed it meanwhile: the next, or a new one
                return tunnel
            tunnel.discard()

    def close(self) -> None:
        """Close every kept tunnel."""
        with self._lock:
            kept = [tunnel for tunnels in self._idle.values() for _, tunnel in tunnels]
            self._idle.clear()
        for tunnel in kept:
            tunnel.discard()
