"""A process started inside a running container by ``runc exec``: with pipes, or a terminal.

Without a tty the process's stdin, stdout and stderr are three pipes. With one,
the agent opens a pseudo-terminal pair and gives runc the slave side as its
stdio: runc (in the foreground) makes the container's own terminal and copies
between the two, ours in raw mode. A new window size is set on our pair and runc
gets SIGWINCH, upon which it copies the size to the container's terminal, as it
does for a user's terminal. (runc's ``--console-socket`` would hand over the
container's terminal itself, but only with ``--detach``, and a detached process
is not our child: its exit status would be lost.)

The process runs as the container's user with its environment, limits and
cgroup (runc takes them from the container's config). runc writes its host pid
to a pid file, so that :meth:`ExecProcess.kill` can kill it when the caller goes
away: runc cannot pass SIGKILL on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from fuzz.errors import FuzzError

CHUNK_BYTES = 64 * 1024
PID_FILE = "exec.pid"
Stream = Literal["stdout", "stderr"]


class ExecRequestError(FuzzError):
    """The exec request is invalid (no command, a bad env entry, a relative cwd)."""


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
        """Refuse what runc would only fail on later, or misread as its own options."""
        if not self.args or not self.args[0]:
            raise ExecRequestError("exec needs a command")
        for item in self.env:
            if "=" not in item or item.startswith("="):
                raise ExecRequestError(f"env entry {item!r} must look like KEY=VALUE")
        if self.cwd and not PurePosixPath(self.cwd).is_absolute():
            raise ExecRequestError(f"cwd {self.cwd!r} must be an absolute path")


def runc_exec_argv(runc: str, spec: ExecSpec, pid_file: str) -> list[str]:
    """The ``runc exec`` command line for ``spec``."""
    argv = [runc, "exec", "--pid-file", pid_file]
    if spec.tty:
        argv.append("--tty")
    if spec.cwd:
        argv += ["--cwd", spec.cwd]
    for item in spec.env:
        argv += ["--env", item]
    return [*argv, spec.container_id, *spec.args]


def set_window_size(fd: int, rows: int, columns: int) -> None:
    """Set the size of the terminal ``fd`` belongs to."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (blocking)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class ExecProcess:
    """One ``runc exec`` and its process.

    Two threads use it: one writes to :attr:`stdin` (and calls :meth:`resize`),
    then :meth:`close_stdin`; the other reads :meth:`output`,
    :meth:`wait`\\ s and :meth:`close`\\ s the rest. :meth:`kill` is safe from anywhere.
    """

    def __init__(self, runc: str, spec: ExecSpec) -> None:
        """Start ``spec``'s process with the runc binary ``runc``."""
        self.spec = spec
        self._dir = tempfile.mkdtemp(prefix="fuzz-exec-")
        argv = runc_exec_argv(runc, spec, os.path.join(self._dir, PID_FILE))
        self._outputs: dict[int, Stream] = {}
        try:
            if spec.tty:
                self._popen, self.stdin = self._start_tty(argv)
            else:
                self._popen, self.stdin = self._start_piped(argv)
        except OSError as exc:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise ExecRequestError(f"cannot run runc exec: {exc.strerror or exc}") from None

    def _start_tty(self, argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
        master, slave = os.openpty()
        try:
            tty.setraw(slave)  # raw from the start: runc would make it so, but input may come first
            if self.spec.rows and self.spec.columns:
                set_window_size(slave, self.spec.rows, self.spec.columns)
            popen = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave)
        except OSError:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self._outputs[master] = "stdout"
        return popen, os.dup(master)

    def _start_piped(self, argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
        pipes = [os.pipe() for _ in range(3)]  # (read end, write end) of stdin, stdout, stderr
        theirs = (pipes[0][0], pipes[1][1], pipes[2][1])
        ours = (pipes[0][1], pipes[1][0], pipes[2][0])
        try:
            popen = subprocess.Popen(argv, stdin=theirs[0], stdout=theirs[1], stderr=theirs[2])
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

    def resize(self, rows: int, columns: int) -> None:
        """Give the terminal a new size (a no-op without a tty); by the stdin thread only."""
        if self.spec.tty:
            set_window_size(self.stdin, rows, columns)
            self._popen.send_signal(signal.SIGWINCH)

    def close_stdin(self) -> None:
        """Close :attr:`stdin` (the process reads end of file; a terminal stays open)."""
        os.close(self.stdin)

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
                    if data:
                        yield self._outputs[key.fd], data
                    else:
                        selector.unregister(key.fd)

    def wait(self) -> int:
        """The exit code: runc's, which is the process's (128+N when signal N killed it)."""
        code = self._popen.wait()
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        """Kill the process (the caller went away); a no-op once runc has exited.

        A pidfd is taken while runc, the process's parent, still waits for it, so
        the pid cannot have been reused. Before runc wrote the pid, runc is killed.
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
        """Release the output descriptors and the pid file (after :meth:`wait`)."""
        for fd in self._outputs:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._outputs.clear()
        shutil.rmtree(self._dir, ignore_errors=True)
