"""The manager's side of the container monitor: find it (or start it), ask it, stop it.

The monitor (:mod:`fuzz.substrate.monitor.process`) is found through its socket in the
state dir; when nothing answers there and nobody holds ``monitor.lock``, a new
one is started and waited for (it settles what its predecessor left before it
answers). Each request is one connection: a JSON line out, a JSON line back.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from fuzz.errors import FuzzError
from fuzz.fsutil import flock_held
from fuzz.substrate.monitor.files import (
    MONITOR_LOCK,
    MONITOR_LOG,
    socket_address,
    socket_path_too_long,
)
from fuzz.substrate.monitor.jobnet import AUTO
from fuzz.substrate.runtime.helper_process import helper_command, helper_env

START_TIMEOUT = 60.0  # the monitor's start (its sweep included), or a container's
MONITOR_MAIN = "import sys; from fuzz.substrate.monitor.process import main; sys.exit(main())"
RETRY_PAUSE = 0.01


class MonitorError(FuzzError):
    """The container monitor could not be started, or refused a request."""


class MonitorGoneError(MonitorError):
    """No monitor is running, or it died before it answered."""


class MonitorRefusedError(MonitorError):
    """The monitor answered with an error; ``answer`` is all it said."""

    def __init__(self, answer: dict[str, Any]) -> None:
        """Keep the monitor's whole answer (``error`` is the message)."""
        super().__init__(str(answer.get("error")))
        self.answer = answer


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


class MonitorClient:
    """Talks to the monitor of one state dir, starting it when there is none."""

    def __init__(self, state_dir: Path, network: str = AUTO) -> None:
        """The monitor of ``state_dir`` (which must exist before the first request).

        ``network`` is the job network a monitor started here sets up
        (:meth:`fuzz.substrate.monitor.jobnet.JobNetwork.argument`).
        """
        self.state_dir = os.path.abspath(state_dir)
        self.network = network
        self.lock_path = os.path.join(self.state_dir, MONITOR_LOCK)
        self.log_path = Path(self.state_dir, MONITOR_LOG)
        self._long_path = socket_path_too_long(self.state_dir)
        self._address = None if self._long_path else socket_address(self.state_dir)

    def alive(self) -> bool:
        """Whether a monitor holds the state dir's ``monitor.lock`` (is running)."""
        return flock_held(self.lock_path)

    def pid(self) -> int | None:
        """The pid of the running monitor (None when there is none)."""
        if not self.alive():
            return None
        try:
            text = Path(self.lock_path).read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    # --- requests

    def request(
        self,
        message: dict[str, Any],
        runc: str | None,
        timeout: float | None,
        idempotent: bool = True,
    ) -> dict[str, Any] | None:
        """Send ``message``; the answer, or None when none came within ``timeout`` seconds.

        ``runc``: start a monitor (running that runc) when none runs; None:
        MonitorGoneError instead. When the monitor dies before it answers, an
        ``idempotent`` request is asked again (of its successor); any other gets
        MonitorGoneError. MonitorRefusedError when the monitor refuses.
        """
        line = json.dumps(message).encode() + b"\n"
        deadline = None if timeout is None else time.monotonic() + timeout
        retries = 2 if idempotent else 0
        while True:
            sock = self._connect(runc)
            try:
                sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0))
                sock.sendall(line)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionResetError
                    data += chunk
            except TimeoutError:
                return None
            except (ConnectionResetError, BrokenPipeError) as exc:
                # It died (perhaps while we connected: a dying monitor's socket
                # accepts for an instant after the answers it owed are lost).
                if retries <= 0:
                    raise MonitorGoneError(
                        "the container monitor died before it answered"
                    ) from exc
                retries -= 1
                time.sleep(RETRY_PAUSE)  # let it finish dying; _connect finds its successor
                continue
            finally:
                sock.close()
            answer = json.loads(data)
            if not isinstance(answer, dict):
                raise MonitorError(f"the container monitor answered {answer!r}")
            if "error" not in answer:
                return answer
            if not answer.get("retry"):
                raise MonitorRefusedError(answer)
            self._await_exit(deadline)  # it is shutting down: ask its successor

    def _connect(self, runc: str | None) -> socket.socket:
        """A connection to the running monitor, started first when there is none."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                self._connect_once(sock)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
            except OSError as exc:
                sock.close()
                raise MonitorError(f"cannot reach the container monitor: {exc}") from exc
            if time.monotonic() > deadline:
                raise MonitorError(
                    f"no container monitor answers on {self.state_dir} after {START_TIMEOUT:.0f}s"
                    f" (see {self.log_path})"
                )
            if self.alive():  # starting (sweeping) or about to exit: ask again soon
                time.sleep(RETRY_PAUSE)
                continue
            if runc is None:
                raise MonitorGoneError("no container monitor is running")
            self._spawn(runc)

    def _connect_once(self, sock: socket.socket) -> None:
        if self._address is not None:
            sock.connect(self._address)
            return
        dir_fd = os.open(self.state_dir, os.O_PATH | os.O_CLOEXEC)
        try:
            sock.connect(socket_address(self.state_dir, dir_fd))
        finally:
            os.close(dir_fd)

    # --- starting and stopping

    def _spawn(self, runc: str) -> None:
        """Start a monitor and wait until it answers (or says another one runs)."""
        env = helper_env("pyroute2")
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        command = helper_command(MONITOR_MAIN, self.state_dir, "--runc", runc,
                                 "--ready-fd", str(ready_w), "--network", self.network)
        try:
            try:
                with open(self.log_path, "ab") as log:
                    process = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        pass_fds=(ready_w,),
                        start_new_session=True,
                        env=env,
                        cwd="/",
                    )
            finally:
                os.close(ready_w)
            process.wait()  # it forks at once; this first process exits
            answer = self._read_until_eof(ready_r, time.monotonic() + START_TIMEOUT)
        except OSError as exc:
            raise MonitorError(f"cannot start the container monitor: {exc}") from exc
        finally:
            os.close(ready_r)
        if answer.strip() not in (b"ready", b"busy"):
            detail = _last_line(self.log_path) or "no reason given"
            raise MonitorError(
                f"the container monitor did not start: {detail} (see {self.log_path})"
            )

    @staticmethod
    def _read_until_eof(fd: int, deadline: float) -> bytes:
        data = b""
        poller = select.poll()  # not select(): the agent may have a thousand fds open
        poller.register(fd, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return data
            if poller.poll(remaining * 1000):
                chunk = os.read(fd, 512)
                if not chunk:
                    return data
                data += chunk

    def _await_exit(self, deadline: float | None) -> None:
        while self.alive():
            if deadline is not None and time.monotonic() > deadline:
                raise MonitorError(f"the container monitor (pid {self.pid()}) did not exit")
            time.sleep(RETRY_PAUSE)

    def shutdown(self, timeout: float = START_TIMEOUT, grace: float | None = None) -> None:
        """Stop the monitor (it stops its jobs first, each with its own grace but at most
        ``grace`` seconds when given) and wait until it has exited."""
        deadline = time.monotonic() + timeout
        request: dict[str, Any] = {"op": "shutdown"}
        if grace is not None:
            request["grace"] = grace
        with contextlib.suppress(MonitorGoneError):
            self.request(request, None, timeout)
        self._await_exit(deadline)

    def mounts_under(self, prefix: str) -> list[str]:
        """Mount points at or below ``prefix`` (a path without symlinks) in the monitor's
        mount namespace."""
        pid = self.pid()
        if pid is None:
            return []
        found = []
        try:
            with open(f"/proc/{pid}/mountinfo", encoding="utf-8") as handle:
                for line in handle:
                    point = line.split()[4].replace("\\040", " ")
                    if point == prefix or point.startswith(prefix + "/"):
                        found.append(point)
        except OSError:
            return []
        return found
