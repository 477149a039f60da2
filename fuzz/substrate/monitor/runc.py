"""How the container monitor runs runc: spawned without waiting, errors read from its JSON log.

runc's logs go to the monitor's tmpfs (``monitor.run``): runc opens them with
O_SYNC. Imported by the monitor process, so it imports only ``os``, ``signal``
and ``json`` (lazily).
"""

from __future__ import annotations

import os
import signal
import time

from fuzz.substrate.monitor.files import one_line

RUNC_STATE_ROOT = "/run/runc"  # runc's default --root when run as root
# Python ignores these; children must not inherit that (a job would never get SIGPIPE).
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


class Runc:
    """The runc binary, run with a container directory's ``runc.log`` as its log."""

    def __init__(self, binary: str) -> None:
        """Run ``binary`` (an absolute path)."""
        self.binary = binary

    def spawn(
        self, log: str | None, args: tuple[str, ...], stdout: int = -1, stderr: int = -1,
        passed: int = -1,
    ) -> tuple[int, int]:
        """Start ``runc ARGS`` without waiting; return its pid and its log's start offset.

        stdin is /dev/null, and so are ``stdout``/``stderr`` unless given. runc
        logs to ``log`` as JSON (when given), where :meth:`error` finds its errors.
        ``passed``: a descriptor runc gets as its fd 3 (for ``--preserve-fds 1``).
        """
        argv = [self.binary]
        log_start = 0
        if log is not None:
            try:
                log_start = os.stat(log).st_size
            except FileNotFoundError:
                log_start = 0
            argv += ["--log", log, "--log-format", "json"]
        argv += args
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            actions = [
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, devnull if stdout < 0 else stdout, 1),
                (os.POSIX_SPAWN_DUP2, devnull if stderr < 0 else stderr, 2),
            ]
            if passed >= 0:
                actions.append((os.POSIX_SPAWN_DUP2, passed, 3))
            pid = os.posix_spawn(
                self.binary, argv, os.environ, file_actions=actions, setsigdef=DEFAULT_SIGNALS
            )
        finally:
            os.close(devnull)
        return pid, log_start

    def spawn_logging(self, log: str, args: tuple[str, ...]) -> tuple[int, int]:
        """:meth:`spawn` with runc's stderr (JSON) appended to ``log``, which its argv never names.

        (Whoever looks for processes by the state dir's path in their argv, to
        kill what a test left, then leaves a cleanup alone.)
        """
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            start = os.fstat(fd).st_size
            pid, _ = self.spawn(None, ("--log-format", "json", *args), stderr=fd)
        finally:
            os.close(fd)
        return pid, start

    def run(self, args: tuple[str, ...]) -> int:
        """Run ``runc ARGS`` to the end (no log); its exit code."""
        pid, _ = self.spawn(None, args)
        _, wait_status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(wait_status)

    @staticmethod
    def error(log: str, start: int, command: str, code: int) -> str:
        """``runc COMMAND failed: <the last error runc logged in log since offset start>``."""
        import json

        message = ""
        try:
            with open(log, "rb") as handle:
                handle.seek(start)
                lines = handle.read().decode(errors="replace").splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                message = str(entry.get("msg", ""))
        prefix = f"runc {command} failed: "
        return prefix + (one_line(message).removeprefix(prefix) or f"exit status {code}")

    @staticmethod
    def knows(container_id: str) -> bool:
        """Whether runc still has state for ``container_id`` (under its default root)."""
        return os.path.exists(os.path.join(RUNC_STATE_ROOT, container_id))


def await_runc_for(bundle: str, timeout: float) -> None:
    """Wait (up to ``timeout`` seconds) until no process runs ``runc ... --bundle BUNDLE``.

    A monitor that dies while ``runc run`` works leaves that runc running; it
    still makes and starts the container. Whoever settles the container must let
    it finish first, or the container would start after it was deleted.
    """
    marker = b"\0--bundle\0" + os.fsencode(bundle) + b"\0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as handle:
                    busy = marker in b"\0" + handle.read()
            except OSError:
                continue
            if busy:
                break
        if not busy:
            return
        time.sleep(0.05)
