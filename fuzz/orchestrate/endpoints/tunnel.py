"""A connection to a port in a task's network namespace, as a local socket.

The gateway speaks to a service through a socket pair: its end is an ordinary socket
(so one thread can wait on the browser's TLS socket and the service's at once, with
``select``, as a WebSocket needs), and two threads here pump the other end through
the agent's PortForward stream, as :mod:`fuzz.cli.portforward` does towards the
orchestrator: gRPC's request thread reads the pair into data frames, and a thread of
ours writes the agent's frames into the pair. The agent's end of data half-closes
the pair; a failed call shuts it down and keeps the reason for the gateway to show.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

from fuzz.api import substrate_pb2
from fuzz.clients.agent import AgentClient
from fuzz.errors import FuzzError
from fuzz.rpc.tunnel import SharedSocket, data_frame, read_frame


class AgentTunnel:
    """One forwarded connection to ``port`` of ``container`` on ``agent``'s node."""

    def __init__(self, agent: AgentClient, container: str, port: int) -> None:
        """Open it: ``self.sock`` is the gateway's end (the call starts at once)."""
        self.sock, far = socket.socketpair()
        self._far = SharedSocket(far)
        self.error: str | None = None
        opening = substrate_pb2.PortForwardFrame(
            open=substrate_pb2.PortForwardOpen(container_id=container, port=port))
        self._call = agent.port_forward(self._requests(opening.SerializeToString()))
        threading.Thread(target=self._replies, name=f"endpoint-{container}-{port}",
                         daemon=True).start()

    def _requests(self, opening: bytes) -> Iterator[bytes]:
        try:
            yield opening
            for chunk in self._far.chunks():
                yield data_frame(chunk)
        except OSError:
            pass  # the gateway's end went away: the reply side ends the call
        finally:
            self._far.release()

    def _replies(self) -> None:
        try:
            for raw in self._call:
                frame = read_frame(raw)
                if isinstance(frame, memoryview):
                    self._far.sock.sendall(frame)
                else:  # end: the service has sent everything
                    self._far.shutdown(socket.SHUT_WR)
        except FuzzError as exc:
            self.error = str(exc)
        except OSError:
            self._call.cancel()
        finally:
            self._far.shutdown()
            self._far.release()

    def close(self) -> None:
        """End the connection (the agent's call is cancelled)."""
        self._call.cancel()
        self.sock.close()
