"""A process started inside a running container by ``runc exec``: with pipes, or a terminal.

The process is the container's own process spec (its user, capabilities,
limits, environment) with the request's command, environment on top, working
directory and terminal, written to a ``process.json`` for ``runc exec --process``.

runc always detaches (``runc exec --detach``), so that nothing sits between the
agent and the process: the detached process is adopted and waited for by a
small reaper (:mod:`fuzz.substrate.runtime.exec_reaper`), whose exit code is the
process's.

Without a terminal, the process inherits three of the agent's pipes as its
stdin, stdout and stderr, and the agent reads and writes them itself. (runc in
the foreground would make pipes of its own and copy every byte between them and
ours: a third process on the data path, which cost as much CPU as the agent's
own reading, framing and encryption of an exec's output.)

With a terminal, runc makes the container's pseudo-terminal and hands its master
side to the agent over a console socket: the agent reads and writes that
terminal directly and sets its window size on it (the kernel tells the process
with SIGWINCH). (runc in the foreground would put a second terminal of its own
between the agent and the container, and race the process to the first
terminal settings: output lines then end in ``\\r\\r\\n`` now and then.)

runc writes the process's host pid to a pid file, so that :meth:`ExecProcess.kill`
can kill it when the caller goes away: runc cannot pass SIGKILL on.

When runc cannot start the process it writes one logrus line on stderr (``time=… level=error
msg="exec failed: …"``) and exits 255. That line is given as its message alone, and a
command that is not in the image as a shell says it: ``no such file in the image: X``,
exit code 127.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from fuzz.errors import FuzzError
from fuzz.substrate.runtime.bundle import merge_env
from fuzz.substrate.runtime.exec_reaper import REAPER_MAIN, RUNC_FAILED
from fuzz.substrate.runtime.helper_process import helper_command, helper_env

CHUNK_BYTES = 64 * 1024
PID_FILE = "exec.pid"
PROCESS_FILE = "process.json"
CONSOLE_SOCKET = "console.sock"
CONSOLE_TIMEOUT = 30.0  # for runc to hand the terminal over
Stream = Literal["stdout", "stderr"]
NOT_FOUND_EXIT = 127  # as a shell exits for a command it cannot find
# runc's own complaint (logrus' text format), and what it says of a command not in the image
RUNC_ERROR = re.compile(rb'time="[^"]*" level=error msg="(?P<msg>(?:[^"\\]|\\.)*)"\n?')
NOT_FOUND = re.compile(r'exec: "(?P<name>(?:[^"\\]|\\.)*)": (?:executable file not found in '
                       r'\$PATH|stat [^\n]*: no such file or directory)')


class ExecRequestError(FuzzError):
    """The exec request is invalid (no command, a bad env entry, a relative cwd)."""


class ExecStartError(FuzzError):
    """runc did not start the process (or did not hand its terminal over)."""


@dataclass(frozen=True)
class ExecSpec:
    """What to run in which container, and how (a tty of ``rows`` x ``columns``, or pipes)."""

    container_id: str
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = ""
    tty: bool = False
    rows: int = 0
    columns: int = 0

    def __post_init__(self) -> None:
        """Refuse what runc would only fail on later."""
        if not self.args or not self.args[0]:
            raise ExecRequestError("exec needs a command")
        for item in self.env:
            if "=" not in item or item.startswith("="):
                raise ExecRequestError(f"env entry {item!r} must look like KEY=VALUE")
        if self.cwd and not PurePosixPath(self.cwd).is_absolute():
            raise ExecRequestError(f"cwd {self.cwd!r} must be an absolute path")


def process_config(spec: ExecSpec, container_process: dict[str, Any]) -> dict[str, Any]:
    """The OCI process for ``spec``: the container's own ``process``, with the request's
    command, environment over the container's, working directory and terminal."""
    process = dict(container_process)
    process["args"] = list(spec.args)
    process["env"] = list(merge_env(container_process.get("env", ()), spec.env))
    process["terminal"] = spec.tty
    if spec.cwd:
        process["cwd"] = spec.cwd
    if spec.tty and spec.rows and spec.columns:
        process["consoleSize"] = {"height": spec.rows, "width": spec.columns}
    return process


def set_window_size(fd: int, rows: int, columns: int) -> None:
    """Set the size of the terminal ``fd`` belongs to."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (blocking)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class ExecProcess:
    """One process run by ``runc exec`` in a running container.

    Two threads use it: one writes to :attr:`stdin` (and calls :meth:`resize`),
    then :meth:`close_stdin`; the other reads :meth:`output`, :meth:`wait`\\ s and
    :meth:`close`\\ s the rest. :meth:`kill` is safe from anywhere.
    """

    def __init__(self, runc: str, spec: ExecSpec, container_process: dict[str, Any]) -> None:
        """Start ``spec``'s process with the runc binary ``runc``; ``container_process`` is
        the ``process`` of the container's OCI config. Raises ExecStartError."""
        self.spec = spec
        self._missing_command = False  # runc said the command is not in the image
        self._dir = tempfile.mkdtemp(prefix="fuzz-exec-")
        self._outputs: dict[int, Stream] = {}
        process_file = os.path.join(self._dir, PROCESS_FILE)
        with open(process_file, "w", encoding="utf-8") as handle:
            json.dump(process_config(spec, container_process), handle)
        argv = [runc, "exec", "--process", process_file,
                "--pid-file", os.path.join(self._dir, PID_FILE)]
        try:
            if spec.tty:
                self._popen, self.stdin = self._start_on_terminal(argv)
            else:
                self._popen, self.stdin = self._start_piped(argv)
        except (OSError, ExecStartError) as exc:
            self.close()
            if isinstance(exc, ExecStartError):
                raise
            raise ExecStartError(f"cannot run runc exec: {exc.strerror or exc}") from exc

    def _reaped(self, argv: list[str], *options: str) -> list[str]:
        """The reaper's argv that runs ``argv`` detached, with ``options``, on the container."""
        return helper_command(REAPER_MAIN, *argv, "--detach", *options, self.spec.container_id)

    def _start_piped(self, argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
        pipes = [os.pipe() for _ in range(3)]  # (read end, write end) of stdin, stdout, stderr
        theirs = (pipes[0][0], pipes[1][1], pipes[2][1])
        ours = (pipes[0][1], pipes[1][0], pipes[2][0])
        try:
            popen = subprocess.Popen(self._reaped(argv), stdin=theirs[0], stdout=theirs[1],
                                     stderr=theirs[2], env=helper_env(), cwd="/")
        except OSError:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        self._outputs[ours[1]] = "stdout"
        self._outputs[ours[2]] = "stderr"
        return popen, ours[0]

    def _start_on_terminal(self, argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
        address = os.path.join(self._dir, CONSOLE_SOCKET)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as console:
            console.bind(address)
            console.listen(1)
            console.settimeout(0.1)
            errors_r, errors_w = os.pipe()  # runc's complaints, should it fail
            try:
                popen = subprocess.Popen(
                    self._reaped(argv, "--console-socket", address), stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=errors_w, env=helper_env(), cwd="/")
            except OSError:
                os.close(errors_r)
                raise
            finally:
                os.close(errors_w)
            self._outputs[errors_r] = "stderr"
            master = self._receive_terminal(console, popen)
        if master < 0:
            return popen, -1
        os.set_inheritable(master, False)  # no other child may hold the terminal open
        os.set_blocking(master, True)
        self._outputs[master] = "stdout"
        return popen, os.dup(master)

    @staticmethod
    def _receive_terminal(console: socket.socket, popen: subprocess.Popen[bytes]) -> int:
        """The terminal's master side as runc sends it, or -1 when runc failed (its message
        and exit code tell why); ExecStartError (and runc killed) if it neither sends nor
        fails in time."""
        deadline = time.monotonic() + CONSOLE_TIMEOUT
        try:
            while time.monotonic() < deadline:
                try:
                    conn, _ = console.accept()
                except TimeoutError:
                    if popen.poll() is not None:
                        return -1
                    continue
                with conn:
                    conn.settimeout(CONSOLE_TIMEOUT)
                    _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
                if fds:
                    return fds[0]
                break
            raise ExecStartError("runc did not hand over the terminal")
        except BaseException:
            popen.kill()
            raise

    def resize(self, rows: int, columns: int) -> None:
        """Give the terminal a new size (a no-op without one); by the stdin thread only."""
        if self.spec.tty and self.stdin >= 0:
            set_window_size(self.stdin, rows, columns)

    def close_stdin(self) -> None:
        """Close :attr:`stdin` (the process reads end of file; a terminal stays open)."""
        if self.stdin >= 0:
            os.close(self.stdin)

    def output_fds(self) -> dict[int, Stream]:
        """The descriptors the output comes from, and which stream each is (for a caller
        that reads them itself instead of :meth:`output`; stderr's data goes through
        :meth:`stderr_text`)."""
        return dict(self._outputs)

    def output(self) -> Iterator[tuple[Stream, bytes]]:
        """The process's output as it comes, until it (and whatever it started) closed it."""
        with selectors.DefaultSelector() as selector:
            for fd in self._outputs:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                for key, _ in selector.select():
                    try:
                        data = os.read(key.fd, CHUNK_BYTES)
                    except OSError:  # EIO: a terminal whose every slave end is closed
                        data = b""
                    if data and self._outputs[key.fd] == "stderr":
                        yield "stderr", self.stderr_text(data)
                    elif data:
                        yield self._outputs[key.fd], data
                    else:
                        selector.unregister(key.fd)

    def stderr_text(self, data: bytes) -> bytes:
        """``data`` of stderr, or, when it is runc's own complaint, its message alone (a
        missing command: ``no such file in the image: X``)."""
        complaint = RUNC_ERROR.fullmatch(data)
        if complaint is None:
            return data
        message = unquote(complaint["msg"].decode(errors="replace"))
        missing = NOT_FOUND.search(message)
        if missing is None:
            return f"{message}\n".encode()
        self._missing_command = True
        return f"no such file in the image: {unquote(missing['name'])}\n".encode()

    def wait(self) -> int:
        """The exit code (128+N when signal N killed the process; 127 when the command is
        not in the image; 255 when runc failed otherwise)."""
        code = self._popen.wait()
        if code == RUNC_FAILED and self._missing_command:
            return NOT_FOUND_EXIT
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        """Kill the process (the caller went away); a no-op once it has been waited for.

        A pidfd is taken while its parent (the reaper) still runs and so
        has not reaped it: the pid cannot have been reused. Before runc wrote the
        pid, our child is killed instead.
        """
        if self._popen.poll() is not None:
            return
        try:
            with open(os.path.join(self._dir, PID_FILE), encoding="ascii") as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            self._popen.kill()
            return
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return
        try:
            if self._popen.poll() is None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        finally:
            os.close(pidfd)

    def close(self) -> None:
        """Release the output descriptors and the files (after :meth:`wait`)."""
        for fd in self._outputs:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._outputs.clear()
        shutil.rmtree(self._dir, ignore_errors=True)


def unquote(text: str) -> str:
    """The inside of a Go-quoted string (runc's log quotes its message), escapes undone."""
    try:
        return str(json.loads(f'"{text}"'))
    except ValueError:
        return text
