"""The agent's socket hand-off: where the endpoint gateway, on the agent's own host, is
given the connection to a service's port instead of a tunnel to it.

When the orchestrator and an agent share a host (and its network namespace: the agent
is reached on a loopback address), the TLS hop between them carries the service's
bytes from one process of the machine to another, encrypting and decrypting them and
copying them through the kernel twice more than the service's own socket would. The
agent instead listens on an abstract Unix socket named after its direct port
(:func:`handoff_address`); the gateway connects, presents a ticket of the same
:class:`~fuzz.substrate.rpc.direct.TicketBook` (granted through GrantAccess, as for the
direct port), and the agent opens the grant's port in the container's network
namespace and passes the connected socket over (``SCM_RIGHTS``) with one status byte
(:data:`~fuzz.rpc.direct.ACCEPTED`; or :data:`~fuzz.rpc.direct.REFUSED`, one sentence
and the close, as on the direct port). With a reusable ticket the gateway sends
:data:`~fuzz.rpc.direct.AGAIN` for each further connection. From then on the agent is
off the data path: the gateway reads and writes the service's socket itself.

Who may connect: anyone on the host can reach an abstract socket, so the ticket is the
authority, as on the direct TLS port; and the gateway checks the listener's
``SO_PEERCRED`` (root, or its own user: whoever could read its keys anyway) before it
sends a ticket, so that a process squatting the name learns none.
"""

from __future__ import annotations

import socket
import struct

_PEER_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def handoff_address(direct_port: int) -> bytes:
    """The abstract Unix socket address of the hand-off of the agent whose direct port is
    ``direct_port`` (unique in a network namespace, as the port is)."""
    return f"\0fuzz-agent-handoff-{direct_port}".encode()


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of the Unix socket ``sock``."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER_CREDENTIALS.size)
    return int(_PEER_CREDENTIALS.unpack(raw)[1])
