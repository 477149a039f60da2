"""A reference for the endpoint's data path: its three hops with nothing but Python and
OpenSSL.

A source process answers each connection with one HTTP/1.0 response of ``size`` bytes
on a plain socket; relay A (where the agent is) reads it and writes it into TLS; relay
B (where the gateway is) reads that TLS and writes it into a second TLS connection, to
the client. Each is a process of its own with blocking sockets, reads of 256 KiB into
one preallocated buffer and one ``sendall`` each: no chunk framing, no HTTP parsing,
no tickets, no threads. The same client reads it through the relays and from the source
directly: the ratio of the two is what a relay of the same hops reaches on the same
cores when it does nothing but copy and TLS.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class Chain:
    """Where the client connects: ``relay_port`` with TLS (``context``, ``server_name``),
    ``source_port`` plainly; and the pids of the source and the relays."""

    relay_port: int
    source_port: int
    context: ssl.SSLContext
    server_name: str
    pids: dict[str, int]  # by part: source, relay_a, relay_b

    def through(self) -> socket.socket:
        """A TLS connection to relay B."""
        return self.context.wrap_socket(_connected(self.relay_port),
                                        server_hostname=self.server_name)

    def direct(self) -> socket.socket:
        """A plain connection to the source."""
        return _connected(self.source_port)


@contextlib.contextmanager
def relay_chain(cert: Path, key: Path, ca: Path, server_name: str, size: int
                ) -> Iterator[Chain]:
    """Run the source and both relays while in the block (TLS servers with ``cert`` and
    ``key``, clients verifying against ``ca`` for ``server_name``)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(ca))
    source, relay_a, relay_b = _listener(), _listener(), _listener()
    fork = multiprocessing.get_context("fork")
    processes = [
        fork.Process(target=_serve, args=(source, lambda sock: _answer(sock, size)),
                     daemon=True),
        fork.Process(target=_serve, args=(relay_a, lambda sock: _relay(
            server.wrap_socket(sock, server_side=True), _connected(_port(source)))),
                     daemon=True),
        fork.Process(target=_serve, args=(relay_b, lambda sock: _relay(
            server.wrap_socket(sock, server_side=True),
            client.wrap_socket(_connected(_port(relay_a)), server_hostname=server_name))),
                     daemon=True),
    ]
    for process in processes:
        process.start()
    try:
        pids = {part: int(process.pid or 0) for part, process in
                zip(("source", "relay_a", "relay_b"), processes, strict=True)}
        yield Chain(_port(relay_b), _port(source), client, server_name, pids)
    finally:
        for process in processes:
            process.kill()
            process.join()
        for listener in (source, relay_a, relay_b):
            listener.close()


def _listener() -> socket.socket:
    return socket.create_server(("127.0.0.1", 0))


def _port(listener: socket.socket) -> int:
    return int(listener.getsockname()[1])


def _connected(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _serve(listener: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    """Accept and handle one connection after another, until killed."""
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError), contextlib.closing(sock):
            handle(sock)


def _answer(sock: socket.socket, size: int) -> None:
    """One response of ``size`` random bytes (one chunk of them, sent over and over)."""
    sock.recv(CHUNK_BYTES)  # the request: whatever it is
    sock.sendall(f"HTTP/1.0 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
    chunk = memoryview(os.urandom(CHUNK_BYTES))
    while size > 0:
        sock.sendall(chunk[:size])
        size -= len(chunk[:size])


def _relay(near: socket.socket, far: socket.socket) -> None:
    """The request from ``near`` to ``far``, then all of ``far``'s answer to ``near``."""
    buffer = memoryview(bytearray(CHUNK_BYTES))
    with contextlib.closing(far):
        far.sendall(near.recv(CHUNK_BYTES))
        while True:
            count = 0  # the buffer filled (a TLS read gives one record): large writes
            while count < len(buffer) and (got := far.recv_into(buffer[count:])):
                count += got
            near.sendall(buffer[:count])
            if count < len(buffer):
                return
