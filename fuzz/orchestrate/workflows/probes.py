"""A service's readiness probe, tried once through the agent of its node.

Every action runs inside the service's container or its network namespace, never
from the orchestrator's network: ``exec`` through the agent's Exec (the command in
the container), ``tcp-socket`` and ``http-get`` through its PortForward (the agent
connects to the port on the container's loopback, in its namespace). An http(s)
probe speaks HTTP/1.1 over that relayed connection with the standard library's
``http.client`` (over ``ssl`` without verification for HTTPS, as Kubernetes does),
through one end of a socket pair whose other end this module relays.
``grpc`` probes are not run: a start refuses them (reference §2.7.3 names them;
no catalog file uses one).

Each function returns None when the probe passed, else why it failed, in one line.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Iterator

from fuzz.api import substrate_pb2
from fuzz.clients.agent import AgentClient, AgentError
from fuzz.rpc.client import DuplexCall
from fuzz.spec.fuzzfile import ExecProbe, HttpProbe, ReadinessProbe, TcpProbe

CHUNK = 64 * 1024


def probe_once(agent: AgentClient, container: str, probe: ReadinessProbe) -> str | None:
    """Try ``probe`` once against ``container`` on ``agent``'s node, within its timeout."""
    timeout = float(probe.timeout_seconds)
    if probe.exec is not None:
        return _exec(agent, container, probe.exec, timeout)
    if probe.http_get is not None:
        return _http(agent, container, probe.http_get, timeout)
    if probe.tcp_socket is not None:
        return _tcp(agent, container, probe.tcp_socket, timeout)
    return "grpc readiness probes are not run by fuzz"


def _cancel_after(call: DuplexCall[object], timeout: float) -> threading.Timer:
    timer = threading.Timer(timeout, call.cancel)
    timer.daemon = True
    timer.start()
    return timer


def _exec(agent: AgentClient, container: str, action: ExecProbe, timeout: float) -> str | None:
    """Run the probe's command in the container: passed when it exits 0."""
    start = substrate_pb2.ExecInput(start=substrate_pb2.ExecStart(
        container_id=container, args=list(action.command)))
    call = agent.exec(iter([start]))
    timer = _cancel_after(call, timeout)  # type: ignore[arg-type]
    output = b""
    try:
        for reply in call:
            kind = reply.WhichOneof("output")
            if kind == "exit_code":
                if reply.exit_code == 0:
                    return None
                said = " ".join(output.decode(errors="replace").split())[-200:]
                return f"exec {action.command[0]}: exit code {reply.exit_code}" + \
                    (f": {said}" if said else "")
            output += reply.stdout if kind == "stdout" else reply.stderr
            output = output[-4096:]
    except AgentError as exc:
        if not timer.is_alive():
            return f"exec {action.command[0]}: no answer within {timeout:g}s (timeout-seconds)"
        return f"exec {action.command[0]}: {exc}"
    finally:
        timer.cancel()
    return f"exec {action.command[0]}: ended without an exit code"


def _frames(container: str, port: int, source: socket.socket | None
            ) -> Iterator[bytes]:
    """The PortForward frames to send: ``open``, then what ``source`` gives (if any)."""
    opening = substrate_pb2.PortForwardFrame(
        open=substrate_pb2.PortForwardOpen(container_id=container, port=port))
    yield opening.SerializeToString()
    if source is None:
        return
    while True:
        try:
            data = source.recv(CHUNK)
        except OSError:
            return
        if not data:
            return
        yield substrate_pb2.PortForwardFrame(data=data).SerializeToString()


def _tcp(agent: AgentClient, container: str, action: TcpProbe, timeout: float) -> str | None:
    """Connect to the port in the container's namespace: passed unless the agent says
    nothing accepts there (it answers at once: the connection is on the loopback)."""
    call = agent.port_forward(_frames(container, action.port, None))
    timer = _cancel_after(call, timeout)  # type: ignore[arg-type]
    try:
        for _ in call:  # the far side wrote or closed: it was connected
            break
    except AgentError as exc:
        if not timer.is_alive():  # connected and silent until the timeout: connected
            return None
        return f"tcp-socket port {action.port}: {exc}"
    finally:
        timer.cancel()
        call.cancel()
    return None


def _http(agent: AgentClient, container: str, action: HttpProbe, timeout: float
          ) -> str | None:
    """GET the probe's path on its port: passed on a 2xx or 3xx answer."""
    mine, relayed = socket.socketpair()
    call = agent.port_forward(_frames(container, action.port, relayed))
    pump = _Pump(call, relayed)
    pump.start()
    where = f"http-get {action.scheme.lower()}://localhost:{action.port}{action.path}"
    try:
        mine.settimeout(timeout)
        sock: socket.socket = mine
        if action.scheme == "HTTPS":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(mine, server_hostname="localhost")
        connection = http.client.HTTPConnection("localhost", action.port, timeout=timeout)
        connection.sock = sock
        headers = {header.name: header.value for header in action.http_headers}
        connection.request("GET", action.path, headers=headers)
        status = connection.getresponse().status
    except TimeoutError:
        return f"{where}: no answer within {timeout:g}s (timeout-seconds)"
    except (OSError, http.client.HTTPException) as exc:
        pump.join(timeout)
        return f"{where}: {pump.failure or exc or type(exc).__name__}"
    finally:
        call.cancel()
        with contextlib.suppress(OSError):
            mine.close()
    if 200 <= status < 400:
        return None
    return f"{where}: HTTP {status}"


class _Pump(threading.Thread):
    """Writes the agent's data frames into the relayed end of the socket pair, and
    closes it when the call ends; ``failure``: why the agent ended the call, if it did."""

    def __init__(self, call: DuplexCall[bytes], relayed: socket.socket) -> None:
        """Pump ``call``'s replies into ``relayed`` (once started)."""
        super().__init__(daemon=True, name="probe-relay")
        self._call = call
        self._relayed = relayed
        self.failure = ""

    def run(self) -> None:
        """Relay until the call ends."""
        try:
            for raw in self._call:
                frame = substrate_pb2.PortForwardFrame.FromString(raw)
                if frame.WhichOneof("frame") == "data":
                    self._relayed.sendall(frame.data)
                elif frame.WhichOneof("frame") == "end":
                    self._relayed.shutdown(socket.SHUT_WR)
        except AgentError as exc:
            self.failure = str(exc)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self._relayed.close()
