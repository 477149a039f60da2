"""Exec for the CLI: a process in a running job, with this terminal or these stdio streams.

The orchestrator decides the whole request (OpenExec: IAM, the curtain, audit) and
answers a single-use ticket for exactly it; the CLI then runs the session over one TLS
connection straight to the agent (:class:`DirectExec`, frames of
:mod:`fuzz.rpc.direct_exec`, in this thread). When the agent offers no direct path or
cannot be reached, the session is one Exec stream that the orchestrator relays: there,
local stdin is read by a thread into a queue that feeds the request stream; its
end closes the remote stdin. With a tty, the local terminal is put in raw mode
for the session (and restored however it ends) and every SIGWINCH sends the
terminal's new size. The remote exit code is the session's result.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import select
import signal
import ssl
import struct
import termios
import threading
import tty
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from fuzz.api import orchestrator_pb2 as pb
from fuzz.api import substrate_pb2
from fuzz.cli.portforward import open_direct, present_ticket
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.errors import ConfigError, FuzzError
from fuzz.rpc.direct_exec import (
    EXIT,
    EXIT_CODE,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    WINDOW,
    FrameError,
    FrameReader,
    Outbox,
)
from fuzz.spec.workflowref import split_workflow_ref

CHUNK_BYTES = 64 * 1024
BROKEN_PIPE_EXIT = 128 + signal.SIGPIPE
Requests = queue.SimpleQueue[pb.ExecRequest | None]


@dataclass(frozen=True)
class ExecCommand:
    """What to run: ``argv`` in task ``task`` of ``workflow`` (``NAME`` or ``OWNER/NAME``),
    with ``env``, ``cwd``, a tty?"""

    workflow: str
    task: str
    argv: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = ""
    tty: bool = False


def window_size(fd: int) -> substrate_pb2.WindowSize:
    """The size of the terminal ``fd`` is."""
    rows, columns, _, _ = struct.unpack(
        "HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    return substrate_pb2.WindowSize(rows=rows, columns=columns)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal ``fd`` in raw mode (keys go through as typed), restored on the way out."""
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def forwarded_resizes(fd: int, on_resize: Callable[[substrate_pb2.WindowSize], None]
                      ) -> Iterator[None]:
    """Call ``on_resize`` with the terminal's size on every SIGWINCH while inside (main
    thread only)."""
    def handler(signum: int, frame: object) -> None:
        on_resize(window_size(fd))

    previous = signal.signal(signal.SIGWINCH, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


def _read_stdin(fd: int, requests: Requests) -> None:
    """Queue local input as it comes; its end ends the request stream (remote stdin closes)."""
    try:
        while data := os.read(fd, CHUNK_BYTES):
            requests.put(pb.ExecRequest(input=substrate_pb2.ExecInput(stdin=data)))
    except OSError:
        pass  # stdin was closed under us: treat it as its end
    requests.put(None)


def _write(sink: BinaryIO, data: bytes | memoryview) -> None:
    sink.write(data)
    sink.flush()


@dataclass(frozen=True)
class ExecOutcome:
    """How an exec ended: the remote exit code, and the path it took (``direct`` to the
    agent, or ``relay`` through the orchestrator)."""

    exit_code: int
    path: str


def run_exec(client: OrchestratorClient, command: ExecCommand, stdin_fd: int,
             stdout: BinaryIO, stderr: BinaryIO) -> ExecOutcome:
    """Run ``command`` with ``stdin_fd`` as input (a terminal when ``command.tty``); its
    output goes to ``stdout`` and ``stderr``. Straight to the agent when it can be
    reached, else relayed by the orchestrator."""
    if command.tty and not os.isatty(stdin_fd):
        raise ConfigError("--tty needs a terminal on stdin (leave --tty out for pipes and files)")
    start = substrate_pb2.ExecStart(args=command.argv, env=command.env, cwd=command.cwd,
                                    tty=command.tty)
    if command.tty:
        start.window.CopyFrom(window_size(stdin_fd))
    ref = split_workflow_ref(command.workflow)
    first = pb.ExecRequest(workflow=ref.name, owner=ref.owner, task=command.task,
                           input=substrate_pb2.ExecInput(start=start))
    tls = _open_direct(client, first)
    with contextlib.ExitStack() as session:
        if command.tty:
            session.enter_context(raw_terminal(stdin_fd))
        try:
            if tls is not None:
                with tls:
                    return ExecOutcome(DirectExec(tls, stdin_fd, stdout, stderr).run(
                        session, command.tty), "direct")
            return ExecOutcome(_run_relayed(client, first, stdin_fd, stdout, stderr, session,
                                            command.tty), "relay")
        except BrokenPipeError:  # our reader went away (`| head`): so does the process
            return ExecOutcome(BROKEN_PIPE_EXIT, "direct" if tls is not None else "relay")


def _open_direct(client: OrchestratorClient, first: pb.ExecRequest) -> ssl.SSLSocket | None:
    """The agent's accepted direct connection for ``first``'s process, or None: relay it
    (the agent offers no direct path, or cannot be reached from here). Once the ticket
    is sent the process may run: a failure from then on is an error, not a relay."""
    ticket = client.open_exec(first)
    tls = open_direct(ticket) if ticket.port else None
    if tls is None:
        return None
    try:
        return present_ticket(tls, ticket)
    except ConnectionError as exc:
        raise FuzzError(str(exc)) from exc


def _run_relayed(client: OrchestratorClient, first: pb.ExecRequest, stdin_fd: int,
                 stdout: BinaryIO, stderr: BinaryIO, session: contextlib.ExitStack,
                 tty: bool) -> int:
    """The exec as one Exec stream through the orchestrator; its exit code."""
    requests: Requests = queue.SimpleQueue()

    def messages() -> Iterator[pb.ExecRequest]:
        yield first
        while (item := requests.get()) is not None:
            yield item

    if tty:
        session.enter_context(forwarded_resizes(stdin_fd, lambda size: requests.put(
            pb.ExecRequest(input=substrate_pb2.ExecInput(resize=size)))))
    call = client.exec(messages())
    session.callback(requests.put, None)  # however it ends, the request stream ends
    threading.Thread(target=_read_stdin, args=(stdin_fd, requests), name="exec-stdin",
                     daemon=True).start()
    try:
        return _drain(call, stdout, stderr)
    except BrokenPipeError:
        call.cancel()
        raise


class DirectExec:
    """The CLI's end of a direct exec (:mod:`fuzz.rpc.direct_exec`), in this thread:
    local stdin into STDIN frames, STDOUT/STDERR frames out, until EXIT."""

    def __init__(self, tls: ssl.SSLSocket, stdin_fd: int, stdout: BinaryIO,
                 stderr: BinaryIO) -> None:
        """Serve the accepted ``tls`` with these streams."""
        self.tls = tls
        self.stdin_fd = stdin_fd
        self.sinks = {STDOUT: stdout, STDERR: stderr}
        self.reader = FrameReader(tls)
        self.outbox = Outbox(tls)
        self.stdin_open = True
        self.window: substrate_pb2.WindowSize | None = None  # a new size to send

    def run(self, session: contextlib.ExitStack, tty: bool) -> int:
        """Run until the exit code comes; return it (FuzzError if the connection ends
        first). With ``tty``, window changes follow (SIGWINCH, main thread)."""
        wake_r, wake_w = os.pipe()
        session.callback(os.close, wake_r)
        session.callback(os.close, wake_w)
        os.set_blocking(wake_w, False)

        def on_resize(size: substrate_pb2.WindowSize) -> None:
            self.window = size
            with contextlib.suppress(OSError):
                os.write(wake_w, b"w")

        if tty:
            session.enter_context(forwarded_resizes(self.stdin_fd, on_resize))
        self.tls.setblocking(False)
        try:
            while True:
                code = self._step()
                if code is not None:
                    return code
                self._wait(wake_r)
        except (OSError, FrameError) as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            raise FuzzError(f"the exec's connection to the agent failed: {exc}") from exc

    def _step(self) -> int | None:
        """Move what can move now; the exit code once it came."""
        if not self.outbox.empty():
            self.outbox.send()
        if self.outbox.empty() and self.window is not None:
            self.outbox.add(RESIZE, WINDOW.pack(self.window.rows, self.window.columns))
            self.window = None
            self.outbox.send()
        while (piece := self.reader.piece()) is not None:
            kind, payload = piece
            if kind == EXIT:
                return int(EXIT_CODE.unpack(payload)[0])
            if kind not in self.sinks:
                raise FrameError(f"a frame of kind {kind} from the agent")
            if payload:
                _write(self.sinks[kind], payload)
                self.reader.consume(len(payload))
        if self.reader.closed:
            raise FuzzError("the exec ended without an exit code")
        return None

    def _wait(self, wake: int) -> None:
        """Wait for the agent, local input (when there is room for it) or a resize."""
        poller = select.poll()
        tls = self.tls.fileno()
        poller.register(tls, select.POLLIN | (0 if self.outbox.empty() else select.POLLOUT))
        poller.register(wake, select.POLLIN)
        reading = self.stdin_open and self.outbox.empty()
        if reading:
            poller.register(self.stdin_fd, select.POLLIN)
        ready = dict(poller.poll())
        if ready.get(wake):
            os.read(wake, 64)
        if reading and ready.get(self.stdin_fd):
            self._read_stdin()

    def _read_stdin(self) -> None:
        """Read local input into an STDIN frame (an empty one at its end)."""
        try:
            count = os.readv(self.stdin_fd, [self.outbox.room()])
        except OSError:
            count = 0  # stdin was closed under us: treat it as its end
        self.outbox.seal(STDIN, count)
        self.stdin_open = count > 0


def _drain(outputs: Iterable[substrate_pb2.ExecOutput], stdout: BinaryIO,
           stderr: BinaryIO) -> int:
    """Write the outputs where they belong until the exit code comes; return it."""
    for output in outputs:
        kind = output.WhichOneof("output")
        if kind == "stdout":
            _write(stdout, output.stdout)
        elif kind == "stderr":
            _write(stderr, output.stderr)
        elif kind == "exit_code":
            return int(output.exit_code)
    raise FuzzError("the exec ended without an exit code")
