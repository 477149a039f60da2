"""Exec for the CLI: a process in a running job, with this terminal or these stdio streams.

Local stdin is read by a thread into a queue that feeds the request stream; its
end closes the remote stdin. With a tty, the local terminal is put in raw mode
for the session (and restored however it ends) and every SIGWINCH sends the
terminal's new size. The remote exit code is the session's result.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import signal
import struct
import termios
import threading
import tty
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from fuzz.api import orchestrator_pb2 as pb
from fuzz.api import substrate_pb2
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.errors import ConfigError, FuzzError
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
def forwarded_resizes(fd: int, requests: Requests) -> Iterator[None]:
    """Send the terminal's size on every SIGWINCH while inside (main thread only)."""
    def on_resize(signum: int, frame: object) -> None:
        requests.put(pb.ExecRequest(input=substrate_pb2.ExecInput(resize=window_size(fd))))

    previous = signal.signal(signal.SIGWINCH, on_resize)
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


def _write(sink: BinaryIO, data: bytes) -> None:
    sink.write(data)
    sink.flush()


def run_exec(client: OrchestratorClient, command: ExecCommand, stdin_fd: int,
             stdout: BinaryIO, stderr: BinaryIO) -> int:
    """Run ``command`` with ``stdin_fd`` as input (a terminal when ``command.tty``); its
    output goes to ``stdout`` and ``stderr``. Returns the remote exit code."""
    if command.tty and not os.isatty(stdin_fd):
        raise ConfigError("--tty needs a terminal on stdin (leave --tty out for pipes and files)")
    requests: Requests = queue.SimpleQueue()
    start = substrate_pb2.ExecStart(args=command.argv, env=command.env, cwd=command.cwd,
                                    tty=command.tty)
    if command.tty:
        start.window.CopyFrom(window_size(stdin_fd))

    def messages() -> Iterator[pb.ExecRequest]:
        ref = split_workflow_ref(command.workflow)
        yield pb.ExecRequest(workflow=ref.name, owner=ref.owner, task=command.task,
                             input=substrate_pb2.ExecInput(start=start))
        while (item := requests.get()) is not None:
            yield item

    with contextlib.ExitStack() as session:
        if command.tty:
            session.enter_context(raw_terminal(stdin_fd))
            session.enter_context(forwarded_resizes(stdin_fd, requests))
        call = client.exec(messages())
        session.callback(requests.put, None)  # however it ends, the request stream ends
        threading.Thread(target=_read_stdin, args=(stdin_fd, requests), name="exec-stdin",
                         daemon=True).start()
        try:
            return _drain(call, stdout, stderr)
        except BrokenPipeError:  # our reader went away (`| head`): so does the process
            call.cancel()
            return BROKEN_PIPE_EXIT


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
