"""The node agent's containers: start, watch, cancel, stream logs, and re-adopt after a restart.

:class:`ContainerManager` keeps one directory per container under
``STATE_DIR/containers/<id>/``; the directory *is* the container's record, so a
new manager on the same state dir (an agent restart) sees every container by
reading them - there is nothing else to re-adopt. The files:

``spec.json``            the :class:`~fuzz.substrate.bundle.ContainerSpec` (manager)
``image``                symlink to the image's rootfs, the overlay's lower layer (manager)
``bundle/config.json``   the OCI runtime config (manager)
``status.json``          state, exit code, times, peak memory... (shim; atomic)
``stdout.log``, ``stderr.log``  the job's output (the job itself)
``shim.lock``            ``flock``-ed by the container's shim for its whole life
``cancel``               a cancel request with its grace (manager)
``overlay/``             the overlay's upper (the job's changes) and work dirs (shim)
``shim.log``, ``runc.log``      diagnostics of the shim and runc

Each container is run and watched by its own shim process
(:mod:`fuzz.substrate.shim`), which is independent of the agent: agent restarts
do not touch running jobs. A shim that dies while its container is not finished
(kill -9, the node's OOM killer) leaves a job nobody can account for, so the
first manager to notice - any :meth:`ContainerManager.status` call - kills and
deletes the container and records it as ``failed`` with an error saying so:
limits and timeouts stay enforced, and nothing unmonitored keeps running.

Deployment note: the shims must survive the agent's service restarts; under
systemd that means ``KillMode=process`` for the agent's unit (as containerd does).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import fuzz
from fuzz.errors import FuzzError
from fuzz.substrate.bundle import (
    ID_PATTERN,
    NOFILE_LIMIT,
    ContainerSpec,
    device_node,
    oci_config,
    spec_from_json,
    spec_to_json,
)
from fuzz.substrate.shim import (
    BUNDLE_DIR,
    CANCEL_FILE,
    IMAGE_LINK,
    LOCK_FILE,
    ROOTFS_DIR,
    SHIM_LOG,
    SPEC_FILE,
    STATUS_FILE,
)
from fuzz.substrate.statedir import read_json, write_json_atomic

State = Literal["starting", "running", "exited", "failed"]
FINAL_STATES = ("exited", "failed")
START_TIMEOUT = 60.0
LOG_CHUNK = 64 * 1024
FAST_POLL = 0.002  # status polling while a start or short job is likely to finish soon
SLOW_POLL = 0.05
FAST_POLL_PERIOD = 0.5
SHIM_MAIN = "import sys; from fuzz.substrate.shim import main; sys.exit(main())"


class ContainerError(FuzzError):
    """A container operation failed (runc missing, shim would not start...)."""


class ContainerNotFoundError(ContainerError):
    """No container with that id exists on this node."""


class ContainerExistsError(ContainerError):
    """A container with that id already exists on this node."""


class ContainerStateError(ContainerError):
    """The container is in the wrong state for the operation (e.g. removing a running one)."""


class ContainerWaitTimeoutError(ContainerError):
    """The container did not finish within the time given to wait."""


@dataclass(frozen=True)
class ContainerStatus:
    """What is known about one container, as its ``status.json`` says.

    ``exit_code`` is set when the job exited, ``signal`` when a signal killed it;
    ``error`` explains a ``failed`` state (or a cleanup problem) in one line.
    """

    id: str
    state: State
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    cancelled: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    peak_memory_bytes: int | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        """True once the container is ``exited`` or ``failed`` (nothing will change)."""
        return self.state in FINAL_STATES

    @classmethod
    def from_json(cls, container_id: str, data: dict[str, Any]) -> ContainerStatus:
        """Build a status from the dict in ``status.json``."""
        raw = data.get("state")
        state = cast(State, raw) if raw in ("running", "exited", "failed") else "starting"

        def number(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, int | float) else None

        def integer(key: str) -> int | None:
            value = data.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        error = data.get("error")
        return cls(
            id=container_id,
            state=state,
            exit_code=integer("exit_code"),
            signal=integer("signal"),
            oom_killed=bool(data.get("oom_killed")),
            timed_out=bool(data.get("timed_out")),
            cancelled=bool(data.get("cancelled")),
            started_at=number("started_at"),
            finished_at=number("finished_at"),
            peak_memory_bytes=integer("peak_memory_bytes"),
            error=str(error) if error is not None else None,
        )


def _initial_status(container_id: str) -> dict[str, Any]:
    return {
        "id": container_id,
        "state": "starting",
        "oom_killed": False,
        "timed_out": False,
        "cancelled": False,
    }


def _lock_held(path: Path) -> bool:
    """True while some process (the shim) holds the exclusive ``flock`` on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)
    return False


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory`` in our mount namespace."""
    prefix = str(directory.resolve())
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


class ContainerManager:
    """Runs containers with runc through per-container shims, under ``state_dir/containers``.

    Any number of managers (in one process or in successive agent processes) may
    share a state dir: all they keep is in the container directories.
    """

    def __init__(self, state_dir: Path, runc: str = "runc") -> None:
        """Manage the containers under ``state_dir``, running them with ``runc``."""
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "containers"
        self.runc = runc

    # --- paths

    def _runc_path(self) -> str:
        found = shutil.which(self.runc)
        if found is None:
            raise ContainerError(f"runc not found ({self.runc!r}): apt-get install runc")
        return os.path.abspath(found)

    def container_dir(self, container_id: str) -> Path:
        """The directory of an existing container (ContainerNotFoundError otherwise)."""
        directory = self.root / container_id
        if not ID_PATTERN.fullmatch(container_id) or not directory.is_dir():
            raise ContainerNotFoundError(f"no container {container_id!r} on this node")
        return directory

    # --- starting

    def start(self, spec: ContainerSpec) -> ContainerStatus:
        """Start ``spec``'s container and return once it runs (or has already ended).

        Setup failures (a bad rootfs, runc refusing the config) come back as a
        ``failed`` status with the reason in ``error``, not as exceptions.
        """
        runc = self._runc_path()
        devices = [device_node(path) for path in spec.devices]
        self.root.mkdir(parents=True, exist_ok=True)
        directory = self.root / spec.id
        try:
            directory.mkdir()
        except FileExistsError:
            raise ContainerExistsError(f"container {spec.id!r} already exists") from None
        # Held from the start and handed to the shim, so that the container is never
        # seen without a live holder (which would make it look orphaned).
        lock_fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            bundle = directory / BUNDLE_DIR
            bundle.mkdir()
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            nofile = NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)
            config = oci_config(spec, bundle / ROOTFS_DIR, devices, nofile)
            (directory / SPEC_FILE).write_text(json.dumps(spec_to_json(spec)))
            (directory / IMAGE_LINK).symlink_to(spec.rootfs)
            (bundle / "config.json").write_text(json.dumps(config))
            write_json_atomic(directory / STATUS_FILE, _initial_status(spec.id))
            self._spawn_shim(directory, runc, lock_fd)
        finally:
            os.close(lock_fd)
        return self._await_start(spec.id)

    def _spawn_shim(self, directory: Path, runc: str, lock_fd: int) -> None:
        """Start the shim, passing it ``lock_fd`` (the held lock) to keep for its life."""
        package_root = str(Path(fuzz.__file__).resolve().parent.parent)
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        env["PYTHONPATH"] = package_root
        command = [
            sys.executable,
            "-S",  # no site-packages: the shim needs the stdlib and fuzz only, and starts faster
            "-c",  # `-m fuzz.substrate.shim` works too, but runpy's imports cost ~20 ms
            SHIM_MAIN,
            str(directory.resolve()),
            "--runc",
            runc,
            "--lock-fd",
            str(lock_fd),
        ]
        try:
            with open(directory / SHIM_LOG, "ab") as log:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(lock_fd,),
                    start_new_session=True,
                    env=env,
                    cwd="/",
                )
        except OSError as exc:
            status = _initial_status(directory.name)
            status.update(state="failed", error=f"cannot start the shim: {exc}")
            write_json_atomic(directory / STATUS_FILE, status)
            raise ContainerError(f"cannot start the shim for {directory.name}: {exc}") from None
        process.wait()  # the shim forks at once and this first process exits

    def _await_start(self, container_id: str) -> ContainerStatus:
        started = time.monotonic()
        while True:
            status = self.status(container_id)
            if status.state != "starting":
                return status
            elapsed = time.monotonic() - started
            if elapsed > START_TIMEOUT:
                raise ContainerError(
                    f"container {container_id} did not start within {START_TIMEOUT:.0f}s"
                )
            time.sleep(FAST_POLL if elapsed < FAST_POLL_PERIOD else SLOW_POLL)

    # --- reading

    def status(self, container_id: str) -> ContainerStatus:
        """The container's current status (a dead shim is noticed and dealt with here)."""
        directory = self.container_dir(container_id)
        data = read_json(directory / STATUS_FILE) or _initial_status(container_id)
        if data.get("state") not in FINAL_STATES and not _lock_held(directory / LOCK_FILE):
            data = self._orphaned(container_id, directory)
        return ContainerStatus.from_json(container_id, data)

    def _orphaned(self, container_id: str, directory: Path) -> dict[str, Any]:
        """The shim is gone before the end: kill and delete the container, record ``failed``."""
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another manager is cleaning up right now
                return read_json(directory / STATUS_FILE) or _initial_status(container_id)
            data = read_json(directory / STATUS_FILE) or _initial_status(container_id)
            if data.get("state") in FINAL_STATES:  # the shim finished just now
                return data
            with contextlib.suppress(ContainerError, OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    [self._runc_path(), "delete", "--force", container_id],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
            shim = data.get("shim_pid")
            detail = _last_line(directory / SHIM_LOG)
            error = (
                f"the container's monitor (shim pid {shim}) died; the container was killed"
                " and its exit status is lost"
                if shim
                else "the container's monitor (shim) exited before the container started"
            )
            data.update(
                state="failed",
                finished_at=time.time(),
                error=f"{error}: {detail}" if detail else error,
            )
            write_json_atomic(directory / STATUS_FILE, data)
            return data
        finally:
            os.close(fd)

    def spec(self, container_id: str) -> ContainerSpec:
        """The spec the container was started with."""
        data = read_json(self.container_dir(container_id) / SPEC_FILE)
        if data is None:
            raise ContainerError(f"container {container_id}: spec.json is missing or unreadable")
        return spec_from_json(data)

    def list(self) -> builtins.list[ContainerStatus]:
        """Every container on this node, sorted by id."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in sorted(self.root.iterdir()):
            try:
                found.append(self.status(entry.name))
            except ContainerNotFoundError:  # removed while we looked
                continue
        return found

    def wait(self, container_id: str, timeout: float | None = None) -> ContainerStatus:
        """Block until the container has finished; ContainerWaitTimeoutError after ``timeout``."""
        started = time.monotonic()
        while True:
            status = self.status(container_id)
            if status.finished:
                return status
            elapsed = time.monotonic() - started
            if timeout is not None and elapsed >= timeout:
                raise ContainerWaitTimeoutError(
                    f"container {container_id} still {status.state} after {timeout:g}s"
                )
            pause = FAST_POLL if elapsed < FAST_POLL_PERIOD else SLOW_POLL
            if timeout is not None:
                pause = min(pause, max(timeout - elapsed, 0.0))
            time.sleep(pause)

    def read_logs(
        self,
        container_id: str,
        stream: Literal["stdout", "stderr"] = "stdout",
        offset: int = 0,
        follow: bool = False,
        poll: float = 0.1,
    ) -> Iterator[bytes]:
        """Yield the bytes of the job's ``stream`` from ``offset`` on.

        With ``follow``, keep yielding new output until the container has finished
        and the file is drained; otherwise stop at the current end of the file.
        """
        if stream not in ("stdout", "stderr"):
            raise ContainerError(f"unknown log stream {stream!r} (stdout or stderr)")
        if offset < 0:
            raise ContainerError(f"log offset must be >= 0, not {offset}")
        path = self.container_dir(container_id) / f"{stream}.log"
        return self._follow(container_id, path, offset, follow, poll)

    def _follow(
        self, container_id: str, path: Path, offset: int, follow: bool, poll: float
    ) -> Iterator[bytes]:
        handle = None
        finished = False
        try:
            while True:
                if handle is None:
                    try:
                        handle = open(path, "rb")  # noqa: SIM115 - kept open across yields
                        handle.seek(offset)
                    except FileNotFoundError:
                        handle = None
                chunk = handle.read(LOG_CHUNK) if handle is not None else b""
                if chunk:
                    yield chunk
                    continue
                if finished or not follow:
                    return
                # Check first, then drain once more: output written before the end
                # is never lost, and nothing can be written after it.
                finished = self.status(container_id).finished
                if not finished:
                    time.sleep(poll)
        finally:
            if handle is not None:
                handle.close()

    # --- acting

    def cancel(self, container_id: str, grace_seconds: float = 10.0) -> None:
        """Ask the shim to stop the job: SIGTERM now, SIGKILL after ``grace_seconds``.

        A no-op for a finished container. Asking again with a shorter grace
        brings the SIGKILL forward; a request made before the job started keeps
        it from ever running.
        """
        if grace_seconds < 0:
            raise ContainerError(f"grace must be >= 0 seconds, not {grace_seconds}")
        directory = self.container_dir(container_id)
        if self.status(container_id).finished:
            return
        write_json_atomic(
            directory / CANCEL_FILE,
            {"grace_seconds": float(grace_seconds), "requested_at": time.time()},
        )

    def remove(self, container_id: str) -> None:
        """Delete a finished container's directory (logs included)."""
        directory = self.container_dir(container_id)
        status = self.status(container_id)
        if not status.finished:
            raise ContainerStateError(
                f"container {container_id} is {status.state}; cancel it and wait first"
            )
        mounted = _mounts_under(directory)
        if mounted:
            raise ContainerStateError(
                f"container {container_id} still has mounts ({mounted[0]}); not removing it"
            )
        shutil.rmtree(directory)
