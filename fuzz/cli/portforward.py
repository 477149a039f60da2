"""Port-forwarding for the CLI: local TCP connections tunnelled to a port of a running job.

Each connection accepted on ``127.0.0.1:LOCAL`` first asks the orchestrator for a
single-use ticket (OpenPortForward: IAM, the curtain and audit decide there), then
goes straight to the agent of the job's node over TLS (:mod:`fuzz.rpc.direct`), which
connects to the port inside the job's network namespace. When the agent cannot be
reached from here (a node in a private network) or offers no direct path, the
connection becomes one bidirectional PortForward stream that the orchestrator relays.
It listens only while the task runs: a task that is not running (queued, finished,
failed) is refused before listening, and once a connection fails the task's state is
looked at again, so that forwarding ends with its task.
On the relayed path, per connection, gRPC's request thread reads the local socket into the stream
and a thread of ours writes the stream into the socket. When the local client
has sent everything, the request stream ends (the agent half-closes towards the
job); when the job has, an ``end`` frame arrives (we half-close towards the
local client). Every event goes to a :data:`Report` callback, as a dict.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fuzz.api import orchestrator_pb2 as pb
from fuzz.api import substrate_pb2
from fuzz.clients.orchestrator import OrchestratorClient, OrchestratorUnreachableError
from fuzz.errors import ConfigError, FuzzError
from fuzz.rpc.direct import ACCEPTED, MAX_REFUSAL_BYTES, client_context, pump
from fuzz.rpc.tunnel import SharedSocket, data_request
from fuzz.spec.workflowref import split_workflow_ref, task_key

LISTEN_HOST = "127.0.0.1"
MAX_PORT = 65535
BACKLOG = 128
# On Ctrl-C, connections still open get this long to finish what they were sending.
DRAIN_SECONDS = 2.0
# accept() wakes this often: a Ctrl-C the kernel hands to another thread (one of gRPC's)
# is acted on only when the main thread runs Python again.
ACCEPT_POLL = 0.5
# How long reaching the agent directly (TCP, TLS, the ticket's answer) may take before
# the connection is relayed through the orchestrator instead.
DIRECT_CONNECT_SECONDS = 5.0
Report = Callable[[dict[str, Any]], None]


class ListenError(FuzzError):
    """The local port cannot be listened on."""


class TaskNotRunningError(FuzzError):
    """The task is not running: there is nothing to forward to."""


@dataclass(frozen=True)
class ForwardTarget:
    """Where connections go: ``remote_port`` of task ``task`` of workflow ``workflow``
    (``NAME`` or ``OWNER/NAME``)."""

    workflow: str
    task: str
    remote_port: int


def check_running(client: OrchestratorClient, target: ForwardTarget) -> None:
    """TaskNotRunningError unless ``target``'s task runs now (and the other errors of
    reading its workflow: no such workflow or task, no server, a bad token)."""
    workflow = client.get_workflow(target.workflow)
    key = task_key(((t.key, t.job) for t in workflow.tasks), target.task, target.workflow)
    state = next(t.state for t in workflow.tasks if t.key == key)
    if state != "RUNNING":
        raise TaskNotRunningError(f"task {key} of workflow {target.workflow} is not running "
                                  f"({state}): nothing to forward to")


def parse_ports(text: str) -> tuple[int, int]:
    """``LOCAL:REMOTE`` (or one ``PORT`` for both) -> (local, remote); LOCAL 0 picks a free one."""
    local_text, _, remote_text = text.rpartition(":")
    if not local_text:
        local_text = remote_text
    try:
        local, remote = int(local_text), int(remote_text)
    except ValueError:
        raise ConfigError(f"ports {text!r}: expected LOCAL_PORT:REMOTE_PORT, e.g. 8888:8080"
                          ) from None
    if not 0 <= local <= MAX_PORT or not 0 < remote <= MAX_PORT:
        raise ConfigError(f"ports {text!r}: the local port must be 0-{MAX_PORT} "
                          f"(0: any free one) and the remote one 1-{MAX_PORT}")
    return local, remote


def listen(port: int) -> socket.socket:
    """A socket listening on ``127.0.0.1:port`` (ListenError saying why not)."""
    try:
        return socket.create_server((LISTEN_HOST, port), backlog=BACKLOG)
    except OSError as exc:
        raise ListenError(f"cannot listen on {LISTEN_HOST}:{port}: {exc.strerror or exc}"
                          ) from exc


class OpenConnections:
    """The forwarding threads still running, so that a stop can let them finish first."""

    def __init__(self) -> None:
        """No connection yet."""
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self.failed = threading.Event()  # set when a connection ended in an error
        # agents' direct addresses that could not be reached: relay at once from then on,
        # rather than wait on a firewall that drops for each connection
        self.unreachable: set[tuple[str, int]] = set()

    def start(self, client: OrchestratorClient, target: ForwardTarget, conn: socket.socket,
              number: int, report: Report) -> None:
        """Forward ``conn`` in a thread of its own, known here until it ends."""
        def run() -> None:
            try:
                if forward_connection(client, target, conn, number, report,
                                      self.unreachable) is not None:
                    self.failed.set()
            finally:
                with self._lock:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, name=f"forward-{number}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the open connections to end; how many did not."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        return sum(thread.is_alive() for thread in threads)


def serve(client: OrchestratorClient, target: ForwardTarget, server: socket.socket,
          report: Report, connections: OpenConnections) -> None:
    """Accept connections on ``server`` and forward each in a thread of its own, until
    the task no longer runs (TaskNotRunningError, looked at after a failed connection)."""
    host, port = server.getsockname()[:2]
    report({"event": "listening", "address": f"{host}:{port}", "workflow": target.workflow,
            "job": target.task, "remote_port": target.remote_port})
    number = 0
    server.settimeout(ACCEPT_POLL)
    while True:
        if connections.failed.is_set():
            connections.failed.clear()
            check_running(client, target)
        try:
            conn, peer = server.accept()
        except TimeoutError:
            continue
        number += 1
        report({"event": "open", "connection": number, "peer": f"{peer[0]}:{peer[1]}"})
        connections.start(client, target, conn, number, report)


class DirectRefusedError(FuzzError):
    """The agent refused the ticket's connection (the port is closed, the task ended)."""


def _open_request(target: ForwardTarget) -> pb.PortForwardRequest:
    ref = split_workflow_ref(target.workflow)
    return pb.PortForwardRequest(
        workflow=ref.name, owner=ref.owner, task=target.task,
        frame=substrate_pb2.PortForwardFrame(
            open=substrate_pb2.PortForwardOpen(port=target.remote_port)))


def connect_direct(ticket: pb.DirectTicket) -> ssl.SSLSocket | None:
    """The agent's direct connection for ``ticket``, accepted; None when the agent cannot
    be reached (relay instead); DirectRefusedError when it refuses."""
    tls = open_direct(ticket)
    if tls is None:
        return None
    try:
        return present_ticket(tls, ticket)
    except ConnectionError:
        return None


def open_direct(ticket: pb.DirectTicket) -> ssl.SSLSocket | None:
    """A TLS connection to ``ticket``'s agent, verified as the node; None when the agent
    cannot be reached in time (relay instead)."""
    try:
        raw = socket.create_connection((ticket.host, ticket.port), DIRECT_CONNECT_SECONDS)
    except OSError:
        return None
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client_context(ticket.ca_pem).wrap_socket(raw, server_hostname=ticket.server_name)
    except (OSError, ValueError):
        raw.close()
        return None


def present_ticket(tls: ssl.SSLSocket, ticket: pb.DirectTicket) -> ssl.SSLSocket:
    """``tls`` once the agent accepted ``ticket`` on it (closed and DirectRefusedError when
    it refuses, ConnectionError when the connection fails before its answer)."""
    try:
        tls.sendall(ticket.ticket)
        answer = tls.recv(1)  # the job's first bytes may follow in the same record
        if answer != bytes([ACCEPTED]):
            reason = _read_to_end(tls, MAX_REFUSAL_BYTES) if answer else b""
    except OSError as exc:
        tls.close()
        raise ConnectionError(f"the agent's direct connection failed: {exc}") from exc
    if answer == bytes([ACCEPTED]):
        return tls
    tls.close()
    if not answer:
        raise ConnectionError("the agent closed its direct connection without an answer")
    raise DirectRefusedError(reason.decode(errors="replace"))


def _read_to_end(sock: socket.socket, limit: int) -> bytes:
    data = b""
    while len(data) < limit and (chunk := sock.recv(limit - len(data))):
        data += chunk
    return data


def forward_connection(client: OrchestratorClient, target: ForwardTarget, conn: socket.socket,
                       number: int, report: Report,
                       unreachable: set[tuple[str, int]] | None = None) -> str | None:
    """Tunnel one accepted connection until both sides are done, straight to the agent
    when it can be reached, else through the orchestrator; report how it closed.
    ``unreachable`` holds the agents' direct addresses that failed (added to here): those
    are relayed to without trying. Returns the error it ended with (None: none)."""
    skip = unreachable if unreachable is not None else set()
    try:
        ticket = client.open_port_forward(_open_request(target))
        address = (ticket.host, ticket.port)
        direct = connect_direct(ticket) if ticket.port and address not in skip else None
        if ticket.port and direct is None:
            skip.add(address)
    except OrchestratorUnreachableError:  # an orchestrator without the direct path
        direct = None
    except FuzzError as exc:
        conn.close()
        return _closed(report, number, 0, 0, str(exc), "direct")
    if direct is None:
        return relay_connection(client, target, conn, number, report)
    with direct, conn:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sent, received = pump(direct, conn)
        except OSError as exc:
            return _closed(report, number, 0, 0, f"direct connection: {exc.strerror or exc}",
                           "direct")
    return _closed(report, number, sent, received, None, "direct")


def _closed(report: Report, number: int, sent: int, received: int, error: str | None,
            path: str) -> str | None:
    """Report a connection's end (``path``: ``direct`` to the agent, or ``relay``)."""
    report({"event": "close", "connection": number, "sent_bytes": sent,
            "received_bytes": received, "error": error, "path": path})
    return error


def relay_connection(client: OrchestratorClient, target: ForwardTarget, conn: socket.socket,
                     number: int, report: Report) -> str | None:
    """Tunnel one accepted connection through the orchestrator's PortForward relay until
    both sides are done; report how it closed. Returns the error it ended with."""
    shared = SharedSocket(conn)
    sent = [0]
    received = 0
    error: str | None = None

    def requests() -> Iterator[pb.PortForwardRequest | bytes]:
        try:
            yield _open_request(target)
            for chunk in shared.chunks():
                sent[0] += len(chunk)
                yield data_request(chunk)
        except OSError:
            pass  # reset by the local client: the reply side notices and ends the call
        finally:
            shared.release()

    call = client.port_forward(requests())
    try:
        for frame in call:
            if isinstance(frame, memoryview):
                shared.sock.sendall(frame)
                received += len(frame)
            else:  # end: the job has sent everything
                shared.shutdown(socket.SHUT_WR)
    except FuzzError as exc:
        error = str(exc)
    except OSError as exc:
        error = f"local connection: {exc.strerror or exc}"
        call.cancel()
    finally:
        shared.shutdown()  # wakes the request thread if it still reads
        shared.release()
    return _closed(report, number, sent[0], received, error, "relay")
