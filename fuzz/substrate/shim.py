"""The per-container monitor ("shim"): one small process per container, outliving the agent.

Run as ``python -m fuzz.substrate.shim CONTAINER_DIR [--runc PATH] [--lock-fd N]``
(the manager calls :func:`main` through ``python -S -c``, which skips runpy's
imports) in a new session, it forks once (so it is nobody's child and the agent
can restart freely) and then, for the container whose files the manager wrote:

1. enters a private mount namespace and mounts the overlay root filesystem
   (lower: the shared image rootfs that the ``image`` symlink points to; upper
   and work: in the container dir; merged: ``bundle/rootfs``) - the mount exists
   only for the shim and the container, so not even a killed shim can leave it
   behind on the host;
2. runs ``runc create`` with ``stdout.log``/``stderr.log`` as the job's stdio
   (runc's pass-through mode), then ``runc start``, and writes ``status.json``
   (state ``running``, pid, started_at);
3. waits for the container's init process, which is its child (it is a child
   subreaper), polling the memory cgroup for the peak, enforcing the wall-clock
   timeout and honouring cancel requests (the ``cancel`` file, re-read whenever
   it is replaced, so a second request with a shorter grace brings the SIGKILL
   forward; or SIGTERM to the shim, a cancel with a 10 s grace once the
   container exists): SIGTERM to the job, then SIGKILL after the grace;
4. reads peak memory and the OOM-kill counter before the cgroup goes, runs
   ``runc delete --force``, unmounts the overlay and writes the final
   ``status.json`` (``exited`` or ``failed``).

It holds an exclusive ``flock`` on ``shim.lock`` for its whole life (inherited
from the manager, so there is no moment when a starting container looks
unmonitored). Every status write is atomic.

Start-up speed matters (it is on the path of every job), so the module level
imports only cheap modules; json, signal and the state-dir helpers are imported
while ``runc create`` runs (:func:`preload`), and paths are plain strings.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import sys
import time

TYPE_CHECKING = False  # typing itself is too slow to import here
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

# The container directory's files, shared with fuzz.substrate.containers.
SPEC_FILE = "spec.json"
STATUS_FILE = "status.json"
CANCEL_FILE = "cancel"
LOCK_FILE = "shim.lock"
IMAGE_LINK = "image"  # symlink to the image's unpacked rootfs (the overlay's lower dir)
SHIM_LOG = "shim.log"
RUNC_LOG = "runc.log"
RUNC_ERR = "runc.err"
PID_FILE = "init.pid"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
BUNDLE_DIR = "bundle"
ROOTFS_DIR = "rootfs"  # inside BUNDLE_DIR: the overlay's merged dir
OVERLAY_DIR = "overlay"  # holds upper/ and work/
RUNC_STATE_ROOT = "/run/runc"  # runc's default --root when run as root

TICK = 0.1  # seconds between checks of cancel, timeout and memory while the job runs
PEAK_WRITE_INTERVAL = 2.0  # how often a grown peak is written while the job runs
SIGNAL_GRACE = 10.0  # grace of a cancel sent as SIGTERM to the shim itself
SIGKILL = 9
SIGTERM = 15

PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2


class ShimError(Exception):
    """Setting up or watching the container failed; the message is one line."""


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(text.split())


def preload() -> None:
    """Import the modules needed once the container exists (run while runc works)."""
    import json  # noqa: F401
    import signal  # noqa: F401

    import fuzz.substrate.statedir  # noqa: F401


def write_status(directory: str, status: dict[str, Any]) -> None:
    """Write ``status`` to ``directory/status.json`` atomically."""
    from pathlib import Path

    from fuzz.substrate.statedir import write_json_atomic

    write_json_atomic(Path(directory, STATUS_FILE), status)


# --- cgroups ----------------------------------------------------------------------------


def _cgroup_mounts() -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, fs type, super options) of every cgroup mount we can see."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) >= 5 and tail and tail[0] in ("cgroup", "cgroup2"):
                options = set(tail[2].split(",")) if len(tail) > 2 else set()
                found.append((fields[3], fields[4], tail[0], options))
    return found


def _under(mount_point: str, mount_root: str, path: str) -> str:
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root) :]
    return os.path.join(mount_point, path.lstrip("/"))


class MemoryCgroup:
    """The memory cgroup of a process: its peak usage and its OOM kills (v1 or v2)."""

    def __init__(self, directory: str, version: int) -> None:
        """Read the cgroup at ``directory`` (a v1 memory or a v2 unified hierarchy)."""
        self.directory = directory
        self.version = version

    @classmethod
    def of(cls, pid: int) -> MemoryCgroup | None:
        """The memory cgroup of ``pid`` as ``/proc/<pid>/cgroup`` names it, if any."""
        v1_path = v2_path = None
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
            for line in handle:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "memory" in controllers.split(","):
                    v1_path = path
                elif controllers == "":
                    v2_path = path
        mounts = _cgroup_mounts()
        for root, point, kind, options in mounts:
            if v1_path is not None and kind == "cgroup" and "memory" in options:
                return cls(_under(point, root, v1_path), 1)
        for root, point, kind, _ in mounts:
            if v2_path is not None and kind == "cgroup2":
                return cls(_under(point, root, v2_path), 2)
        return None

    def _read(self, name: str) -> str | None:
        try:
            with open(os.path.join(self.directory, name), encoding="ascii") as handle:
                return handle.read()
        except OSError:
            return None

    def _number(self, name: str) -> int | None:
        text = self._read(name)
        return int(text) if text is not None and text.strip().isdigit() else None

    def _key(self, name: str, key: str) -> int | None:
        for line in (self._read(name) or "").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
                return int(parts[1])
        return None

    def peak(self) -> int | None:
        """The highest memory usage the cgroup has seen, in bytes."""
        return self._number("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak")

    def oom_kills(self) -> int | None:
        """How many processes the OOM killer killed in the cgroup (None: unknown)."""
        if self.version == 1:
            return self._key("memory.oom_control", "oom_kill")
        return self._key("memory.events", "oom_kill")

    def hit_limit(self) -> bool:
        """Whether an allocation ever failed against the limit (v1 ``memory.failcnt``)."""
        return bool(self._number("memory.failcnt")) if self.version == 1 else False


# --- the monitor --------------------------------------------------------------------------


class Shim:
    """Runs one container and records what became of it in ``status.json``."""

    def __init__(self, directory: str, runc: str) -> None:
        """Monitor the container described in ``directory``, using the ``runc`` binary."""
        self.dir = directory
        self.runc = runc
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.status: dict[str, Any] = {
            "id": os.path.basename(directory),
            "state": "starting",
            "exit_code": None,
            "signal": None,
            "oom_killed": False,
            "timed_out": False,
            "cancelled": False,
            "started_at": None,
            "finished_at": None,
            "peak_memory_bytes": None,
            "error": None,
            "pid": None,
            "shim_pid": os.getpid(),
        }
        self.signalled = False  # SIGTERM/SIGINT to the shim: cancel with SIGNAL_GRACE
        self.cancel_seen: tuple[int, int] | None = None
        self.kill_at: float | None = None
        self.killed = False
        self.pid = 0
        self.pidfd = -1
        self.mounted = False
        self.created = False
        self.cgroup: MemoryCgroup | None = None

    def path(self, *names: str) -> str:
        """A path inside the container directory."""
        return os.path.join(self.dir, *names)

    def write(self, **changes: Any) -> None:
        """Update the status and write ``status.json`` atomically."""
        self.status.update(changes)
        write_status(self.dir, self.status)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM or SIGINT to the shim: cancel the job with SIGNAL_GRACE."""
        self.signalled = True

    def _libc_call(self, what: str, result: int) -> None:
        if result != 0:
            raise ShimError(f"{what}: {os.strerror(ctypes.get_errno())}")

    # --- runc

    def spawn_runc(
        self, *args: str, stdout: int | None = None, stderr: int | None = None
    ) -> tuple[int, int]:
        """Start ``runc ARGS`` (stdin /dev/null); return its pid and its log's start offset.

        ``stdout``/``stderr`` default to /dev/null and ``runc.err``. runc also
        logs to ``runc.log`` as JSON, which is where its errors are read from:
        with the job's stderr as its stderr they would be mixed into that file.
        """
        log = self.path(RUNC_LOG)
        try:
            log_start = os.stat(log).st_size
        except FileNotFoundError:
            log_start = 0
        argv = [self.runc, "--log", log, "--log-format", "json", *args]
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        err = os.open(self.path(RUNC_ERR), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC)
        try:
            actions = [
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, devnull if stdout is None else stdout, 1),
                (os.POSIX_SPAWN_DUP2, err if stderr is None else stderr, 2),
            ]
            pid = os.posix_spawnp(self.runc, argv, os.environ, file_actions=actions)
        finally:
            os.close(devnull)
            os.close(err)
        return pid, log_start

    def finish_runc(self, pid: int, log_start: int, command: str) -> None:
        """Wait for the runc started by :meth:`spawn_runc`; ShimError quoting it on failure."""
        _, wait_status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(wait_status)
        if code != 0:
            message = self._runc_error(log_start) or f"exit status {code}"
            prefix = f"runc {command} failed: "
            raise ShimError(prefix + message.removeprefix(prefix))

    def run_runc(self, *args: str) -> None:
        """Run ``runc ARGS`` to the end (see :meth:`spawn_runc` and :meth:`finish_runc`)."""
        pid, log_start = self.spawn_runc(*args)
        self.finish_runc(pid, log_start, args[0])

    def _runc_error(self, start: int) -> str:
        """The last error runc logged since offset ``start``, else its stderr."""
        import json

        message = ""
        try:
            with open(self.path(RUNC_LOG), "rb") as handle:
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
        if not message:
            try:
                with open(self.path(RUNC_ERR), encoding="utf-8", errors="replace") as handle:
                    message = handle.read()
            except OSError:
                message = ""
        return one_line(message)

    # --- setting up

    def isolate_mounts(self) -> None:
        """Enter a private mount namespace: our mounts never show on (or leak to) the host."""
        self._libc_call("unshare(CLONE_NEWNS)", self.libc.unshare(CLONE_NEWNS))
        self._libc_call(
            "making mounts private", self.libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
        )

    def mount_overlay(self) -> None:
        """Mount the writable overlay (lower: the image rootfs) on ``bundle/rootfs``."""
        lower = os.path.realpath(self.path(IMAGE_LINK))
        if not os.path.isdir(lower):
            raise ShimError(f"rootfs {lower} is not a directory")
        upper = self.path(OVERLAY_DIR, "upper")
        work = self.path(OVERLAY_DIR, "work")
        merged = self.path(BUNDLE_DIR, ROOTFS_DIR)
        for directory in (upper, work, merged):
            os.makedirs(directory, exist_ok=True)
        if any(ch in self.dir + lower for ch in ",:\\"):
            raise ShimError(f"paths {self.dir} and {lower} must not contain ',', ':' or '\\'")
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        self._libc_call(
            f"mounting the overlay on {merged}",
            self.libc.mount(b"overlay", merged.encode(), b"overlay", 0, options.encode()),
        )
        self.mounted = True

    def create(self, container_id: str) -> None:
        """``runc create`` with the job's log files as its stdio; learn the init's pid."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        out = os.open(self.path(STDOUT_LOG), flags, 0o640)
        err = os.open(self.path(STDERR_LOG), flags, 0o640)
        pid_file = self.path(PID_FILE)
        try:
            self.created = True  # from here on, cleanup runs `runc delete --force`
            bundle = self.path(BUNDLE_DIR)
            create = ("create", "--bundle", bundle, "--pid-file", pid_file, container_id)
            pid, log_start = self.spawn_runc(*create, stdout=out, stderr=err)
        finally:
            os.close(out)
            os.close(err)
        preload()  # costs no wall-clock time while runc works on another core
        self.finish_runc(pid, log_start, "create")
        with open(pid_file, encoding="ascii") as handle:
            self.pid = int(handle.read().strip())
        # The init is our child now (see main), so its pid cannot be reused until
        # we reap it: the pidfd and the signals sent through it are race-free.
        self.pidfd = os.pidfd_open(self.pid)
        try:
            self.cgroup = MemoryCgroup.of(self.pid)
        except (OSError, ValueError):
            self.cgroup = None

    # --- watching

    def cancel_request(self) -> float | None:
        """The grace of a new cancel request (file or signal), None when there is none."""
        import json

        if self.signalled:
            self.signalled = False
            return SIGNAL_GRACE
        path = self.path(CANCEL_FILE)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return None
        stamp = (info.st_ino, info.st_mtime_ns)
        if stamp == self.cancel_seen:
            return None
        self.cancel_seen = stamp
        try:
            with open(path, encoding="utf-8") as handle:
                grace = float(json.load(handle).get("grace_seconds", SIGNAL_GRACE))
        except (OSError, ValueError, AttributeError, TypeError):
            grace = SIGNAL_GRACE
        return max(grace, 0.0)

    def send(self, signum: int) -> None:
        """Signal the container's init (its pid namespace dies with it)."""
        import signal

        try:  # noqa: SIM105 - contextlib is one import too many here
            signal.pidfd_send_signal(self.pidfd, signum)
        except ProcessLookupError:
            pass

    def terminate(self, grace: float) -> None:
        """SIGTERM now, SIGKILL once ``grace`` seconds have passed (an earlier deadline wins)."""
        if self.killed:
            return
        if grace <= 0:
            self.send(SIGKILL)
            self.killed = True
            return
        self.send(SIGTERM)
        deadline = time.monotonic() + grace
        self.kill_at = deadline if self.kill_at is None else min(self.kill_at, deadline)

    def reap(self) -> int | None:
        """The init's wait status once it has exited (reaping any other orphan too)."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                raise ShimError(f"container init (pid {self.pid}) is not our child") from None
            if pid == 0:
                return None
            if pid == self.pid:
                return wait_status

    def update_peak(self) -> bool:
        """Fold the cgroup's current peak into the status; True when it grew."""
        peak = self.cgroup.peak() if self.cgroup else None
        if peak is None or peak <= (self.status["peak_memory_bytes"] or 0):
            return False
        self.status["peak_memory_bytes"] = peak
        return True

    def watch(self, timeout: float | None, grace: float) -> int:
        """Wait for the init to exit, enforcing timeout and cancel; return its wait status."""
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        next_write = now + PEAK_WRITE_INTERVAL
        while True:
            wait_status = self.reap()
            if wait_status is not None:
                return wait_status
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                deadline = None
                self.status["timed_out"] = True
                self.terminate(grace)
            cancel_grace = self.cancel_request()
            if cancel_grace is not None:
                self.status["cancelled"] = True
                self.terminate(cancel_grace)
            if self.kill_at is not None and now >= self.kill_at and not self.killed:
                self.send(SIGKILL)
                self.killed = True
            if self.update_peak() and now >= next_write:
                self.write()
                next_write = now + PEAK_WRITE_INTERVAL
            wait = TICK
            for moment in (deadline, None if self.killed else self.kill_at):
                if moment is not None:
                    wait = min(wait, moment - now)
            poller.poll(max(wait, 0.0) * 1000)

    def record_exit(self, wait_status: int) -> None:
        """Fill exit code or signal, OOM and peak memory (the cgroup still exists)."""
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
                    self.status["signal"] == SIGKILL and not self.killed and self.cgroup.hit_limit()
                )
        self.status["state"] = "exited"

    # --- the whole life

    def run(self) -> None:
        """Set up, start, watch and clean up the container; always end with a final status."""
        container_id = self.status["id"]
        try:
            self.isolate_mounts()
            self.mount_overlay()
            self.create(container_id)
            import json
            import signal

            signal.signal(signal.SIGTERM, self.on_signal)
            signal.signal(signal.SIGINT, self.on_signal)
            with open(self.path(SPEC_FILE), encoding="utf-8") as handle:
                spec = json.load(handle)
            self.status["pid"] = self.pid
            if self.cancel_request() is not None:  # cancelled before the start: never runs
                self.status["cancelled"] = True
                self.send(SIGKILL)
                self.killed = True
            else:
                started_at = time.time()
                self.run_runc("start", container_id)
                self.write(state="running", started_at=started_at)
            timeout = spec.get("timeout_seconds")
            grace = float(spec.get("stop_grace_seconds", SIGNAL_GRACE))
            self.record_exit(self.watch(timeout, grace))
        except ShimError as exc:
            self.status.update(state="failed", error=str(exc))
        except Exception as exc:  # a bug: still end as "failed" and clean up
            import traceback

            traceback.print_exc()
            self.status.update(state="failed", error=one_line(f"shim error: {exc!r}"))
        finally:
            self.cleanup(container_id)
            self.status["finished_at"] = time.time()
            self.write()

    def cleanup(self, container_id: str) -> None:
        """Delete the runc container and unmount the overlay; note failures in ``error``."""
        problems = []
        if self.created:
            try:
                self.run_runc("delete", "--force", container_id)
            except (ShimError, OSError) as exc:
                if os.path.exists(os.path.join(RUNC_STATE_ROOT, container_id)):
                    problems.append(str(exc))
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        if self.mounted:
            merged = self.path(BUNDLE_DIR, ROOTFS_DIR).encode()
            if self.libc.umount2(merged, 0) != 0:
                code = ctypes.get_errno()
                if code != errno.EINVAL and self.libc.umount2(merged, MNT_DETACH) != 0:
                    problems.append(f"unmounting the overlay: {os.strerror(code)}")
            self.mounted = False
        if problems:
            previous = self.status["error"]
            self.status["error"] = "; ".join([previous, *problems] if previous else problems)


# --- the process --------------------------------------------------------------------------


def _parse(argv: list[str]) -> tuple[str, str, int | None]:
    directory: str | None = None
    runc = "runc"
    lock_fd: int | None = None
    items = iter(argv)
    for item in items:
        if item == "--runc":
            runc = next(items, runc)
        elif item == "--lock-fd":
            lock_fd = int(next(items, "-1"))
        elif directory is None:
            directory = item
        else:
            raise SystemExit(f"unexpected argument {item!r}")
    if directory is None:
        raise SystemExit("usage: python -m fuzz.substrate.shim CONTAINER_DIR [--runc PATH]")
    return os.path.abspath(directory), runc, lock_fd


def main(argv: list[str] | None = None) -> int:
    """Entry point: hold the lock, detach, become a subreaper and run the container."""
    directory, runc, lock_fd = _parse(sys.argv[1:] if argv is None else argv)
    if lock_fd is None:  # started by hand: take the lock ourselves
        lock_fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another shim is watching {directory}", file=sys.stderr)
            return 1
    os.set_inheritable(lock_fd, False)  # neither runc nor the job may hold it
    if os.fork() != 0:  # the starter reaps this parent at once; the shim is orphaned
        os._exit(0)
    shim = Shim(directory, runc)
    # `runc create` forks the container's init and exits, orphaning it. As a child
    # subreaper the shim (not pid 1) inherits it: os.waitpid then yields the job's
    # real exit status or signal, and the pid cannot be recycled while we watch it.
    if shim.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
    shim.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
