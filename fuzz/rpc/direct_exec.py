"""The direct data path of exec: one TLS connection from the CLI to the agent.

The orchestrator decides the process (argv, env, cwd, tty, window: IAM, the curtain,
audit) and grants a single-use ticket for exactly it; the connection opens as a
port-forward's does (:mod:`fuzz.rpc.direct`: TLS 1.3, the ticket, one status byte) and
then carries frames both ways, each ``[kind: 1 byte][length: 4 bytes][payload]``:

- CLI -> agent: :data:`STDIN` (an empty one closes the process's stdin: the half-close),
  :data:`RESIZE` (rows and columns, two 16-bit numbers).
- agent -> CLI: :data:`STDOUT`, :data:`STDERR`, then :data:`EXIT` (a 32-bit signed exit
  code, 128+N for signal N), after which the agent closes.

Nothing in a frame can name another process or container: the ticket is the request.
:class:`FrameReader` and :class:`Outbox` read and write frames on a non-blocking TLS
socket with one preallocated buffer each: a bulk payload is read straight into the
outbox behind room kept for its header (one ``SSL_write`` a frame), and read out of
the reader's buffer as views (no Python bytes per chunk). Hand-written for the
reasons :mod:`fuzz.rpc.direct` gives (one thread per OpenSSL connection).
"""

from __future__ import annotations

import ssl
import struct

STDIN = 1
RESIZE = 2
STDOUT = 3
STDERR = 4
EXIT = 5
DATA_KINDS = frozenset({STDIN, STDOUT, STDERR})
HEADER = struct.Struct("!BI")
WINDOW = struct.Struct("!HH")
EXIT_CODE = struct.Struct("!i")
CONTROL_SIZES = {RESIZE: WINDOW.size, EXIT: EXIT_CODE.size}
BUFFER_BYTES = 256 * 1024
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class FrameError(ConnectionError):
    """The peer sent what is not a frame of this protocol."""


class FrameReader:
    """Frames from a non-blocking TLS socket, a piece at a time.

    :meth:`piece` answers the next piece: a data frame's payload in as many pieces as
    it arrives (an empty payload is its own piece: the end of that stream), a control
    frame's payload whole. :meth:`consume` says how much of the piece was used; the
    rest is answered again.
    """

    def __init__(self, sock: ssl.SSLSocket, size: int = BUFFER_BYTES) -> None:
        """Read from ``sock`` into a buffer of ``size`` bytes."""
        self.sock = sock
        self.buffer = bytearray(size)
        self.view = memoryview(self.buffer)
        self.start = self.end = 0
        self.kind = 0  # the data frame under way (0: none; a header comes next)
        self.left = 0  # its payload bytes still to come
        self.closed = False  # the peer closed the connection

    def piece(self) -> tuple[int, memoryview] | None:
        """The next piece ``(kind, payload)``, or None when nothing more is there now
        (:attr:`closed` when nothing more ever will be). Raises FrameError, OSError."""
        while True:
            if self.kind:
                if self.start < self.end:
                    count = min(self.left, self.end - self.start)
                    return self.kind, self.view[self.start:self.start + count]
            elif self.end - self.start >= HEADER.size:
                kind, length = HEADER.unpack_from(self.buffer, self.start)
                body = self.start + HEADER.size
                if kind in DATA_KINDS:
                    self.start = body
                    if length == 0:
                        return kind, self.view[body:body]
                    self.kind, self.left = kind, length
                    continue
                if CONTROL_SIZES.get(kind) != length:
                    raise FrameError(f"a frame of kind {kind} and {length} bytes is not expected")
                if self.end - body >= length:
                    self.start = body + length
                    return kind, self.view[body:body + length]
            if not self._read():
                return None

    def consume(self, count: int) -> None:
        """``count`` bytes of the last data piece were used."""
        self.start += count
        self.left -= count
        if self.left == 0:
            self.kind = 0

    def _read(self) -> bool:
        """Read more (after moving what is left to the front); False when nothing came."""
        if self.start == self.end:
            self.start = self.end = 0
        elif not self.kind:  # a header or a control frame in part: room after it
            self.buffer[:self.end - self.start] = self.view[self.start:self.end]
            self.end -= self.start
            self.start = 0
        got = 0
        while self.end < len(self.buffer):  # a record at a time, as much as is there
            try:
                count = self.sock.recv_into(self.view[self.end:])
            except WOULD_BLOCK:
                break
            if count == 0:
                self.closed = True
                break
            self.end += count
            got += count
        return got > 0


class Outbox:
    """What is waiting to go out on a non-blocking TLS socket: one frame, or a few small.

    A bulk payload is read into :meth:`room` (behind space for its header) and framed
    by :meth:`seal`; small frames are added with :meth:`add`. Either only when
    :meth:`empty`.
    """

    def __init__(self, sock: ssl.SSLSocket, size: int = BUFFER_BYTES) -> None:
        """Write to ``sock``; payloads of up to ``size`` bytes."""
        self.sock = sock
        self.buffer = bytearray(HEADER.size + size)
        self.view = memoryview(self.buffer)
        self.start = self.end = 0

    def empty(self) -> bool:
        """Whether everything added has gone out."""
        return self.start == self.end

    def room(self) -> memoryview:
        """Where a payload goes (the outbox is empty)."""
        return self.view[HEADER.size:]

    def seal(self, kind: int, count: int) -> None:
        """Frame the ``count`` bytes just read into :meth:`room` as ``kind``."""
        HEADER.pack_into(self.buffer, 0, kind, count)
        self.start, self.end = 0, HEADER.size + count

    def add(self, kind: int, payload: bytes) -> None:
        """Queue a small frame (the outbox is empty, or has room after what is there)."""
        if self.start == self.end:
            self.start = self.end = 0
        size = HEADER.size + len(payload)
        HEADER.pack_into(self.buffer, self.end, kind, len(payload))
        self.buffer[self.end + HEADER.size:self.end + size] = payload
        self.end += size

    def send(self) -> bool:
        """Send what is waiting, as much as the socket takes now; False when it took
        nothing (it would block)."""
        sent = False
        while self.start < self.end:
            try:
                self.start += self.sock.send(self.view[self.start:self.end])
            except WOULD_BLOCK:
                return sent
            sent = True
        return sent
