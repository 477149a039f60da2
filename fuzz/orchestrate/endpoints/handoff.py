"""The gateway's end of the socket hand-off (see :mod:`fuzz.rpc.handoff`): on an
agent's own host, the service's connected socket itself rather than a tunnel to it.

:class:`HandedOffConnection` is a :class:`~fuzz.orchestrate.endpoints.proxy.Backend`
over that socket: the gateway's thread reads the service's answer straight into one
preallocated buffer and writes its request with one ``sendall``; after a protocol
switch (WebSocket) the socket itself is the pipe's far end. The Unix connection to the
agent (the *link*) outlives each service connection: with a reusable ticket it waits
in :class:`~fuzz.orchestrate.endpoints.direct.IdleTunnels` and is reopened with
``AGAIN`` (one round trip on the host) for the next request, as a direct tunnel is.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable

from fuzz.orchestrate.endpoints.direct import DirectRefusedError
from fuzz.rpc.direct import ACCEPTED, AGAIN, BUFFER_BYTES, MAX_REFUSAL_BYTES, REFUSED
from fuzz.rpc.handoff import handoff_address, peer_uid

CONNECT_SECONDS = 10.0
LARGE_READ_BYTES = 1024 * 1024  # a service's reads, once one filled the first buffer


class HandedOffConnection:
    """A service's socket handed over by its agent, and the link it came by."""

    def __init__(self, link: socket.socket,
                 release: Callable[[HandedOffConnection], None] | None) -> None:
        """Over ``link`` (the ticket sent): receive the first socket (DirectRefusedError
        when the agent refused, OSError when the link failed). ``release`` takes the
        connection when it is closed and its link is sound, to :meth:`reopen` it later."""
        self.error: str | None = None
        self._link = link
        self._release = release
        self._link_sound = True
        self._open = False  # a service connection is open (close() ends it once)
        self._buffer = bytearray(BUFFER_BYTES)
        self._view = memoryview(self._buffer)
        self._service = self._receive()

    @classmethod
    def open(cls, direct_port: int, ticket: bytes,
             release: Callable[[HandedOffConnection], None] | None = None
             ) -> HandedOffConnection | None:
        """The hand-off of the agent on this host whose direct port is ``direct_port``,
        with ``ticket``; None (the ticket not sent) when there is none here, or its
        listener runs as neither root nor this process's user."""
        link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            link.settimeout(CONNECT_SECONDS)
            link.connect(handoff_address(direct_port))
            if peer_uid(link) not in (0, os.geteuid()):
                link.close()
                return None
        except OSError:
            link.close()
            return None
        try:
            link.sendall(ticket)
            return cls(link, release)
        except BaseException:
            link.close()
            raise

    def _small_buffer(self) -> None:
        """The first buffer (again, after a service connection that needed the large one)."""
        if len(self._buffer) != BUFFER_BYTES:
            self._buffer = bytearray(BUFFER_BYTES)
            self._view = memoryview(self._buffer)

    def _receive(self) -> socket.socket:
        """The agent's answer: its socket, or DirectRefusedError with its sentence."""
        try:
            message, fds, _, _ = socket.recv_fds(self._link, 1 + MAX_REFUSAL_BYTES, 1)
        except OSError as exc:
            self._link_sound = False
            self.error = str(exc) or type(exc).__name__
            raise
        if message[:1] == bytes([ACCEPTED]) and len(fds) == 1:
            service = socket.socket(fileno=fds[0])
            service.setblocking(True)
            self._open = True
            return service
        for fd in fds:
            os.close(fd)
        self._link_sound = False
        self.error = (message[1:].decode("utf-8", "replace") if message[:1] == bytes([REFUSED])
                      else "") or "the agent closed the connection"
        raise DirectRefusedError(self.error)

    @property
    def reusable(self) -> bool:
        """Whether the link can open the port again."""
        return self._link_sound

    def reopen(self) -> None:
        """A new connection to the same port over the link (only when :attr:`reusable`);
        DirectRefusedError or OSError when there is none."""
        if not self.reusable:
            raise ValueError("only a sound link opens the port again")
        self.error = None
        if self._open:
            self._open = False
            self._service.close()
        self._small_buffer()
        try:
            self._link.sendall(bytes([AGAIN]))
        except OSError:
            self._link_sound = False
            raise
        self._service = self._receive()

    def send(self, data: bytes) -> None:
        """Send ``data`` to the service."""
        try:
            self._service.sendall(data)
        except OSError as exc:
            self.error = self.error or str(exc) or type(exc).__name__
            raise

    def recv(self) -> memoryview:
        """What the service sends next, one read into the connection's buffer (valid until
        the next call); empty once it has sent everything. A read that fills the buffer
        makes it :data:`LARGE_READ_BYTES` for the rest of this service connection: a large
        body then crosses the gateway in a quarter as many pieces (each a hand-over
        between the gateway's two threads, :mod:`.browsertls`), and only a connection
        that carries one holds the larger buffer."""
        try:
            size = self._service.recv_into(self._buffer)
        except OSError as exc:
            self.error = self.error or str(exc) or type(exc).__name__
            raise
        view = self._view[:size]  # keeps its buffer alive when the next one replaces it
        if size == len(self._buffer) < LARGE_READ_BYTES:
            self._buffer = bytearray(LARGE_READ_BYTES)
            self._view = memoryview(self._buffer)
        return view

    def socket(self) -> socket.socket:
        """The service's socket itself."""
        return self._service

    def finish(self) -> None:
        """End the service's connection (the link is kept: see :meth:`close`)."""
        self.close()

    def close(self) -> None:
        """End the service's connection; a sound link goes to ``release``."""
        if not self._open:
            return
        self._open = False
        self._service.close()
        self._small_buffer()
        if self._release is not None and self.reusable:
            self._release(self)
        else:
            self.discard()

    def discard(self) -> None:
        """Close the service's connection and the link."""
        self._release = None
        self._link_sound = False
        with contextlib.suppress(OSError):
            self._service.close()
        self._link.close()
