"""A listening socket served by one thread accepting and one thread per connection.

The agent's direct TLS port and its socket hand-off serve few, long connections
(a port-forward, an exec, a browser's endpoint link), each blocking on its own
sockets; a thread per connection keeps each one's code straight-line. At most
``limit`` are served at once: past that a new connection is closed at once, so a
flood of connections cannot grow the agent's threads without bound.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class ThreadedListener:
    """Serves the connections of a listening socket, each in a thread of its own."""

    def __init__(self, server: socket.socket, name: str, limit: int) -> None:
        """Serve ``server`` (bound and listening; closed by :meth:`close`), its threads
        named after ``name``, at most ``limit`` connections at once."""
        self._server = server
        self._name = name
        self._slots = threading.BoundedSemaphore(limit)

    def start(self) -> None:
        """Start accepting."""
        threading.Thread(target=self._accept, name=self._name, daemon=True).start()

    def close(self) -> None:
        """Stop accepting (connections under way go on until they end)."""
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()

    def serve(self, conn: socket.socket) -> None:
        """Serve one accepted connection (closing it is the caller's: this closes it after)."""
        raise NotImplementedError

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            if not self._slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._serve_one, args=(conn,),
                             name=f"{self._name}-connection", daemon=True).start()

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            with contextlib.closing(conn):
                self.serve(conn)
        finally:
            self._slots.release()
