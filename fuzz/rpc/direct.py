"""The direct data path of port-forward: one TLS connection from the CLI to the agent.

The control plane stays gRPC: the orchestrator decides (IAM, the curtain, audit) and
hands the CLI a single-use ticket and the agent's direct TLS address. The CLI opens
TLS to the agent, verifying its certificate against the cluster CA, and sends
the ticket (:data:`TICKET_BYTES` raw bytes); the agent answers one status byte
(:data:`ACCEPTED`, or :data:`REFUSED` followed by one UTF-8 sentence, then the close),
and from then on the connection carries the forwarded bytes both ways, as chunks of
up to :data:`BUFFER_BYTES` each behind a 4-byte length. An empty chunk ends its
direction, so a half-close crosses inside TLS and cannot be forged by a TCP FIN
(TLS's own close_notify cannot serve: Python's ``unwrap`` then reads on, and fails on
data still in flight).

A *reusable* ticket (the endpoint gateway's: a service such as busybox httpd closes
after every answer) keeps the TLS connection once both directions have ended: the
client sends :data:`AGAIN` and the agent opens the same grant's port anew and answers
with a status byte as above (the agent closes after :data:`IDLE_SECONDS` without
one). Only the grant's port of the grant's container is ever opened again.

:func:`pump` copies between the TLS socket and a plain one in one thread, with
non-blocking sockets and one preallocated buffer per direction: no Python object per
chunk, and writes as large as the buffer. It is hand-written because the standard
library has no such pump (``socket.sendfile`` is one way and cannot read TLS), and one
thread is needed: an OpenSSL connection must not be read and written at once from two.
Its loop does as little as it can per wake-up (a 64-byte round trip wakes it twice): each
direction's wait is one of four tuples made once, the poll set is rebuilt only when a
wait changed, and the TLS side is read and written through its OpenSSL connection
(:func:`_openssl`), not ``ssl.SSLSocket``'s Python wrappers.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Protocol, cast

from fuzz.rpc import native_pump
from fuzz.rpc.tls13 import prefer_aes128_gcm

TICKET_BYTES = 32
ACCEPTED = 0
REFUSED = 1
AGAIN = 2  # the client of a reusable ticket: open the grant's port once more
IDLE_SECONDS = 60.0  # a reusable connection waits this long for AGAIN, then closes
BUFFER_BYTES = 256 * 1024
MAX_REFUSAL_BYTES = 4096
_READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
_WRITABLE = select.POLLOUT | select.POLLHUP | select.POLLERR
_EVENTS = (_READABLE, _WRITABLE)
_HEADER = struct.Struct("!I")  # a chunk's length; 0 ends the direction
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _OpenSsl(Protocol):
    """What the pump calls on a TLS connection: ``ssl.SSLSocket``'s own methods of these
    names, or its OpenSSL connection's (the same calls, without the Python wrappers)."""

    def read(self, size: int, buffer: memoryview, /) -> int:
        """Up to ``size`` decrypted bytes into ``buffer``; SSLWantReadError when none."""

    def write(self, data: memoryview, /) -> int:
        """Seal and send up to all of ``data``; SSLWantWriteError when it cannot now."""

    def pending(self) -> int:
        """Decrypted bytes already read from the socket and not yet taken."""


def _openssl(tls: ssl.SSLSocket) -> _OpenSsl:
    """The OpenSSL connection under ``tls`` (CPython's ``_ssl._SSLSocket``), whose read,
    write and pending are what ``ssl.SSLSocket``'s call one to three Python frames down
    (``recv_into`` also makes a memoryview each time): reading it directly saves a few
    microseconds per wake-up, which is most of what the pump adds to a round trip
    (bench/pf_pump.py). Where there is none (another Python), ``tls`` itself, whose
    methods of the same names behave alike but for a TCP end without TLS's close: the
    wrapper reads 0 bytes, the connection raises ssl.SSLEOFError (an OSError either way
    to :func:`pump`'s callers)."""
    return cast(_OpenSsl, getattr(tls, "_sslobj", None) or tls)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The agent's side: TLS 1.3 with its node certificate, no session tickets (nothing
    but the forwarded bytes follows the handshake), AES-128-GCM first (:mod:`fuzz.rpc.tls13`)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    context.num_tickets = 0
    prefer_aes128_gcm(context)  # the server's order decides: AES-128-GCM, if it can be set
    return context


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    """The CLI's side: TLS 1.3, the agent verified against ``ca_pem`` (the cluster CA),
    AES-128-GCM first."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    prefer_aes128_gcm(context)
    return context


class _Direction:
    """One way of a pumped connection: what was read and not yet written."""

    def __init__(self, source: socket.socket, sink: socket.socket,
                 send: Callable[[memoryview], int], size: int) -> None:
        self.source, self.sink = source, sink
        self.send = send  # the sink's: plain ``send``, or the TLS connection's ``write``
        self.buffer = bytearray(size)
        self.view = memoryview(self.buffer)
        self.start = self.end = 0
        self.ended = False  # the source is at its end
        self.done = False  # ... and everything went on, and the sink knows
        self.drained = False  # the last read took all there was: wait before the next
        self.moved = 0  # payload bytes read
        self.waits: tuple[int, int] | None = None  # (fd, poll events) it is blocked on
        # one tuple per wait, made once: pump sees an unchanged wait by identity
        self.source_waits = {events: (source.fileno(), events) for events in _EVENTS}
        self.sink_waits = {events: (sink.fileno(), events) for events in _EVENTS}

    def step(self) -> None:
        """Write what is pending and read more, until blocked (``waits``) or done."""
        while True:
            if self.start < self.end:
                try:
                    self.start += self.send(self.view[self.start:self.end])
                except _WOULD_BLOCK as exc:
                    self.waits = self.sink_waits[_events(exc, _WRITABLE)]
                    return
                if self.start < self.end:
                    continue
            self.start = self.end = 0
            if self.ended:
                self.finish()
                self.done = True
                self.waits = None
                return
            if self.drained:  # a read now would only say so: let poll tell when
                self.drained = False
                self.waits = self.source_waits[_READABLE]
                return
            if not self.fill():
                return

    def fill(self) -> bool:
        """Read into the buffer; False when nothing came (``waits`` says for what)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Tell the sink that this direction has ended."""

    def blocked_on_read(self, exc: BaseException) -> bool:
        """Note that reading the source would block; False (nothing came)."""
        self.waits = self.source_waits[_events(exc, _READABLE)]
        return False


class _Sealing(_Direction):
    """Plain -> TLS: each read goes out as one chunk, ``[length][bytes]`` in one write;
    the plain side's end as an empty chunk."""

    def __init__(self, source: socket.socket, sink: ssl.SSLSocket, size: int) -> None:
        super().__init__(source, sink, _openssl(sink).write, size)
        self.room = self.view[_HEADER.size:]  # a chunk's bytes go behind its length
        self.room_bytes = len(self.room)

    def fill(self) -> bool:
        try:
            count = self.source.recv_into(self.room)
        except _WOULD_BLOCK as exc:
            return self.blocked_on_read(exc)
        _HEADER.pack_into(self.buffer, 0, count)
        self.end = _HEADER.size + count
        self.moved += count
        self.ended = count == 0
        self.drained = count < self.room_bytes  # a stream socket's short read emptied it
        return True


class _Opening(_Direction):
    """TLS -> plain: chunk bodies into the buffer (a record at a time, until the buffer is
    full or nothing more is there), headers into a small one; the empty chunk ends it."""

    def __init__(self, source: ssl.SSLSocket, sink: socket.socket, size: int) -> None:
        super().__init__(source, sink, sink.send, size)
        self.tls = _openssl(source)
        self.header = bytearray(_HEADER.size)
        self.header_view = memoryview(self.header)
        self.header_got = 0
        self.chunk_left = 0

    def fill(self) -> bool:
        size = len(self.view)
        while self.end < size:
            reading_header = self.chunk_left == 0
            into = (self.header_view[self.header_got:] if reading_header
                    else self.view[self.end:self.end + min(self.chunk_left, size - self.end)])
            try:
                count = self.tls.read(len(into), into)
            except _WOULD_BLOCK as exc:
                return True if self.end else self.blocked_on_read(exc)
            if count == 0:
                raise ConnectionResetError("the far side ended without closing its stream")
            if not reading_header:
                self.end += count
                self.chunk_left -= count
                self.moved += count
                if self.chunk_left == 0 and not self.tls.pending():
                    self.drained = True  # nothing decrypted is left: write, then poll
                    return True
                continue
            self.header_got += count
            if self.header_got == _HEADER.size:
                self.header_got = 0
                (self.chunk_left,) = _HEADER.unpack(self.header)
                if self.chunk_left == 0:
                    self.ended = True
                    return True
        return True

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            self.sink.shutdown(socket.SHUT_WR)


def _events(exc: BaseException, default: int) -> int:
    if isinstance(exc, ssl.SSLWantReadError):
        return _READABLE
    if isinstance(exc, ssl.SSLWantWriteError):
        return _WRITABLE
    return default


def _interest(first: tuple[int, int] | None, second: tuple[int, int] | None
              ) -> dict[int, int]:
    """The poll events each fd is waited on for, from both directions' waits."""
    interest = {} if first is None else {first[0]: first[1]}
    if second is not None:
        interest[second[0]] = interest.get(second[0], 0) | second[1]
    return interest


def pump(tls: ssl.SSLSocket, plain: socket.socket, buffer_bytes: int = BUFFER_BYTES
         ) -> tuple[int, int]:
    """Copy both ways between ``tls`` (chunked) and ``plain`` until both directions have
    ended; returns the bytes moved (plain -> tls, tls -> plain). Each end goes on as a
    half-close. Raises OSError (an ``ssl.SSLError`` among them) when either side fails,
    or the TLS side ends without its end mark. Leaves both sockets non-blocking and open.
    Runs in C (:mod:`fuzz.rpc.native_pump`) where it can, else :func:`pump_in_python`."""
    native = native_pump.pump(tls, plain, buffer_bytes)
    return pump_in_python(tls, plain, buffer_bytes) if native is None else native


def pump_in_python(tls: ssl.SSLSocket, plain: socket.socket, buffer_bytes: int = BUFFER_BYTES
                   ) -> tuple[int, int]:
    """:func:`pump` in Python: where the C pump cannot serve (another Python, a library
    not built), and the reference the C one is measured against (bench/pf_pump.py)."""
    tls.setblocking(False)
    plain.setblocking(False)
    outward = _Sealing(plain, tls, buffer_bytes)
    inward = _Opening(tls, plain, buffer_bytes)
    poller = select.poll()
    registered: dict[int, int] = {}
    ready: dict[int, int] = {}
    polled: tuple[tuple[int, int] | None, tuple[int, int] | None] = (None, None)
    while not (outward.done and inward.done):
        out_waits = outward.waits
        if not outward.done and (out_waits is None or ready.get(out_waits[0], 0) & out_waits[1]):
            outward.step()
            out_waits = outward.waits
        in_waits = inward.waits
        if not inward.done and (in_waits is None or ready.get(in_waits[0], 0) & in_waits[1]):
            inward.step()
            in_waits = inward.waits
        if out_waits is not polled[0] or in_waits is not polled[1]:
            polled = (out_waits, in_waits)
            interest = _interest(out_waits, in_waits)
            for fd in registered:
                if fd not in interest:
                    poller.unregister(fd)
            for fd, events in interest.items():
                if fd not in registered:
                    poller.register(fd, events)
                elif registered[fd] != events:
                    poller.modify(fd, events)
            registered = interest
        if registered:
            ready = dict(poller.poll())
    return outward.moved, inward.moved
