"""The agent's end of the socket hand-off (see :mod:`fuzz.rpc.handoff`): an abstract
Unix socket where a ticket of the direct port's book is exchanged for the connected
socket to the grant's port, passed with ``SCM_RIGHTS``."""

from __future__ import annotations

import contextlib
import logging
import socket

from fuzz.errors import FuzzError
from fuzz.rpc.direct import (
    ACCEPTED,
    AGAIN,
    IDLE_SECONDS,
    TICKET_BYTES,
)
from fuzz.rpc.handoff import handoff_address
from fuzz.substrate.rpc.direct import (
    HANDSHAKE_SECONDS,
    MAX_CONNECTIONS,
    Connector,
    Grant,
    TicketBook,
    open_granted,
    receive_exactly,
    refuse,
)
from fuzz.substrate.rpc.listener import ThreadedListener

logger = logging.getLogger(__name__)


class HandoffListener(ThreadedListener):
    """The hand-off socket of the agent whose direct port is ``direct_port``: a thread
    accepting, a thread per connection."""

    def __init__(self, direct_port: int, book: TicketBook, connect: Connector) -> None:
        """Bind the hand-off address (OSError if it is taken); ``connect`` opens a grant's
        port (raising FuzzError when it cannot)."""
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(handoff_address(direct_port))
            server.listen(128)
        except OSError:
            server.close()
            raise
        super().__init__(server, "handoff", MAX_CONNECTIONS)
        self._book = book
        self._connect = connect

    def serve(self, conn: socket.socket) -> None:
        """The ticket, then a connected socket for each connection the grant allows."""
        try:
            conn.settimeout(HANDSHAKE_SECONDS)
            ticket = receive_exactly(conn, TICKET_BYTES)
            try:
                grant = self._book.redeem(ticket)
                if grant.exec_spec is not None:
                    raise FuzzError("an exec ticket opens no port")
            except FuzzError as exc:
                refuse(conn, exc)
                return
            while self._hand_over(conn, grant) and grant.reusable:
                conn.settimeout(IDLE_SECONDS)
                if conn.recv(1) != bytes([AGAIN]):
                    return
        except OSError as exc:
            logger.debug("hand-off connection ended: %s", exc)

    def _hand_over(self, conn: socket.socket, grant: Grant) -> bool:
        """Open the grant's port and pass the socket; False if it could not be opened."""
        target = open_granted(self._connect, grant, conn)
        if target is None:
            return False
        with contextlib.closing(target):
            logger.debug("socket hand-off for %s of port %d of container %s", grant.user,
                         grant.port, grant.container_id)
            socket.send_fds(conn, [bytes([ACCEPTED])], [target.fileno()])
        return True
