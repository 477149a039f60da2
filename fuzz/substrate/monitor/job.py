"""One container's life inside the monitor: launch, watch, record, clean up.

A :class:`Job` is a small state machine driven by the monitor's event loop
(:mod:`fuzz.substrate.monitor.server`) through the pidfds it asks the loop to
watch; nothing in it blocks. Its phases:

``launching``  the container directory is in place (see
               :mod:`fuzz.substrate.monitor.files`), the overlay root is mounted
               and ``runc run --detach`` is running, with the job's log files as
               its stdio (which the job inherits)
``prepared``   (a start request with ``prepare``) ``runc create`` has made the
               container, whose init waits in runc's exec fifo for ``runc start``
               (the ``go`` request): the user's process has not started; a cancel
               kills the init (the job ends ``cancelled``, then is cleaned up)
``running``    runc has exited; the container's init is the monitor's child (the
               monitor is a child subreaper), watched through a pidfd, with the
               wall-clock timeout, cancel requests and the peak memory tracked
``cleaning``   the job has ended and its final ``status.json`` is written (exit
               code or signal, OOM kill and peak memory, read before the cgroup
               goes); the container is deleted (by the monitor itself where
               :mod:`~fuzz.substrate.monitor.delete` may, else by ``runc delete
               --force``), then the overlay is unmounted
``done``       cleaned up: runc no longer knows the container (a cleanup
               problem is added to the status's ``error``)

Waiters learn of the end at ``cleaning``: cleanup is not on the path of the
job's result, and a manager that wants the directory (``remove``) waits for
``done``. Every status write is atomic (temp file + rename); the ones a client
waits for use temp files made in advance. A container with no ``status.json``
is starting.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import signal
import time

from fuzz.fsutil import read_json
from fuzz.substrate.monitor.cgroup import CgroupMount, MemoryCgroup
from fuzz.substrate.monitor.delete import delete_ended
from fuzz.substrate.monitor.files import (
    CANCEL_FILE,
    CONFIG_FILE,
    FINAL_STATES,
    NETNS_FILE,
    ROOTFS_DIR,
    SPEC_FILE,
    STATUS_FILE,
    STATUS_TEMPS,
    STDERR_LOG,
    STDOUT_LOG,
    UPPER_DIR,
    WORK_DIR,
    new_status,
    one_line,
    write_json,
)
from fuzz.substrate.monitor.logpump import LogPump, open_pipe
from fuzz.substrate.monitor.placed import PlacementError, write_placed_files
from fuzz.substrate.monitor.runc import Runc, await_runc_for
from fuzz.substrate.monitor.spare import Premount, image_identity, unmount_bet
from fuzz.substrate.monitor.syscalls import SysError, mount_overlay, unmount

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from fuzz.substrate.monitor.hostview import HostView

    class Host(Protocol):
        """What a job needs from the event loop that drives it."""

        cgroup_mounts: list[CgroupMount]
        host_view: HostView

        def watch(self, fd: int, callback: Callable[[], None]) -> None:
            """Call ``callback`` whenever ``fd`` is readable."""

        def unwatch(self, fd: int) -> None:
            """Stop watching ``fd``."""

        def job_changed(self, job: Job) -> None:
            """The job's state or phase changed: answer whoever waits for it."""

        def network_ended(self, job: Job) -> None:
            """The job's container is gone; its network namespace may be used again."""


PEAK_WRITE_INTERVAL = 2.0  # how often a grown peak is written while the job runs
DEFAULT_GRACE = 10.0
SETTLE_WAIT = 60.0  # the longest an orphaned `runc run` is waited for


PRIVATE_MODE = 0o600  # config.json and spec.json hold the job's env: its secrets' values


def write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (made in advance, usually: opening it is then cheap),
    readable by root only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)  # a spare's file was made with another mode
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def cancel_request(
    directory: str, seen: tuple[int, int] | None
) -> tuple[float | None, tuple[int, int] | None]:
    """The grace of a new cancel request in ``directory``'s ``cancel`` file (None: there
    is none, or it is the one ``seen`` already), and the stamp to remember."""
    path = os.path.join(directory, CANCEL_FILE)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None, seen
    stamp = (info.st_ino, info.st_mtime_ns)
    if stamp == seen:
        return None, seen
    grace = (read_json(path) or {}).get("grace_seconds", DEFAULT_GRACE)
    return (max(float(grace), 0.0) if isinstance(grace, int | float) else DEFAULT_GRACE), stamp


class JobError(Exception):
    """Setting up or watching the container failed; the message is one line."""


class Job:
    """Runs one container with runc and records what became of it in ``status.json``."""

    def __init__(self, host: Host, directory: str, request: dict[str, Any], run_dir: str) -> None:
        """The container whose directory is ``directory``, as a ``start`` request describes it.

        The request names the image rootfs (the overlay's lower dir), the OCI
        config and the spec (JSON texts, written as they are), the runc binary,
        the wall-clock ``timeout`` and stop ``grace`` in seconds, the OCI
        ``cgroup`` path where peak memory and OOM kills are read, and the
        ``log_limit`` in bytes of each of stdout and stderr (none: unlimited; see
        :mod:`~fuzz.substrate.monitor.logpump`), and the ``files`` placed in the
        container (base64, in the order of the config's mounts of ``files/N``; see
        :mod:`~fuzz.substrate.monitor.placed`). ``run_dir`` (a tmpfs) takes runc's pid
        file and log for the container.
        """
        self.host = host
        self.dir = directory
        self.id = os.path.basename(directory)
        self.pid_file = os.path.join(run_dir, f"{self.id}.pid")
        self.log = os.path.join(run_dir, f"{self.id}.log")
        self.runc = Runc(str(request["runc"]))
        self.lower = str(request["rootfs"])
        self.tenant = str(request.get("tenant", ""))  # whose jobs may share its namespace
        self.config_text = str(request["config"])
        self.spec_text: str | None = str(request["spec"])
        files = request.get("files")
        self.files: list[str] = [str(text) for text in files] if isinstance(files, list) else []
        timeout, grace, cgroup = request.get("timeout"), request.get("grace"), request.get("cgroup")
        self.timeout = float(timeout) if isinstance(timeout, int | float) else None
        self.grace = float(grace) if isinstance(grace, int | float) else DEFAULT_GRACE
        self.cgroups_path = cgroup if isinstance(cgroup, str) and cgroup.startswith("/") else None
        log_limit = request.get("log_limit")
        self.log_limit = log_limit if isinstance(log_limit, int) and log_limit > 0 else None
        self.pumps: list[LogPump] = []  # copying the job's output, with a log limit
        self.status = new_status(self.id, self.runc.binary, os.getpid())
        self.status_temps = list(STATUS_TEMPS)
        self.phase = "launching"
        self.mounted = False
        self.staged = False  # copies of the host's bind sources (monitor.hostview)
        self.netns_mounted = False  # the job's network namespace, on its NETNS_FILE
        self.peers: list[str] = []  # addresses of its multinode peers, let through
        self.image: Premount | None = None  # the image mounted, once it is
        self.created = False  # runc may have made the container: cleanup deletes it
        self.runc_pid = 0
        self.runc_fd = -1
        self.runc_log_start = 0
        self.pid = 0
        self.pidfd = -1
        self.reaped = False
        self.cgroup: MemoryCgroup | None = None
        self.cancel_seen: tuple[int, int] | None = None
        self.pending_grace: float | None = None  # a cancel that came while launching
        self.deadline: float | None = None
        self.kill_at: float | None = None
        self.killed = False
        self.next_peak_write = 0.0
        # Create only (``runc create``), to be started by :meth:`go`: the start's
        # remaining cost is then ``runc start``.
        self.prepare = request.get("prepare") is True
        self.passed = -1  # a descriptor its init gets as fd 3 (a task sandbox's socket)

    def attach_network(self, address: str | None, peers: list[str]) -> None:
        """The job runs in the namespace bound on its ``netns`` file, at ``address``,
        and reaches ``peers`` (the other ranks of its multinode job).

        None: it keeps the node's network (nothing is bound).
        """
        self.peers = peers
        if address is not None:
            self.netns_mounted = True
            self.status["address"] = address

    def path(self, *names: str) -> str:
        """A path inside the container directory."""
        return os.path.join(self.dir, *names)

    def write(self, waited_for: bool = False) -> None:
        """Write ``status.json`` atomically (``waited_for``: with a temp file made in advance)."""
        tmp = self.path(self.status_temps.pop()) if waited_for and self.status_temps else None
        write_json(self.path(STATUS_FILE), self.status, tmp)

    def write_spec(self) -> None:
        """Write ``spec.json`` (once)."""
        if self.spec_text is not None:
            write_private(self.path(SPEC_FILE), self.spec_text)
            self.spec_text = None

    @property
    def final(self) -> bool:
        """Whether the job's outcome is recorded (cleanup may still run)."""
        return self.status["state"] in FINAL_STATES

    # --- launching

    def launch(self, premount: Premount | None = None) -> None:
        """Write the bundle, spec and placed files, mount the overlay, start ``runc run
        --detach``; never raises.

        ``premount``: the image whose overlay is mounted on ``rootfs`` already
        (:mod:`fuzz.substrate.monitor.spare`).
        """
        try:
            self.staged = True  # whatever happens next, the host binds are to be released
            write_private(self.path(CONFIG_FILE),
                        self.host.host_view.bind_sources(self.id, self.config_text))
            self.write_spec()
            files, self.files = self.files, []
            if files:
                write_placed_files(self.dir, [base64.b64decode(text, validate=True)
                                              for text in files])
            self.mount_rootfs(premount)
            self.spawn_run()
        except binascii.Error:
            self.fail("setting up: the start request's files are not base64")
        except (JobError, SysError, PlacementError, OSError) as exc:
            self.fail(str(exc) if not isinstance(exc, OSError) else f"setting up: {exc}")

    def mount_rootfs(self, premount: Premount | None) -> None:
        """Mount the writable overlay (lower: the image rootfs) on ``rootfs``."""
        if premount is not None:
            self.mounted = True  # whatever happens next, it is to be unmounted
        image = image_identity(self.lower)
        if image is None:
            raise JobError(f"rootfs {os.path.realpath(self.lower)} is not a directory")
        if premount == image:
            self.image = image
            return
        if premount is not None:
            problem = unmount_bet(self.dir)
            if problem is not None:
                raise JobError(problem)
            self.mounted = False
        mount_overlay(image[0], self.path(UPPER_DIR), self.path(WORK_DIR), self.path(ROOTFS_DIR))
        self.mounted = True
        self.image = image

    def spawn_run(self) -> None:
        """``runc run --detach`` (``runc create`` to prepare) with the job's output as its
        (and the job's) stdio."""
        out = self.output(STDOUT_LOG)
        try:
            err = self.output(STDERR_LOG)
            try:
                pid_file = self.pid_file
                verb: tuple[str, ...] = ("create",) if self.prepare else ("run", "--detach")
                if self.passed >= 0:
                    verb += ("--preserve-fds", "1")
                args = (*verb, "--bundle", self.dir, "--pid-file", pid_file, self.id)
                self.created = True
                self.runc_pid, self.runc_log_start = self.runc.spawn(
                    self.log, args, out, err, self.passed)
            finally:
                os.close(err)
        finally:
            os.close(out)
        self.runc_fd = os.pidfd_open(self.runc_pid)
        self.host.watch(self.runc_fd, self.on_run_exit)

    def output(self, log_name: str) -> int:
        """What the job writes one stream to: its log file, or, with a log limit, a pipe
        that a :class:`LogPump` copies into the log file (the caller closes it)."""
        if self.log_limit is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            return os.open(self.path(log_name), flags, 0o640)
        read_end, write_end = open_pipe()
        try:
            pump = LogPump(read_end, self.path(log_name), self.log_limit)
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        self.pumps.append(pump)
        self.host.watch(read_end, lambda: self.on_output(pump))
        return write_end

    def on_output(self, pump: LogPump) -> None:
        """A pipe of the job's output is readable: copy it on; close it at its end."""
        if not pump.pump():
            self.host.unwatch(pump.read_end)
            pump.close()
            self.pumps.remove(pump)

    def _runc_exit_code(self) -> int | None:
        """runc's exit code once it has exited (None: not yet, a spurious wakeup)."""
        pid, wait_status = os.waitpid(self.runc_pid, os.WNOHANG)
        if pid == 0:
            return None
        self.host.unwatch(self.runc_fd)
        os.close(self.runc_fd)
        self.runc_fd = -1
        self.runc_pid = 0
        return os.waitstatus_to_exitcode(wait_status)

    def on_run_exit(self) -> None:
        """runc is done: the job runs (its init is now our child), or runc failed."""
        code = self._runc_exit_code()
        if code is None:
            return
        if code != 0:
            self.fail(Runc.error(self.log, self.runc_log_start,
                                 "create" if self.prepare else "run", code))
            return
        try:
            with open(self.pid_file, encoding="ascii") as handle:
                self.pid = int(handle.read().strip())
            # The init is our child (runc exited, we are a subreaper), so its pid
            # cannot be reused before we reap it: the pidfd and signals are race-free.
            self.pidfd = os.pidfd_open(self.pid)
        except (OSError, ValueError) as exc:
            self.fail(one_line(f"finding the container's init: {exc}"))
            return
        if self.cgroups_path:
            self.cgroup = MemoryCgroup.at(self.cgroups_path, self.host.cgroup_mounts)
        if self.prepare:
            self.on_prepared()
            return
        self.status.update(pid=self.pid, started_at=time.time())
        self.on_started()

    def on_prepared(self) -> None:
        """``runc create`` is done: the init waits for :meth:`go` (or is cancelled)."""
        if self.reap():  # the init died before it was started
            return
        self.phase = "prepared"
        self.host.watch(self.pidfd, self.on_init_exit)
        if self.pending_grace is not None:  # cancelled while it was being created
            self.stop(self.pending_grace)
            return
        self.host.job_changed(self)

    def go(self) -> None:
        """Start the prepared container (``runc start``); waiters learn once it runs."""
        if self.phase != "prepared" or self.killed:
            return
        self.phase = "launching"
        self.host.unwatch(self.pidfd)
        try:
            self.runc_pid, self.runc_log_start = self.runc.spawn(self.log, ("start", self.id))
            self.runc_fd = os.pidfd_open(self.runc_pid)
        except OSError as exc:
            self.send(signal.SIGKILL)
            self.killed = True
            self.fail(f"runc start failed: {exc}")
            return
        self.host.watch(self.runc_fd, self.on_start_exit)

    def on_start_exit(self) -> None:
        """``runc start`` is done: the job runs (or has already ended), or it failed."""
        code = self._runc_exit_code()
        if code is None:
            return
        self.status.update(pid=self.pid, started_at=time.time())
        if code != 0:
            error = Runc.error(self.log, self.runc_log_start, "start", code)
            if not self.reap():
                self.send(signal.SIGKILL)
                self.killed = True
                self.fail(error)
            return
        self.on_started()

    def on_started(self) -> None:
        """The user's process runs (its init is our child): watch it."""
        if self.reap():  # already over (a short job)
            return
        now = time.monotonic()
        self.phase = "running"
        self.deadline = None if self.timeout is None else now + self.timeout
        self.next_peak_write = now + PEAK_WRITE_INTERVAL
        self.status["state"] = "running"
        self.write(waited_for=True)
        self.host.watch(self.pidfd, self.on_init_exit)
        if self.pending_grace is not None:
            self.status["cancelled"] = True
            self.terminate(self.pending_grace)
        self.host.job_changed(self)

    # --- running

    def reap(self) -> bool:
        """Record the init's exit if it has exited; True then."""
        try:
            pid, wait_status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.fail(f"container init (pid {self.pid}) is not the monitor's child")
            return True
        if pid == 0:
            return False
        self.reaped = True
        self.record_exit(wait_status)
        return True

    def on_init_exit(self) -> None:
        """The init's pidfd is readable: it has exited."""
        self.reap()

    def on_cancel(self) -> None:
        """A manager wrote the ``cancel`` file: stop the job (SIGTERM, grace, SIGKILL)."""
        grace, self.cancel_seen = cancel_request(self.dir, self.cancel_seen)
        if grace is not None:
            self.stop(grace)

    def stop(self, grace: float | None = None) -> None:
        """Cancel the job with ``grace`` (default: its own stop grace)."""
        grace = self.grace if grace is None else grace
        if self.phase == "launching":
            self.pending_grace = (
                grace if self.pending_grace is None else min(grace, self.pending_grace)
            )
        elif self.phase == "prepared":  # the user's process never started: nothing to stop
            self.status["cancelled"] = True
            self.send(signal.SIGKILL)
            self.killed = True
        elif self.phase == "running":
            self.status["cancelled"] = True
            self.terminate(grace)

    def send(self, signum: int) -> None:
        """Signal the container's init (its pid namespace dies with it)."""
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signum)

    def terminate(self, grace: float) -> None:
        """SIGTERM now, SIGKILL once ``grace`` seconds have passed (an earlier deadline wins)."""
        if self.killed:
            return
        if grace <= 0:
            self.send(signal.SIGKILL)
            self.killed = True
            return
        self.send(signal.SIGTERM)
        deadline = time.monotonic() + grace
        self.kill_at = deadline if self.kill_at is None else min(self.kill_at, deadline)

    def update_peak(self) -> bool:
        """Fold the cgroup's current peak into the status; True when it grew."""
        peak = self.cgroup.peak() if self.cgroup else None
        if peak is None or peak <= (self.status["peak_memory_bytes"] or 0):
            return False
        self.status["peak_memory_bytes"] = peak
        return True

    def next_wakeup(self) -> float | None:
        """The monotonic time at which :meth:`tick` has something to do (None: never)."""
        if self.phase != "running":
            return None
        moments = [self.deadline, None if self.killed else self.kill_at]
        if self.cgroup is not None:
            moments.append(self.next_peak_write)
        return min((moment for moment in moments if moment is not None), default=None)

    def tick(self, now: float) -> None:
        """Enforce the timeout and the SIGKILL deadline; write a grown peak now and then."""
        if self.phase != "running":
            return
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            self.status["timed_out"] = True
            self.terminate(self.grace)
        if self.kill_at is not None and now >= self.kill_at and not self.killed:
            self.send(signal.SIGKILL)
            self.killed = True
        if now >= self.next_peak_write:
            self.next_peak_write = now + PEAK_WRITE_INTERVAL
            if self.update_peak():
                self.write()

    # --- ending

    def record_exit(self, wait_status: int) -> None:
        """Fill exit code or signal, OOM and peak memory (the cgroup still exists), then end."""
        if os.WIFSIGNALED(wait_status):
            self.status["signal"] = os.WTERMSIG(wait_status)
        else:
            self.status["exit_code"] = os.waitstatus_to_exitcode(wait_status)
        self.update_peak()
        if self.cgroup is not None:
            kills = self.cgroup.oom_kills()
            if kills is not None:
                self.status["oom_killed"] = kills > 0
            else:  # an old kernel without the counter: killed by SIGKILL, not by us
                self.status["oom_killed"] = (
                    self.status["signal"] == signal.SIGKILL
                    and not self.killed
                    and self.cgroup.hit_limit()
                )
        self.status["state"] = "exited"
        self.end()

    def fail(self, error: str) -> None:
        """End as ``failed`` with ``error`` (one line)."""
        self.status.update(state="failed", error=one_line(error))
        self.end()

    def end(self) -> None:
        """Write the final status, tell the waiters, then clean up."""
        self.status["finished_at"] = time.time()
        self.phase = "cleaning"
        if self.pidfd >= 0:
            self.host.unwatch(self.pidfd)
        for pump in self.pumps:  # the job is over: its output is in the pipes, or lost
            self.host.unwatch(pump.read_end)
            pump.drain()
        self.pumps.clear()
        self.write_spec()
        self.write(waited_for=True)
        self.host.job_changed(self)
        if not self.created or (self.reaped and delete_ended(self.id)):
            self.cleaned([])
            return
        try:
            pid, self.runc_log_start = self.runc.spawn_logging(
                self.log, ("delete", "--force", self.id)
            )
            self.runc_pid = pid
            self.runc_fd = os.pidfd_open(pid)
        except OSError as exc:
            self.cleaned([f"runc delete failed: {exc}"])
            return
        self.host.watch(self.runc_fd, self.on_delete_exit)

    def on_delete_exit(self) -> None:
        """``runc delete`` is done: note a failure if runc still knows the container."""
        code = self._runc_exit_code()
        if code is None:
            return
        problems = []
        if code != 0 and Runc.knows(self.id):
            problems.append(Runc.error(self.log, self.runc_log_start, "delete", code))
        self.cleaned(problems)

    def cleaned(self, problems: list[str]) -> None:
        """Unmount the overlay and the host binds, drop runc's log and pid file; note
        problems in the status; done."""
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        if self.mounted:
            problem = unmount(self.path(ROOTFS_DIR))
            if problem:
                problems.append(problem)
            self.mounted = False
        if self.staged:
            problems.extend(self.host.host_view.release(self.id))
            self.staged = False
        if self.netns_mounted:
            if not problems:  # deleted cleanly: nothing of the job runs in it
                self.host.network_ended(self)
            problem = unmount(self.path(NETNS_FILE))
            if problem:
                problems.append(problem)
            self.netns_mounted = False
        for path in (self.log, self.pid_file):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if problems:
            previous = self.status["error"]
            self.status["error"] = "; ".join([previous, *problems] if previous else problems)
            self.write()
        self.phase = "done"
        self.host.job_changed(self)

    def known_pids(self) -> tuple[int, ...]:
        """The pids of this job's children (runc, the init) that it will reap itself."""
        return tuple(pid for pid in (self.runc_pid, 0 if self.reaped else self.pid) if pid)


def orphan_error(status: dict[str, Any] | None) -> str:
    """Why a container that no live monitor watches was failed (one line)."""
    monitor = (status or {}).get("monitor_pid")
    if not monitor:
        return "the container's monitor died while starting it; the container was killed"
    return (
        f"the container's monitor (pid {monitor}) died; the container was killed"
        " and its exit status is lost"
    )


def settle(directory: str, runc: Runc) -> dict[str, Any] | None:
    """Settle a container that no live monitor watches; return its status.

    One whose status is not final is deleted in runc (which kills it) and
    recorded ``failed`` (:func:`orphan_error`); a final one that runc still
    knows (its monitor died during the cleanup) is deleted in runc. Runs runc to
    the end: used by the monitor's startup sweep and for the rare orphan found
    later. Returns None when ``directory`` has vanished. (Its overlay was
    mounted in the dead monitor's mount namespace, which is gone.)
    """
    status_path = os.path.join(directory, STATUS_FILE)
    status = read_json(status_path)
    container_id = os.path.basename(directory)
    final = status is not None and status.get("state") in FINAL_STATES
    if final and not Runc.knows(container_id):
        return status
    if not final and not os.path.isdir(directory):
        return None
    error = orphan_error(status)
    if status is None:  # its monitor died while starting it: let that runc finish first
        await_runc_for(directory, SETTLE_WAIT)
        status = new_status(container_id, runc.binary)
    binary = status.get("runc")
    runner = Runc(binary) if isinstance(binary, str) and binary else runc
    problem = None
    try:
        code = runner.run(("delete", "--force", container_id))
    except OSError as exc:
        code, problem = -1, one_line(f"runc delete --force {container_id}: {exc}")
    if code != 0 and problem is None and Runc.knows(container_id):
        problem = f"runc delete --force {container_id} failed with exit status {code}"
    if not final:
        status.update(state="failed", error=error, finished_at=time.time())
    if problem:
        status["error"] = f"{status['error']}; {problem}" if status.get("error") else problem
    if problem or not final:
        write_json(status_path, status)
    return status
