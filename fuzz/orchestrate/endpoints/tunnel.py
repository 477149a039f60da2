"""A connection to a port in a task's network namespace, over the agent's PortForward.

The gateway's thread sends and receives on the stream itself (:meth:`AgentTunnel.send`
queues data frames for gRPC's request thread, :meth:`AgentTunnel.recv` takes the next
reply frame), so an HTTP exchange costs no thread and no copy of our own. After a
protocol switch (WebSocket) the gateway waits on the browser's socket and the
service's at once with ``select``, which needs a socket: :meth:`AgentTunnel.socket`
then puts a socket pair in front of the stream, with a thread each way, as
:mod:`fuzz.cli.portforward` does towards the orchestrator.
"""

from __future__ import annotations

import queue
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
        """Open it (the call starts at once; a failure shows at the first :meth:`recv`)."""
        self.error: str | None = None
        self._outgoing: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._ended = False
        opening = substrate_pb2.PortForwardFrame(
            open=substrate_pb2.PortForwardOpen(container_id=container, port=port))
        self._call = agent.port_forward(self._requests(opening.SerializeToString()))
        self._replies = iter(self._call)
        self._name = f"endpoint-{container}-{port}"

    def _requests(self, opening: bytes) -> Iterator[bytes]:
        yield opening
        while (chunk := self._outgoing.get()) is not None:
            yield data_frame(chunk)

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the service."""
        if self._ended and self.error is not None:
            raise OSError(self.error)
        self._outgoing.put(data)

    def recv(self) -> bytes | memoryview:
        """The service's next bytes; empty once it has sent everything (OSError, and
        :attr:`error` set, when the call failed)."""
        if self._ended:
            return b""
        try:
            raw = next(self._replies)
        except StopIteration:
            self._ended = True
            return b""
        except FuzzError as exc:
            self._ended = True
            self.error = str(exc)
            raise OSError(self.error) from None
        frame = read_frame(raw)
        if isinstance(frame, memoryview):
            return frame
        self._ended = True  # end: the service has sent everything
        return b""

    def socket(self) -> socket.socket:
        """The rest of the connection as a socket (see the module's docstring)."""
        near, far = socket.socketpair()
        shared = SharedSocket(far)
        threading.Thread(target=self._outwards, args=(shared,), name=f"{self._name}-out",
                         daemon=True).start()
        threading.Thread(target=self._inwards, args=(shared,), name=f"{self._name}-in",
                         daemon=True).start()
        return near

    def _outwards(self, far: SharedSocket) -> None:
        try:
            for chunk in far.chunks():
                self._outgoing.put(chunk)
        except OSError:
            pass
        finally:
            self._outgoing.put(None)  # the gateway's end is done: half-close
            far.release()

    def _inwards(self, far: SharedSocket) -> None:
        try:
            while data := self.recv():
                far.sock.sendall(data)
            far.shutdown(socket.SHUT_WR)
        except OSError:
            self._call.cancel()
            far.shutdown()
        finally:
            far.release()

    def finish(self) -> None:
        """End the connection after a complete answer (nothing of it is kept)."""
        self.close()

    def close(self) -> None:
        """End the connection (the agent's call is cancelled)."""
        self._ended = True
        self._outgoing.put(None)
        self._call.cancel()
