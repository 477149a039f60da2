"""A job's stdout or stderr kept to a limit: the monitor copies it from a pipe to its file.

Without a limit a job writes its log files itself (they are its stdio). With
one, its stdout and stderr are pipes: the monitor's event loop reads each
whenever it is readable and appends what it read to the log file, up to the
limit; past it the rest is read and dropped (so the job never blocks on a full
pipe and keeps running), and one marker line says the output was truncated.
The pipes' write ends die with the job (its pid namespace ends with its init);
:meth:`LogPump.drain` takes what is left in a pipe before the job's status is
final. The pipes belong to the monitor: a job whose monitor died is settled
(killed) by the next one anyway (see :func:`~fuzz.substrate.monitor.job.settle`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os

READ_SIZE = 64 * 1024
READS_PER_WAKEUP = 16  # at most 1 MiB per turn, so one chatty job cannot hold the loop
PIPE_SIZE = 1024 * 1024  # fewer wakeups for a chatty job (the kernel may give less)
LIMIT_KEY = "orchestrator.limits.job_log_bytes"


def truncation_marker(limit: int) -> bytes:
    """The line appended once a stream passes ``limit`` bytes."""
    return (f"\n[fuzz: output truncated at {limit} bytes ({LIMIT_KEY}); "
            "the rest was dropped]\n").encode()


def open_pipe() -> tuple[int, int]:
    """A pipe for a job's stream: (read end, non-blocking; write end, for the job)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # over /proc/sys/fs/pipe-max-size: the default works
        fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    os.set_blocking(read_end, False)
    return read_end, write_end


class LogPump:
    """Copies one pipe into one log file, at most ``limit`` bytes, then a marker line."""

    def __init__(self, read_end: int, log_path: str, limit: int) -> None:
        """Append to ``log_path`` (0640) what arrives on ``read_end``; owns both descriptors."""
        self.read_end = read_end
        self._log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                            0o640)
        self._room = max(limit - os.fstat(self._log).st_size, 0)
        self._limit = limit
        self._truncated = False

    def pump(self) -> bool:
        """Copy what the pipe holds (up to 1 MiB a turn); False once it is at its end."""
        return self._copy(READS_PER_WAKEUP) != "end"

    def drain(self) -> None:
        """Copy everything the pipe holds now, then close both descriptors."""
        while self._copy(READS_PER_WAKEUP) == "more":
            pass
        self.close()

    def _copy(self, reads: int) -> str:
        """Copy at most ``reads`` reads: "more" (maybe), "empty" for now, or its "end"."""
        for _ in range(reads):
            try:
                data = os.read(self.read_end, READ_SIZE)
            except BlockingIOError:
                return "empty"
            if not data:
                return "end"
            self._keep(data)
        return "more"

    def close(self) -> None:
        """Close the pipe and the log file (again: a no-op)."""
        for fd in (self.read_end, self._log):
            if fd >= 0:
                os.close(fd)
        self.read_end = self._log = -1

    def _keep(self, data: bytes) -> None:
        if self._truncated:
            return
        kept = data[:self._room]
        if kept:
            _write_all(self._log, kept)
            self._room -= len(kept)
        if len(kept) < len(data):
            _write_all(self._log, truncation_marker(self._limit))
            self._truncated = True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
