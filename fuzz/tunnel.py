"""What both ends of a port-forward tunnel share: chunk size and a socket two threads use.

A forwarded TCP connection is served by two threads at each end of the tunnel
(the CLI and the node agent): one copies the socket into the gRPC stream, the
other the stream into the socket. :class:`SharedSocket` lets either of them end
the connection (``shutdown`` wakes a thread blocked in ``recv``) and closes the
socket only once both have let go of it, so no thread ever uses a closed (and
perhaps reused) descriptor.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

# One gRPC message per chunk, large for throughput: measured on 2 cores, 1 MiB moved
# 200 MB with 30% less CPU than 256 KiB (gRPC's own per-message work dominates).
CHUNK_BYTES = 1024 * 1024
USERS = 2


class SharedSocket:
    """A connected socket used by a reading and a writing thread; closed when both are done."""

    def __init__(self, sock: socket.socket) -> None:
        """Share ``sock`` (connected); Nagle is turned off, for small round trips."""
        self.sock = sock
        self._users = USERS
        self._lock = threading.Lock()
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def chunks(self) -> Iterator[bytes]:
        """What the peer sends, chunk by chunk, until it shuts down writing (or we end it)."""
        while data := self.sock.recv(CHUNK_BYTES):
            yield data

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        """Shut the connection down (SHUT_WR: half-close); a dead connection is no error."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(how)

    def release(self) -> None:
        """One user is done with the socket; the last one closes it."""
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self.sock.close()
