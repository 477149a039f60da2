"""The node agent's containers: start, watch, cancel, stream logs, and re-adopt after a restart.

:class:`ContainerManager` keeps one directory per container under
``STATE_DIR/containers/<id>/``; the directory *is* the container's record, so a
new manager on the same state dir (an agent restart) sees every container by
reading them - there is nothing else to re-adopt. The files:

``config.json``          the OCI runtime config: the directory is the container's bundle
``spec.json``            the :class:`~fuzz.substrate.runtime.bundle.ContainerSpec`
``status.json``          state, exit code, times, peak memory... (atomic writes)
``stdout.log``, ``stderr.log``  the job's output (the job itself)
``cancel``               a cancel request with its grace (manager)
``rootfs/``              the overlay root's mount point (in the monitor's mount namespace)
``upper/``, ``work/``    the overlay's upper dir (the job's changes) and work dir
``netns``                the job's network namespace, bind-mounted (in the monitor's mount
                         namespace; see :mod:`fuzz.substrate.monitor.netns`)
``files/``               the files placed in the container, ``0``, ``1``, ... (bind-mounted
                         read-only; see :mod:`fuzz.substrate.monitor.placed`)

(runc's log and pid file live on the monitor's own tmpfs, ``STATE_DIR/monitor.run``.)
A directory without ``status.json`` is a container being started.

The node's container monitor (:mod:`fuzz.substrate.monitor.process`) makes and writes
these (but ``cancel``): one long-lived process per state dir, started by the
first manager call that needs it and shared by every later manager, independent
of the agent - agent restarts do not touch running jobs. The manager builds the
OCI config and hands it over with the spec in one request on the monitor's unix
socket (:mod:`fuzz.substrate.runtime.monitor_client`); the monitor renames a directory
made in advance into place, mounts the overlay, runs ``runc run --detach``, is
the inits' subreaper, and enforces timeouts and cancels. The manager reads the
status files itself and asks the monitor only to start, wait, cancel and settle.

If the monitor dies (kill -9, the node's OOM killer), the exit status of the
containers it watched is lost for good (their inits are no longer anybody's
children who could report it), so they are not re-adopted: the next manager
call starts a new monitor, which kills and deletes them and records them as
``failed`` with an error saying so - limits and timeouts stay enforced, and
nothing unmonitored keeps running.

Deployment note: the monitor must survive the agent's service restarts; under
systemd that means ``KillMode=process`` for the agent's unit (as containerd
does). Stop it (:meth:`ContainerManager.shutdown_monitor`) only to stop every job.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import dataclasses
import json
import os
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from fuzz.errors import FuzzError
from fuzz.fsutil import read_json, write_json_atomic
from fuzz.substrate.monitor.files import (
    CANCEL_FILE,
    CONFIG_FILE,
    CONTAINERS_DIR,
    FILES_DIR,
    FINAL_STATES,
    ROOTFS_DIR,
    SPEC_FILE,
    STATUS_FILE,
    new_status,
)
from fuzz.substrate.monitor.jobnet import AUTO, RESOLV_FILE, JobNetwork, netns_path
from fuzz.substrate.monitor.sandbox import PREFIX as SANDBOX_PREFIX
from fuzz.substrate.runtime.bundle import (
    ID_PATTERN,
    NOFILE_LIMIT,
    ContainerSpec,
    JobNamespace,
    hosts_file,
    oci_config,
    sandbox_key,
    spec_from_json,
    spec_to_json,
)
from fuzz.substrate.runtime.execproc import ExecProcess, ExecSpec
from fuzz.substrate.runtime.monitor_client import (
    START_TIMEOUT,
    MonitorClient,
    MonitorError,
    MonitorGoneError,
    MonitorRefusedError,
)
from fuzz.substrate.runtime.trash import Trash

State = Literal["starting", "running", "exited", "failed"]
LOG_CHUNK = 64 * 1024
SLOW_POLL = 0.05  # while another thread's start of the container is under way
WANTED_POLL = 1.0  # how often a wait asks whether it is still wanted
HOSTS_DIR = "etc-hosts"  # in the state dir: the /etc/hosts of each multinode job's rank


class ContainerError(FuzzError):
    """A container operation failed (runc missing, the monitor would not start...)."""


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

    The agent's typed view of the document
    :func:`~fuzz.substrate.monitor_files.new_status` defines (each field a key of it).

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


def _mounts_under(prefix: str) -> list[str]:
    """Mount points at or below ``prefix`` (a path without symlinks) in our own mount
    namespace."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


class ContainerManager:
    """Runs containers with runc through the node's container monitor, under ``state_dir``.

    Any number of managers (in one process or in successive agent processes) may
    share a state dir: all they keep is in the container directories, and they
    share one monitor. A manager holds no resources; there is nothing to close.
    """

    def __init__(self, state_dir: Path, runc: str = "runc",
                 network: JobNetwork | None = None) -> None:
        """Manage the containers under ``state_dir``, running them with ``runc``.

        Jobs are put on ``network`` (default: a namespace of their own on a
        subnet the monitor picks; see :mod:`fuzz.substrate.monitor.jobnet`).
        """
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / CONTAINERS_DIR
        self.runc = runc
        self.network = network or JobNetwork.parse(AUTO)
        self._runc: str | None = None
        self._state_dir_made = False
        self._monitor = MonitorClient(self.state_dir, self.network.argument())
        self._trash = Trash(self.root)
        self._root_resolved: str | None = None

    # --- paths

    def runc_path(self) -> str:
        """The absolute path of the runc binary (ContainerError when it is not installed)."""
        if self._runc is None:
            found = shutil.which(self.runc)
            if found is None:
                raise ContainerError(f"runc not found ({self.runc!r}): apt-get install runc")
            self._runc = os.path.abspath(found)
        return self._runc

    def _real_root(self) -> str:
        """:attr:`root` with its symlinks resolved (once: resolving costs a system call
        per path component, and ``remove`` compares it with mount points at every job)."""
        if self._root_resolved is None:
            self._root_resolved = str(self.root.resolve())
        return self._root_resolved

    def container_dir(self, container_id: str) -> Path:
        """The directory of an existing container (ContainerNotFoundError otherwise)."""
        directory = self.root / container_id
        if not ID_PATTERN.fullmatch(container_id) or not directory.is_dir():
            raise ContainerNotFoundError(f"no container {container_id!r} on this node")
        return directory

    # --- starting

    def start(self, spec: ContainerSpec, prepare: bool = False) -> ContainerStatus:
        """Start ``spec``'s container and return once it runs (or has already ended).

        Setup failures (a bad rootfs, runc refusing the config) come back as a
        ``failed`` status with the reason in ``error``, not as exceptions.
        ``prepare``: only create it (``runc create``: bundle, overlay, namespaces,
        cgroup; the user's process not started) and return, still ``starting``;
        :meth:`start_prepared` starts it, :meth:`cancel` ends it unstarted.
        """
        runc = self.runc_path()
        directory = self.root / spec.id
        if directory.exists():
            raise ContainerExistsError(f"container {spec.id!r} already exists")
        if not self._state_dir_made:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._state_dir_made = True
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)
        config = oci_config(spec, directory / ROOTFS_DIR, nofile, self._job_network(directory),
                            self._hosts_file(spec), files_dir=directory / FILES_DIR)
        request = {
            "op": "start",
            "id": spec.id,
            "runc": runc,
            "rootfs": str(spec.rootfs),
            "config": json.dumps(config),
            "spec": json.dumps(spec_to_json(spec)),
            "timeout": spec.timeout_seconds,
            "grace": spec.stop_grace_seconds,
            "log_limit": spec.log_limit_bytes or None,
            "cgroup": config["linux"]["cgroupsPath"],
            "tenant": str(spec.uid),  # a job's network namespace serves the same uid again
            "peers": list(spec.peers),
            "files": [base64.b64encode(item.content).decode() for item in spec.files],
            "prepare": prepare,
        }
        key = None if prepare else sandbox_key(spec)
        if key is not None:
            request["sandbox"] = key  # the monitor runs it in that task sandbox
        try:
            answer = self._monitor.request(request, runc, START_TIMEOUT, idempotent=False)
        except MonitorGoneError:  # it died while starting it: its successor settles it
            if directory.is_dir():
                return self.status(spec.id)
            raise ContainerError(f"container {spec.id}: the container monitor died") from None
        except MonitorRefusedError as exc:
            if exc.answer.get("exists"):
                raise ContainerExistsError(f"container {spec.id!r} already exists") from None
            raise ContainerError(f"cannot start container {spec.id}: {exc}") from None
        except MonitorError as exc:
            raise ContainerError(f"cannot start container {spec.id}: {exc}") from None
        status = answer.get("status") if answer else None
        if not isinstance(status, dict):
            raise ContainerError(f"container {spec.id} did not start within {START_TIMEOUT:.0f}s")
        return ContainerStatus.from_json(spec.id, status)

    def start_prepared(self, container_id: str) -> ContainerStatus:
        """Start a container made by ``start(spec, prepare=True)`` (only ``runc start``
        is left to do); return once it runs (or has already ended)."""
        self.container_dir(container_id)
        try:
            answer = self._monitor.request({"op": "go", "id": container_id}, None,
                                           START_TIMEOUT, idempotent=False)
        except MonitorRefusedError as exc:
            raise ContainerStateError(f"cannot start container {container_id}: {exc}") from None
        except MonitorError as exc:
            raise ContainerError(f"cannot start container {container_id}: {exc}") from None
        status = answer.get("status") if answer else None
        if not isinstance(status, dict):
            raise ContainerError(
                f"container {container_id} did not start within {START_TIMEOUT:.0f}s")
        return ContainerStatus.from_json(container_id, status)

    def _job_network(self, directory: Path) -> JobNamespace | None:
        """Where the job's network namespace and resolv.conf will be (None: the host's)."""
        if self.network.host:
            return None
        return JobNamespace(netns_path(directory), self.state_dir / RESOLV_FILE)

    def _hosts_file(self, spec: ContainerSpec) -> Path | None:
        """Write the container's /etc/hosts when it has lines of its own (its multinode
        job's ranks); None: it keeps its image's. In the state dir, as resolv.conf is:
        the container directory is the monitor's to make."""
        if not spec.hosts:
            return None
        path = self.state_dir / HOSTS_DIR / spec.id
        path.parent.mkdir(mode=0o755, exist_ok=True)
        path.write_text(hosts_file(spec))
        path.chmod(0o644)
        return path

    def reserve_address(self, container_id: str) -> str | None:
        """The address container ``container_id`` will have once started (None: host network).

        For the ranks of a multinode job, whose peers must know it before any starts.
        """
        if self.network.host:
            return None
        if not self._state_dir_made:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._state_dir_made = True
        try:
            answer = self._monitor.request({"op": "reserve", "id": container_id},
                                           self.runc_path(), START_TIMEOUT)
        except MonitorError as exc:
            raise ContainerError(f"cannot reserve an address for {container_id}: {exc}") from None
        address = answer.get("address") if answer else None
        return str(address) if address else None

    # --- reading

    def status(self, container_id: str) -> ContainerStatus:
        """The container's current status (a dead monitor is noticed and dealt with here)."""
        directory = self.container_dir(container_id)
        data = read_json(str(directory / STATUS_FILE))
        if data is None or data.get("state") not in FINAL_STATES:
            data = self._unfinished(container_id, directory, data)
        return ContainerStatus.from_json(container_id, data or new_status(container_id))

    def _unfinished(
        self, container_id: str, directory: Path, data: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The status of an unfinished container, settled first if no monitor watches it.

        Cheap while the monitor lives: a lock probe. When it is dead, asking the
        monitor starts a new one, whose first act is to kill and record as
        ``failed`` every container its predecessor left unfinished.
        """
        if data is not None and self._monitor.alive():
            return data
        try:
            answer = self._monitor.request(
                {"op": "check", "id": container_id}, self.runc_path(), START_TIMEOUT
            )
        except MonitorGoneError:
            return read_json(str(directory / STATUS_FILE))
        except MonitorError as exc:
            raise ContainerError(f"container {container_id}: {exc}") from None
        status = answer.get("status") if answer else None
        return status if isinstance(status, dict) else data

    def running_pid(self, container_id: str) -> int:
        """The host pid of a running container's init (ContainerStateError unless it runs)."""
        status = self.status(container_id)
        data = read_json(str(self.container_dir(container_id) / STATUS_FILE)) or {}
        pid = data.get("pid")
        if status.state != "running" or not isinstance(pid, int):
            raise ContainerStateError(f"container {container_id} is {status.state}, not running")
        return pid

    def start_exec(self, spec: ExecSpec) -> ExecProcess:
        """Start ``spec``'s process in its container, which must be running (for a task
        of a task sandbox: in the sandbox, as the task's user, env and cwd)."""
        self.running_pid(spec.container_id)
        runc_spec = dataclasses.replace(spec, container_id=self.runc_id(spec.container_id))
        return ExecProcess(self.runc_path(), runc_spec, self.process_config(spec.container_id))

    def runc_id(self, container_id: str) -> str:
        """The runc container that runs ``container_id``'s job: its own, or for a task of
        a task sandbox (:mod:`fuzz.substrate.monitor.sandbox`) the sandbox's."""
        data = read_json(str(self.container_dir(container_id) / STATUS_FILE)) or {}
        sandbox = data.get("sandbox")
        if isinstance(sandbox, str) and sandbox.startswith(SANDBOX_PREFIX) \
                and ID_PATTERN.fullmatch(sandbox[1:]):
            return sandbox
        return container_id

    def process_config(self, container_id: str) -> dict[str, Any]:
        """The ``process`` of the container's OCI config (what ``runc exec`` starts from)."""
        data = read_json(str(self.container_dir(container_id) / CONFIG_FILE))
        process = data.get("process") if data else None
        if not isinstance(process, dict):
            raise ContainerError(f"container {container_id}: config.json has no process")
        return process

    def spec(self, container_id: str) -> ContainerSpec:
        """The spec the container was started with."""
        data = read_json(str(self.container_dir(container_id) / SPEC_FILE))
        if data is None:
            raise ContainerError(f"container {container_id}: spec.json is missing or unreadable")
        return spec_from_json(data)

    def list(self) -> builtins.list[ContainerStatus]:
        """Every container on this node, sorted by id."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in sorted(self.root.iterdir()):
            if not ID_PATTERN.fullmatch(entry.name):
                continue  # the monitor's spare directory
            try:
                found.append(self.status(entry.name))
            except ContainerNotFoundError:  # removed while we looked
                continue
        return found

    def wait(self, container_id: str, timeout: float | None = None,
             wanted: Callable[[], bool] | None = None) -> ContainerStatus:
        """Block until the container has finished; ContainerWaitTimeoutError after ``timeout``,
        or as soon as ``wanted`` (asked every :data:`WANTED_POLL` seconds) says the wait is
        no longer wanted (its caller went away, the agent stops)."""
        started = time.monotonic()
        while True:
            status = self.status(container_id)
            if status.finished:
                return status
            remaining = None if timeout is None else timeout - (time.monotonic() - started)
            if remaining is not None and remaining <= 0:
                raise ContainerWaitTimeoutError(
                    f"container {container_id} still {status.state} after {timeout:g}s"
                )
            if wanted is not None and not wanted():
                raise ContainerWaitTimeoutError(
                    f"container {container_id} still {status.state}: the wait is over")
            if wanted is not None:
                remaining = WANTED_POLL if remaining is None else min(remaining, WANTED_POLL)
            try:
                answer = self._monitor.request(
                    {"op": "wait", "id": container_id}, self.runc_path(), remaining
                )
            except MonitorGoneError:
                continue  # status() settles what the dead monitor left
            except MonitorError as exc:
                raise ContainerError(f"container {container_id}: {exc}") from None
            if answer is None:
                continue  # timed out: the next round says so
            data = answer.get("status")
            if isinstance(data, dict) and data.get("state") in FINAL_STATES:
                return ContainerStatus.from_json(container_id, data)
            time.sleep(SLOW_POLL if remaining is None else min(SLOW_POLL, remaining))

    def log_sizes(self, container_id: str) -> tuple[int, int]:
        """How many bytes the job wrote to stdout and stderr so far."""
        directory = self.root / container_id
        sizes = []
        for stream in ("stdout", "stderr"):
            try:
                sizes.append((directory / f"{stream}.log").stat().st_size)
            except OSError:
                sizes.append(0)
        return sizes[0], sizes[1]

    def read_logs(
        self,
        container_id: str,
        stream: Literal["stdout", "stderr"] = "stdout",
        offset: int = 0,
        follow: bool = False,
        poll: float = 0.1,
        wanted: Callable[[], bool] | None = None,
    ) -> Iterator[bytes]:
        """Yield the bytes of the job's ``stream`` from ``offset`` on.

        With ``follow``, keep yielding new output until the container has finished
        and the file is drained (or ``wanted``, asked while it waits for output,
        says no more); otherwise stop at the current end of the file.
        """
        if stream not in ("stdout", "stderr"):
            raise ContainerError(f"unknown log stream {stream!r} (stdout or stderr)")
        if offset < 0:
            raise ContainerError(f"log offset must be >= 0, not {offset}")
        path = self.container_dir(container_id) / f"{stream}.log"
        return self._follow(container_id, path, offset, follow, poll, wanted)

    def _follow(
        self, container_id: str, path: Path, offset: int, follow: bool, poll: float,
        wanted: Callable[[], bool] | None,
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
                if finished or not follow or (wanted is not None and not wanted()):
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
        """Ask the monitor to stop the job: SIGTERM now, SIGKILL after ``grace_seconds``.

        A no-op for a finished container. Asking again with a shorter grace
        brings the SIGKILL forward; a request made while the container is still
        starting takes effect the moment it runs.
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
        # No monitor: the next one kills whatever its predecessor left.
        with contextlib.suppress(MonitorError):
            self._monitor.request({"op": "cancel", "id": container_id}, None, START_TIMEOUT)

    def remove(self, container_id: str) -> None:
        """Delete a finished container's directory (logs included), once it is cleaned up."""
        directory = self.container_dir(container_id)
        status = self.status(container_id)
        if not status.finished:
            raise ContainerStateError(
                f"container {container_id} is {status.state}; cancel it and wait first"
            )
        try:  # the monitor may still be cleaning it up (runc delete, unmount)
            answer = self._monitor.request(
                {"op": "wait", "id": container_id, "cleaned": True},
                self.runc_path(),
                START_TIMEOUT,
            )
        except MonitorError as exc:
            raise ContainerError(f"container {container_id}: {exc}") from None
        if answer is None:
            raise ContainerStateError(f"container {container_id} is still being cleaned up")
        real = os.path.join(self._real_root(), container_id)
        mounted = _mounts_under(real) + self._monitor.mounts_under(real)
        if mounted:
            raise ContainerStateError(
                f"container {container_id} still has mounts ({mounted[0]}); not removing it"
            )
        for secret_bearing in (CONFIG_FILE, SPEC_FILE):  # the job's env: gone when this returns
            (directory / secret_bearing).unlink(missing_ok=True)
        self._trash.discard(directory)
        (self.state_dir / HOSTS_DIR / container_id).unlink(missing_ok=True)

    def shutdown_monitor(self, timeout: float = START_TIMEOUT, grace: float | None = None
                         ) -> None:
        """Stop the node's container monitor: every job stops (SIGTERM, its grace but at
        most ``grace`` seconds when given, SIGKILL).

        For tests and node shutdown only; an agent that stops or restarts must
        leave the monitor (and the jobs) running. The next call that needs a
        monitor starts a new one.
        """
        try:
            self._monitor.shutdown(timeout, grace)
        except MonitorError as exc:
            raise ContainerError(str(exc)) from None
