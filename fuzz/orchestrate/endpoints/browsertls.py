"""The browser's TLS connection over memory BIOs, so that a large body's encryption and
its sending run in two threads.

An ``ssl.SSLSocket`` encrypts and sends in one call, on the one thread that serves the
connection: on two cores that thread alone bounded a large download (reading the
service, encrypting, then the kernel's loopback work of each ``send``, which the sender
pays for). :class:`BrowserTls` is the socket the gateway serves a TLS connection with
instead: an ``ssl.SSLObject`` between two ``ssl.MemoryBIO``\\ s in front of the TCP
socket, read and written as a socket is (``recv``, ``sendall``, ``pending``). Within
:meth:`BrowserTls.sending_behind`, ``sendall`` only encrypts, in the caller's thread
(OpenSSL releases the GIL in ``SSL_write``), and a sender thread of the block's own writes
the records to the TCP socket (the GIL released there too), at most
:data:`QUEUED_BYTES` of them waiting: a browser that reads slowly holds the service back
rather than filling the gateway's memory. The TLS state is only ever touched by the
connection's own thread; the sender touches nothing but the TCP socket.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from collections import deque
from collections.abc import Iterator

READ_BYTES = 256 * 1024  # one read of the TCP socket
WRITE_BYTES = 1024 * 1024  # encrypted at a time: the records of one write wait in memory
# records waiting for the sender thread: one write's at most (a longer queue measured
# page faults, glibc trimming its heap and growing it again piece after piece)
QUEUED_BYTES = WRITE_BYTES


class BrowserTls:
    """A server-side TLS connection over ``sock``, run through memory BIOs."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        """TLS with ``context`` over the accepted ``sock`` (call :meth:`handshake` first)."""
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._sender: _Sender | None = None
        self._eof = False  # the browser's end of the TCP connection has been read

    def handshake(self) -> None:
        """The TLS handshake (ssl.SSLError or OSError when it fails; its alert is sent)."""
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                self._send_records()
                if not self._fill():
                    raise ConnectionAbortedError("the browser closed during the handshake"
                                                 ) from None
                continue
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    self._send_records()
                raise
            self._send_records()  # the handshake's end (and TLS 1.3's session tickets)
            return

    def recv(self, size: int) -> bytes:
        """Up to ``size`` decrypted bytes (one record's at most, as an ``SSLSocket``
        gives), waiting for some; empty once the browser has closed (with or without
        TLS's close_notify). OpenSSL is asked only when it has bytes to work on: each
        call passes the GIL on, and a request should cost as few as an SSLSocket's."""
        while True:
            if self.pending() or self._eof:
                try:
                    data = self._tls.read(size)
                except ssl.SSLWantReadError:
                    pass
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return b""
                else:
                    if self._outgoing.pending:  # what reading made TLS answer (a key update)
                        self._send_records()
                    return data
                if self._eof:
                    return b""
            if self._outgoing.pending:
                self._send_records()
            self._fill()

    def pending(self) -> bool:
        """Whether :meth:`recv` has bytes to work on without reading the TCP socket (the
        rest of a record whose start has come is on its way: a peer writes whole ones)."""
        return self._tls.pending() > 0 or self._incoming.pending > 0

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and send it (hand it to the sender thread, within
        :meth:`sending_behind`); OSError when the browser's connection is gone."""
        view = memoryview(data).cast("B")
        for start in range(0, len(view), WRITE_BYTES):
            self._tls.write(view[start:start + WRITE_BYTES])  # a memory BIO takes it all
            self._send_records()

    @contextlib.contextmanager
    def sending_behind(self) -> Iterator[None]:
        """Within the block, :meth:`sendall` encrypts and a thread of the block's own
        sends; the block ends once everything is sent (OSError if it could not be, unless
        the block itself raised)."""
        timeout = self._sock.gettimeout()
        with _blocking_sends(self._sock, timeout):
            sender = self._sender = _Sender(self._sock, QUEUED_BYTES)
            try:
                yield
            except BaseException:
                self._sender = None
                with contextlib.suppress(OSError):
                    sender.close()
                raise
            self._sender = None
            sender.close()

    def _send_records(self) -> None:
        records = self._outgoing.read()
        if not records:
            return
        if self._sender is not None:
            self._sender.put(records)
        else:
            self._sock.sendall(records)

    def _fill(self) -> bool:
        """Read the TCP socket into the incoming BIO; False at its end."""
        data = self._sock.recv(READ_BYTES)
        if not data:
            self._eof = True
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    def fileno(self) -> int:
        """The TCP socket's descriptor (for ``select``)."""
        return self._sock.fileno()

    def settimeout(self, seconds: float | None) -> None:
        """The TCP socket's timeout for each read and send."""
        self._sock.settimeout(seconds)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        """Set an option of the TCP socket."""
        self._sock.setsockopt(level, option, value)

    def close(self) -> None:
        """Close the TCP socket."""
        self._sock.close()


@contextlib.contextmanager
def _blocking_sends(sock: socket.socket, timeout: float | None) -> Iterator[None]:
    """Within the block, ``sock`` blocks and its kernel times a send out after ``timeout``
    (``SO_SNDTIMEO``): ``sendall`` of a large piece is then one system call where Python's
    own timeout makes it a ``poll`` and a ``send`` (and a GIL hand-over) per buffer's worth."""
    seconds = 0 if timeout is None else timeout
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                    struct.pack("ll", int(seconds), int(seconds % 1 * 1e6)))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 0))
            sock.settimeout(timeout)


class _Sender:
    """A thread sending queued bytes to a socket in order, at most about ``limit`` bytes
    waiting (:meth:`put` waits for room)."""

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self._sock = sock
        self._limit = limit
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._closed = False
        self._error: OSError | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="endpoint-sender", daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> None:
        """Queue ``data`` (waiting while the queue is full); OSError once sending failed."""
        with self._changed:
            while self._queued >= self._limit and self._error is None:
                self._changed.wait()
            if self._error is not None:
                raise OSError(self._error.errno, f"the browser's connection: {self._error}")
            self._queue.append(data)
            self._queued += len(data)
            self._changed.notify_all()

    def close(self) -> None:
        """Wait until everything queued is sent and the thread ends; OSError if it failed."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()
        if self._error is not None:
            raise OSError(self._error.errno, f"the browser's connection: {self._error}")

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closed:
                    self._changed.wait()
                if not self._queue:
                    return
                data = self._queue.popleft()
            try:
                self._sock.sendall(data)
            except OSError as exc:
                with self._changed:
                    self._error = exc
                    self._queue.clear()
                    self._changed.notify_all()
                return
            with self._changed:
                self._queued -= len(data)
                self._changed.notify_all()
