"""The launch sockets of a node's MPI containers, relayed to the orchestrator.

A container of a multinode MPI job gets ``/.fuzz-launch`` (read-only): the launch
helper and ``launch.sock``, a unix socket this agent listens on for that container
alone. What the helper asks (``HOST COMMAND ARGS...``, then its stdin) goes to the
orchestrator's ``LaunchExec`` with the job's launch token, which the container never
sees; the orchestrator runs it in the container of the job's rank at HOST, and its
stdout, stderr and exit status come back the same way. A container without the
socket, or of another job, has no way to name this job's token.

Frames on the socket (both ways): one type byte, a 4-byte big-endian length, the
payload; see ``fuzz-launch.c``. A socket lives as long as its container's record on
this agent: an agent restarted mid-job serves it no more (the launchers have started
their daemons by then).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fuzz.api import orchestrator_pb2, substrate_pb2
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.errors import FuzzError
from fuzz.rpc.client import ClientTls

log = logging.getLogger(__name__)

HELPER = Path(__file__).resolve().parent / "bin" / "fuzz-launch"
HELPER_NAME = "fuzz-launch"
SOCKET_NAME = "launch.sock"
MOUNT_POINT = "/.fuzz-launch"
_HEAD = struct.Struct(">cI")
_CHUNK = 1 << 20


class LaunchSocketError(FuzzError):
    """The node cannot give a container its launch socket."""


@dataclass(frozen=True)
class OrchestratorLink:
    """How this agent calls its orchestrator's LaunchExec (``ca_pem``: over TLS)."""

    address: str
    ca_pem: bytes | None = None


class LaunchSockets:
    """The launch sockets of this node's MPI containers, one directory each under ``root``."""

    def __init__(self, root: Path, link: OrchestratorLink | None) -> None:
        """Keep the sockets under ``root``; relay to the orchestrator of ``link``."""
        self._root = root
        self._link = link
        self._lock = threading.Lock()
        self._listeners: dict[str, socket.socket] = {}
        self._client: OrchestratorClient | None = None

    def open(self, container: str, token: str) -> Path:
        """Listen for ``container`` (relaying with ``token``); the directory to mount
        read-only at :data:`MOUNT_POINT`."""
        if self._link is None:
            raise LaunchSocketError("this agent has joined no orchestrator: it cannot serve "
                                    "an MPI job's launch socket")
        if not HELPER.is_file():
            raise LaunchSocketError(f"the launch helper {HELPER} is missing (make setup "
                                    "builds it)")
        directory = self._root / container
        self.close(container)
        try:
            listener = _listen(directory)
        except OSError as exc:
            self.close(container)
            raise LaunchSocketError(f"cannot make the launch socket of {container}: "
                                    f"{exc.strerror or exc}") from exc
        with self._lock:
            self._listeners[container] = listener
        threading.Thread(target=self._accept, args=(listener, token),
                         name=f"launch-{container}", daemon=True).start()
        return directory

    def close(self, container: str) -> None:
        """Stop listening for ``container`` and remove its directory (idempotent)."""
        with self._lock:
            listener = self._listeners.pop(container, None)
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        shutil.rmtree(self._root / container, ignore_errors=True)

    def _accept(self, listener: socket.socket, token: str) -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(connection, token),
                             name="launch-relay", daemon=True).start()

    def _orchestrator(self, link: OrchestratorLink) -> OrchestratorClient:
        with self._lock:
            if self._client is None:
                tls = ClientTls(link.ca_pem) if link.ca_pem is not None else None
                self._client = OrchestratorClient(link.address, "", tls=tls)
            return self._client

    def _serve(self, connection: socket.socket, token: str) -> None:
        """Relay one remote start: the helper's request and stdin out, the output back."""
        assert self._link is not None  # open() refuses without one
        with connection:
            try:
                kind, payload = _read_frame(connection)
            except (OSError, EOFError):
                return
            words = payload.split(b"\0")[:-1]
            if kind != b"S" or len(words) < 2:
                _send(connection, b"F", b"the first frame must name a host and a command")
                return
            host, *argv = (word.decode(errors="replace") for word in words)
            stdin: queue.Queue[bytes | None] = queue.Queue()
            call = self._orchestrator(self._link).launch_exec(_requests(token, host, argv, stdin))
            threading.Thread(target=_pump_stdin, args=(connection, stdin, call.cancel),
                             name="launch-stdin", daemon=True).start()
            try:
                for output in call:
                    which = output.WhichOneof("output")
                    if which == "stdout":
                        _send(connection, b"O", output.stdout)
                    elif which == "stderr":
                        _send(connection, b"E", output.stderr)
                    elif which == "exit_code":
                        _send(connection, b"X", struct.pack(">i", output.exit_code))
                        return
                _send(connection, b"F", b"the remote start ended without an exit status")
            except FuzzError as exc:
                with contextlib.suppress(OSError):
                    _send(connection, b"F", f"{host}: {exc}".encode())
            except OSError:
                call.cancel()  # the helper went away: so does its remote process


def _listen(directory: Path) -> socket.socket:
    """A listening socket at ``directory/launch.sock``, with the helper beside it.

    Bound through ``/proc/self/fd``: a state directory's path may pass the 108 bytes
    a unix socket's address may have.
    """
    directory.mkdir(mode=0o755, parents=True)
    directory.parent.chmod(0o711)
    shutil.copy2(HELPER, directory / HELPER_NAME)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    handle = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    try:
        listener.bind(f"/proc/self/fd/{handle}/{SOCKET_NAME}")
    except OSError:
        listener.close()
        raise
    finally:
        os.close(handle)
    (directory / SOCKET_NAME).chmod(0o666)  # the job's uid connects; no one else sees it
    listener.listen(64)
    return listener


def _requests(token: str, host: str, argv: list[str], stdin: queue.Queue[bytes | None]
              ) -> Iterator[orchestrator_pb2.LaunchExecRequest]:
    start = substrate_pb2.ExecInput(start=substrate_pb2.ExecStart(args=argv))
    yield orchestrator_pb2.LaunchExecRequest(token=token, host=host, input=start)
    while (data := stdin.get()) is not None:
        yield orchestrator_pb2.LaunchExecRequest(input=substrate_pb2.ExecInput(stdin=data))


def _pump_stdin(connection: socket.socket, stdin: queue.Queue[bytes | None],
                cancel: Callable[[], None]) -> None:
    """The helper's stdin frames into ``stdin`` (None: its end); the helper's going
    away before the command ended cancels the call."""
    open_ = True
    try:
        while True:
            kind, payload = _read_frame(connection)
            if kind == b"I" and open_:
                if not payload:
                    open_ = False
                    stdin.put(None)
                else:
                    stdin.put(payload)
    except (OSError, EOFError):
        if open_:
            stdin.put(None)
        cancel()


def _read_frame(connection: socket.socket) -> tuple[bytes, bytes]:
    head = _read_exactly(connection, _HEAD.size)
    kind, size = _HEAD.unpack(head)
    if size > _CHUNK:
        raise EOFError("a frame over 1 MiB")
    return kind, _read_exactly(connection, size)


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    parts = bytearray()
    while len(parts) < size:
        chunk = connection.recv(size - len(parts))
        if not chunk:
            raise EOFError("the helper closed its socket")
        parts += chunk
    return bytes(parts)


def _send(connection: socket.socket, kind: bytes, payload: bytes) -> None:
    connection.sendall(_HEAD.pack(kind, len(payload)) + payload)
