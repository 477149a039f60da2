"""The agent's end of a direct exec: one process's stdio over its ticket's TLS connection.

The process was decided by the orchestrator and bound to the ticket (see
:mod:`fuzz.substrate.rpc.direct`); here its output goes out and its input comes in as
the frames of :mod:`fuzz.rpc.direct_exec`, in one thread (an OpenSSL connection must
not be read and written from two), with non-blocking descriptors and ``poll``. Output
is read straight into the outbox's buffer, as much as there is up to its size, so
that a frame is one ``SSL_write``. A caller that goes away gets its process killed,
as the relay's does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import ssl

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
from fuzz.substrate.runtime.execproc import ExecProcess, Stream

LINGER_SECONDS = 10.0  # after the exit code, for the caller to close first
PIPE_BYTES = 1024 * 1024  # the output pipes' size: fewer, larger reads
_POLL_IN = select.POLLIN | select.POLLHUP | select.POLLERR
_POLL_OUT = select.POLLOUT | select.POLLHUP | select.POLLERR


class ExecSession:
    """One process's stdio over one TLS connection, until its exit code is sent."""

    def __init__(self, tls: ssl.SSLSocket, process: ExecProcess) -> None:
        """Serve ``process`` (started, its stdio ours) on ``tls`` (accepted)."""
        self.tls = tls
        self.process = process
        self.reader = FrameReader(tls)
        self.outbox = Outbox(tls)
        self.outputs: dict[int, Stream] = process.output_fds()
        for fd in self.outputs:
            os.set_blocking(fd, False)
            with contextlib.suppress(OSError):  # a terminal is no pipe; a cap on pipe sizes
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.stdin_open = process.stdin >= 0
        if self.stdin_open:
            os.set_blocking(process.stdin, False)
        self.stdin_blocked = False  # the process has not taken what we have for it

    def run(self) -> int:
        """Serve until the process's output has ended, then send its exit code and return
        it. OSError (the process killed first) when the caller goes away or fails."""
        self.tls.setblocking(False)
        try:
            while self.outputs or not self.outbox.empty():
                while self._step():
                    pass
                if self.outputs or not self.outbox.empty():
                    self._wait()
        except (OSError, FrameError):
            self.process.kill()
            self.process.wait()
            raise
        finally:
            self._close_stdin()
        code = self.process.wait()
        self.tls.settimeout(LINGER_SECONDS)
        self.outbox.add(EXIT, EXIT_CODE.pack(code))
        self.outbox.send()
        with contextlib.suppress(OSError):  # closing with unread input would reset the
            while self.tls.recv(65536):     # connection, perhaps before the code is read
                pass
        return code

    def _step(self) -> bool:
        """Move what can move without waiting; whether anything did."""
        moved = self.outbox.send() if not self.outbox.empty() else False
        if self.outbox.empty() and self.outputs:
            moved = self._read_output() or moved
        return self._take_input() or moved

    def _read_output(self) -> bool:
        """Read one output's data into the outbox (or note its end)."""
        for fd, stream in list(self.outputs.items()):
            room = self.outbox.room()
            try:
                count = os.readv(fd, [room])
            except BlockingIOError:
                continue
            except OSError:  # EIO: a terminal whose every slave end is closed
                count = 0
            del self.outputs[fd]
            if count == 0:
                return True
            self.outputs[fd] = stream  # to the back: the other stream's turn next
            if stream == "stderr":
                text = self.process.stderr_text(bytes(room[:count]))
                count = len(text)
                room[:count] = text
            else:
                count += _read_more(fd, room[count:])
            self.outbox.seal(STDOUT if stream == "stdout" else STDERR, count)
            return True
        return False

    def _take_input(self) -> bool:
        """Take the caller's frames while the process takes its stdin."""
        moved = False
        while not self.stdin_blocked:
            piece = self.reader.piece()
            if piece is None:
                if self.reader.closed:
                    raise ConnectionError("the caller left before the process ended")
                return moved
            moved = True
            kind, payload = piece
            if kind == RESIZE:
                self.process.resize(*WINDOW.unpack(payload))
            elif kind != STDIN:
                raise FrameError(f"a frame of kind {kind} from the caller")
            elif not payload:
                self._close_stdin()
            else:
                self.reader.consume(self._write_stdin(payload))
        return moved

    def _write_stdin(self, payload: memoryview) -> int:
        """Write to the process's stdin what it takes now; how much was used."""
        if not self.stdin_open:
            return len(payload)  # it closed its stdin: the rest goes nowhere
        try:
            return os.write(self.process.stdin, payload)
        except BlockingIOError:
            self.stdin_blocked = True
            return 0
        except OSError:  # EPIPE: the process will read no more
            self._close_stdin()
            return len(payload)

    def _close_stdin(self) -> None:
        if self.stdin_open:
            self.stdin_open = False
            self.process.close_stdin()

    def _wait(self) -> None:
        """Wait until something can move."""
        interest: dict[int, int] = {}
        tls = self.tls.fileno()
        if not self.stdin_blocked:
            interest[tls] = _POLL_IN
        if not self.outbox.empty():
            interest[tls] = interest.get(tls, 0) | _POLL_OUT
        else:
            interest.update(dict.fromkeys(self.outputs, _POLL_IN))
        if self.stdin_blocked:
            interest[self.process.stdin] = _POLL_OUT
        poller = select.poll()
        for fd, events in interest.items():
            poller.register(fd, events)
        ready = poller.poll()
        if any(fd == self.process.stdin for fd, _ in ready):
            self.stdin_blocked = False


def _read_more(fd: int, room: memoryview) -> int:
    """Fill ``room`` from ``fd`` while it has data at once; how much came."""
    got = 0
    while got < len(room):
        try:
            count = os.readv(fd, [room[got:]])
        except OSError:  # nothing now (or the end: the next read says so)
            break
        if count == 0:
            break
        got += count
    return got


def serve_exec(tls: ssl.SSLSocket, process: ExecProcess) -> int:
    """Run ``process``'s session on ``tls``: its exit code once sent (OSError, with the
    process killed, when the caller went away first)."""
    return ExecSession(tls, process).run()
