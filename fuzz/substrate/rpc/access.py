"""Interactive access to running containers: the agent's Exec and PortForward streams.

Each call holds a server worker (which sends) and one thread of its own (which
takes the caller's messages) for as long as it lasts; when the call ends for
any reason, what it started is ended too (the process killed, the connection
shut down). See ``fuzz/api/substrate.proto`` for the stream semantics.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import grpc

from fuzz.api import substrate_pb2
from fuzz.errors import FuzzError
from fuzz.rpc.server import StatusTable, abort_with
from fuzz.rpc.tunnel import END_FRAME, Frame, SharedSocket, data_frame
from fuzz.substrate.rpc.direct import DirectListener, Grant, TicketBook
from fuzz.substrate.rpc.handoff import HandoffListener
from fuzz.substrate.rpc.jobs import NodeJobs
from fuzz.substrate.runtime.containers import ContainerNotFoundError, ContainerStateError
from fuzz.substrate.runtime.execproc import (
    ExecProcess,
    ExecRequestError,
    ExecSpec,
    ExecStartError,
    write_all,
)
from fuzz.substrate.runtime.netns import PortUnreachableError, connect_in_netns

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
MAX_PORT = 65535

_STATUS: StatusTable = (
    (ExecRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (ContainerNotFoundError, grpc.StatusCode.NOT_FOUND),
    (ContainerStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (PortUnreachableError, grpc.StatusCode.FAILED_PRECONDITION),
    (ExecStartError, grpc.StatusCode.FAILED_PRECONDITION),
)


def _exec_spec(container_id: str, start: substrate_pb2.ExecStart) -> ExecSpec:
    """What ``start`` asks to run in ``container_id`` (ExecRequestError if it is invalid)."""
    return ExecSpec(container_id, tuple(start.args), tuple(start.env), start.cwd, start.tty,
                    start.window.rows, start.window.columns)


def _feed_stdin(requests: Iterator[substrate_pb2.ExecInput], process: ExecProcess) -> None:
    """Pass the caller's stdin and window sizes on; close stdin when the caller is done."""
    try:
        for message in requests:
            kind = message.WhichOneof("input")
            if kind == "stdin":
                write_all(process.stdin, message.stdin)
            elif kind == "resize":
                process.resize(message.resize.rows, message.resize.columns)
    except (grpc.RpcError, OSError):
        pass  # the call ended, or the process stopped reading: nothing more to pass on
    finally:
        process.close_stdin()


def _feed_socket(frames: Iterator[Frame], conn: SharedSocket, failed: list[str]) -> None:
    """Send the caller's bytes; half-close when the caller is done, shut down on a failure."""
    try:
        for frame in frames:
            if isinstance(frame, memoryview):
                conn.sock.sendall(frame)
        conn.shutdown(socket.SHUT_WR)
    except grpc.RpcError:
        conn.shutdown()
    except OSError as exc:
        failed.append(exc.strerror or str(exc))
        conn.shutdown()
    finally:
        conn.release()


class AccessRpcs(NodeJobs):
    """The Exec, PortForward and GrantAccess methods of the Substrate servicer (a mixin)."""

    _direct: tuple[TicketBook, DirectListener] | None = None
    _handoff: HandoffListener | None = None

    def open_direct_port(self, host: str, cert: str, key: str) -> DirectListener:
        """Serve the direct port-forward path on ``host`` with the node's certificate
        (see :mod:`fuzz.substrate.rpc.direct`), and its socket hand-off for a gateway on
        this host (:mod:`fuzz.rpc.handoff`; without it, where its name is taken); the
        caller closes the listener, then :meth:`close_handoff`."""
        book = TicketBook()
        listener = DirectListener(host, cert, key, book, self._connect_grant,
                                  self._start_process)
        self._direct = (book, listener)
        listener.start()
        try:
            self._handoff = HandoffListener(listener.port, book, self._connect_grant)
        except OSError as exc:
            logger.warning("no socket hand-off for direct port %d: %s", listener.port, exc)
        else:
            self._handoff.start()
        return listener

    def close_handoff(self) -> None:
        """Stop the socket hand-off (if it runs)."""
        if self._handoff is not None:
            self._handoff.close()

    def _connect_grant(self, grant: Grant) -> socket.socket:
        pid = self.jobs().containers.running_pid(grant.container_id)
        return connect_in_netns(pid, grant.port, CONNECT_TIMEOUT,
                                f"container {grant.container_id}")

    def _start_process(self, spec: ExecSpec) -> ExecProcess:
        """Start ``spec``'s process in its container, which must be running."""
        return self.jobs().containers.start_exec(spec)

    def GrantAccess(self, request: substrate_pb2.AccessGrant,
                    context: grpc.ServicerContext) -> substrate_pb2.AccessGrantReply:
        """Register a single-use ticket (its hash) for a port of a running container;
        answers the direct port (0: this agent has none, the caller relays instead)."""
        if self._direct is None:
            return substrate_pb2.AccessGrantReply(direct_port=0)
        is_exec = request.HasField("exec")
        if len(request.ticket_sha256) != 32 or (
                request.port != 0 if is_exec else not 0 < request.port <= MAX_PORT):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "a grant needs a SHA-256 ticket hash, and a port 1-65535 or an exec")
        try:
            spec = _exec_spec(request.container_id, request.exec) if is_exec else None
            self.jobs().containers.running_pid(request.container_id)  # it must be running
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        book, listener = self._direct
        book.grant(request.ticket_sha256, request.container_id, request.port, request.user,
                   request.ttl_seconds, request.reusable, spec)
        return substrate_pb2.AccessGrantReply(direct_port=listener.port)

    def Exec(self, request_iterator: Iterator[substrate_pb2.ExecInput],
             context: grpc.ServicerContext) -> Iterator[substrate_pb2.ExecOutput]:
        """Run a process in a running container, streaming its stdio, then its exit code."""
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("input") != "start":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be start")
        try:
            spec = _exec_spec(first.start.container_id, first.start)
            process = self._start_process(spec)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        context.add_callback(process.kill)
        threading.Thread(target=_feed_stdin, args=(request_iterator, process),
                         name=f"exec-stdin-{spec.container_id}", daemon=True).start()
        try:
            for stream, data in process.output():
                yield (substrate_pb2.ExecOutput(stdout=data) if stream == "stdout"
                       else substrate_pb2.ExecOutput(stderr=data))
            code = process.wait()
        finally:
            process.close()
        yield substrate_pb2.ExecOutput(exit_code=code)

    def PortForward(self, request_iterator: Iterator[Frame],
                    context: grpc.ServicerContext) -> Iterator[bytes]:
        """Relay a TCP connection to a port inside a running container's network namespace.

        Frames come and go serialized (see :func:`add_substrate_service`).
        """
        first = next(request_iterator, None)
        if not isinstance(first, substrate_pb2.PortForwardFrame) or (
                first.WhichOneof("frame") != "open"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first frame must be open")
        target = first.open
        if not 0 < target.port <= MAX_PORT:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"port {target.port} is not a TCP port (1-{MAX_PORT})")
        try:
            pid = self.jobs().containers.running_pid(target.container_id)
            conn = SharedSocket(connect_in_netns(pid, target.port, CONNECT_TIMEOUT,
                                                 f"container {target.container_id}"))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        context.add_callback(conn.shutdown)  # the call ended: wake both threads
        failed: list[str] = []
        writer = threading.Thread(target=_feed_socket, args=(request_iterator, conn, failed),
                                  name=f"forward-{target.container_id}", daemon=True)
        writer.start()
        try:
            for data in conn.chunks():
                yield data_frame(data)
            yield END_FRAME
            writer.join()  # the caller may still be sending: the call lasts until it is done
        except OSError as exc:  # reset by the far side
            failed.append(exc.strerror or str(exc))
            conn.shutdown()
        finally:
            conn.release()
        if failed:
            context.abort(grpc.StatusCode.ABORTED,
                          f"port {target.port} in container {target.container_id}: {failed[0]}")
