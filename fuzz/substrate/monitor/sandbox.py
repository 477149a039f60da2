"""Task sandboxes: a task array's tasks on one node as processes of one long-lived container.

A start request with ``"sandbox": KEY`` (the agent's hash of the task's workflow, job and
every spec field but its env and CPUs; see :mod:`fuzz.substrate.runtime.containers`)
runs the task in the sandbox of that key, made by the first such task: a container
(a :class:`~fuzz.substrate.monitor.job.Job` under ``containers/.sandbox-*``, so its root,
network namespace, mounts, user, capabilities, seccomp and rlimits are the task's
config's) whose init is the task server (``fuzz-tasks.c``, bound at ``/.fuzz-tasks``).
The monitor talks to the server over a ``SOCK_SEQPACKET`` socketpair given to runc
(``--preserve-fds``). Per task (a :class:`SandboxTask`, in the task's own container
directory with its own ``status.json`` and logs, as any container's): the monitor makes
the task's cgroup (:mod:`~fuzz.substrate.monitor.taskcgroup`) and sends the server the
task's argv, env and cwd with its stdout and stderr; the server forks a child that waits
and answers its pid; the monitor finds that pid among the server's cgroup's processes
(nothing else is believed), moves it into the task's cgroup and says go; the server
reports the exit status. Cancel and timeout signal every process of the task's cgroup;
OOM kills and peak memory are the task's cgroup's.

The server is untrusted (the job's user can reach it): its messages are fixed-size and
checked, a pid it names must be of its own cgroup, it names no host path; if it dies,
its running tasks fail with one line and the next task starts a new sandbox. A sandbox
with no task for :data:`IDLE_SECONDS` (or when the monitor stops) closes its socket: the
server exits, and the container is deleted as any job's is.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import time

from fuzz.substrate.monitor.files import CONFIG_FILE, one_line
from fuzz.substrate.monitor.job import Job, write_private
from fuzz.substrate.monitor.taskcgroup import (
    SERVER_LEAF,
    TaskCgroup,
    TaskCgroupError,
    hierarchies,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from fuzz.substrate.monitor.job import Host

IDLE_SECONDS = 3.0  # a sandbox with no task this long ends
LAUNCH_SECONDS = 10.0  # a task its server has not started by then fails, and the sandbox ends
PREFIX = ".sandbox-"
TASK_SERVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "launch", "bin", "fuzz-tasks")
SERVER_PATH = "/.fuzz-tasks"  # where the server is bound in the sandbox
SERVER_FD = 3
MAX_MESSAGE = 256 * 1024  # the server's bound on one START (fuzz-tasks.c)
HEADER = struct.Struct("=4I")
ANSWER = struct.Struct("=IIi")
START, GO = 1, 2
FORKED, EXITED, FAILED = 1, 2, 3


def _rebase(value: Any, old: str, new: str) -> Any:
    """``value`` (JSON) with every string under ``old`` (a directory) moved under ``new``."""
    if isinstance(value, str):
        return new + value[len(old):] if value == old or value.startswith(old + "/") else value
    if isinstance(value, list):
        return [_rebase(item, old, new) for item in value]
    if isinstance(value, dict):
        return {key: _rebase(item, old, new) for key, item in value.items()}
    return value


def sandbox_config(config: dict[str, Any], task_dir: str, sandbox_dir: str,
                   cgroup: str) -> dict[str, Any]:
    """The sandbox's OCI config from its first task's: the same container (its paths in
    the sandbox's directory), the task server as its process, in cgroup ``cgroup``."""
    sandbox: dict[str, Any] = _rebase(config, task_dir, sandbox_dir)
    sandbox["process"]["args"] = [SERVER_PATH, str(SERVER_FD)]
    sandbox["process"]["cwd"] = "/"
    sandbox["mounts"].append({"destination": SERVER_PATH, "type": "bind", "source": TASK_SERVER,
                              "options": ["bind", "ro", "nosuid", "nodev"]})
    sandbox["linux"]["cgroupsPath"] = f"{cgroup}/{SERVER_LEAF}"
    return sandbox


def sandbox_cgroup(directory: str) -> str | None:
    """The cgroup of the sandbox whose directory is ``directory`` (the server's parent),
    from its config (None: unreadable)."""
    try:
        with open(os.path.join(directory, CONFIG_FILE), encoding="utf-8") as handle:
            path = json.load(handle)["linux"]["cgroupsPath"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    parent = os.path.dirname(path) if isinstance(path, str) else ""
    return parent if parent.startswith("/") and parent != "/" else None


def _ns_pid(pid: int) -> int | None:
    """The innermost pid namespace's number of host pid ``pid`` (None: gone or unknown)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("NSpid:"):
                    fields = line.split()
                    return int(fields[-1]) if len(fields) > 2 else None
    except (OSError, ValueError):
        return None
    return None


class Sandbox:
    """One sandbox container and its task server's socket; see the module docstring."""

    def __init__(self, host: Host, key: str, job: Job, sock: socket.socket,
                 cgroup: str) -> None:
        """The sandbox ``key`` whose container is ``job`` (launching, its init given the
        other end of ``sock``), its cgroup ``cgroup`` (the server's parent)."""
        self.host = host
        self.key = key
        self.job = job
        self.sock = sock
        self.cgroup = cgroup
        self.tasks: dict[int, SandboxTask] = {}  # by sequence number
        self.queued: list[tuple[SandboxTask, int, int]] = []  # (task, stdout, stderr)
        self.next_seq = 1
        self.ready = False
        self.ending = False
        self.idle_since = time.monotonic()

    # --- the container

    def container_changed(self) -> None:
        """The container's job moved: it runs (send the queued tasks), or it has ended."""
        if self.job.final:
            self.close()
            error = self.job.status.get("error") or (
                f"the task sandbox's server died (exit code {self.job.status.get('exit_code')},"
                f" signal {self.job.status.get('signal')}); the task was killed")
            for task, out, err in self.queued:
                os.close(out)
                os.close(err)
                task.fail(f"task sandbox: {error}")
            self.queued.clear()
            for task in list(self.tasks.values()):
                task.fail(one_line(f"task sandbox: {error}"))
            self.tasks.clear()
        elif self.job.phase == "running" and not self.ready and not self.ending:
            self.ready = True
            self.host.watch(self.sock.fileno(), self.readable)
            queued, self.queued = self.queued, []
            for task, out, err in queued:
                if task.final:  # cancelled while it waited for the sandbox
                    os.close(out)
                    os.close(err)
                else:
                    self.send_start(task, out, err)

    def close(self) -> None:
        """Close the socket: the server exits, and with it the container."""
        self.ending = True
        if self.sock.fileno() >= 0:
            self.host.unwatch(self.sock.fileno())
            self.sock.close()

    def abandon(self) -> None:
        """Take no more tasks and kill the container (its end fails the tasks it had)."""
        self.close()
        if self.job.phase == "running":
            self.job.stop(0)

    @property
    def alive(self) -> bool:
        """Whether new tasks may go to this sandbox."""
        return not self.ending and not self.job.final

    # --- tasks

    def submit(self, task: SandboxTask, out: int, err: int) -> None:
        """Run ``task`` with ``out`` and ``err`` as its stdout and stderr (taken over)."""
        task.seq = self.next_seq
        self.next_seq += 1
        if self.ready:
            self.send_start(task, out, err)
        else:
            self.queued.append((task, out, err))

    def send_start(self, task: SandboxTask, out: int, err: int) -> None:
        """Make the task's cgroup, send the server the task's START with its stdio; closes
        ``out`` and ``err``."""
        try:
            task.task_cgroup.create(task.cpus, task.memory_bytes)
            task.cgroup = task.task_cgroup.memory
            process = task.process
            args = [str(arg) for arg in process.get("args") or ()]
            env = [str(item) for item in process.get("env") or ()]
            strings = [str(process.get("cwd") or "/"), *args, *env]
            body = b"".join(text.encode() + b"\0" for text in strings)
            message = HEADER.pack(START, task.seq, len(args), len(env)) + body
            if not args or len(message) > MAX_MESSAGE or any("\0" in text for text in strings):
                task.fail("task sandbox: the task's command and environment are too large"
                          f" (at most {MAX_MESSAGE} bytes) or malformed")
                return
            socket.send_fds(self.sock, [message], [out, err])
        except TaskCgroupError as exc:
            task.fail(str(exc))
            return
        except OSError as exc:
            task.fail(one_line(f"task sandbox: sending the task to its server: {exc}"))
            return
        finally:
            os.close(out)
            os.close(err)
        self.tasks[task.seq] = task

    def go(self, task: SandboxTask) -> None:
        """Tell the server that ``task``'s child may exec."""
        self.sock.send(HEADER.pack(GO, task.seq, 0, 0))

    def readable(self) -> None:
        """Read the server's answers (12 bytes each; anything else is ignored)."""
        while True:
            try:
                data = self.sock.recv(ANSWER.size + 1, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.close()  # the server is gone: the container's end fails the tasks
                return
            if len(data) != ANSWER.size:
                continue
            kind, seq, value = ANSWER.unpack(data)
            task = self.tasks.get(seq)
            if task is None:
                continue
            if kind == FORKED and task.phase == "launching":
                task.on_forked(value)
            elif kind == EXITED and not task.final:
                self.tasks.pop(seq, None)
                task.record_exit(value & 0xFFFF)
            elif kind == FAILED and task.phase == "launching":
                self.tasks.pop(seq, None)
                task.fail("task sandbox: the server could not start the task:"
                          f" {os.strerror(value)}")

    def forget(self, task: SandboxTask) -> None:
        """``task`` has ended: it is no longer the sandbox's."""
        self.tasks.pop(task.seq, None)
        if not self.tasks and not self.queued:
            self.idle_since = time.monotonic()

    def host_pid(self, ns_pid: int) -> int | None:
        """The host pid of the server's process ``ns_pid``, found among the processes of
        the server's own cgroup (None: no such process there)."""
        for point in hierarchies(self.host.cgroup_mounts):
            procs = os.path.join(point, self.cgroup.lstrip("/"), SERVER_LEAF, "cgroup.procs")
            try:
                with open(procs, encoding="ascii") as handle:
                    pids = [int(line) for line in handle.read().split()]
            except (OSError, ValueError):
                continue
            for pid in pids:
                if pid != self.job.pid and _ns_pid(pid) == ns_pid:
                    return pid
            return None
        return None

    # --- idling

    def next_wakeup(self, stopping: bool) -> float | None:
        """When the sandbox may end for want of tasks (None: it has some, or it is ending)."""
        if self.ending or self.tasks or self.queued or not self.ready:
            return None
        return self.idle_since if stopping else self.idle_since + IDLE_SECONDS

    def tick(self, now: float, stopping: bool) -> None:
        """End the sandbox once it has idled long enough (at once when the monitor stops)."""
        moment = self.next_wakeup(stopping)
        if moment is not None and now >= moment:
            self.close()


class SandboxTask(Job):
    """One task run by a sandbox's server, recorded as a container's job is."""

    def __init__(self, host: Host, sandbox: Sandbox, directory: str, request: dict[str, Any],
                 run_dir: str, config: dict[str, Any]) -> None:
        """The task whose directory is ``directory``, of ``request`` (its ``config``
        parsed), to run in ``sandbox``."""
        super().__init__(host, directory, request, run_dir)
        self.sandbox = sandbox
        self.seq = 0
        self.process: dict[str, Any] = config.get("process") or {}
        resources = (config.get("linux") or {}).get("resources") or {}
        self.cpus: str | None = (resources.get("cpu") or {}).get("cpus")
        self.memory_bytes: int | None = (resources.get("memory") or {}).get("limit")
        self.task_cgroup = TaskCgroup(host.cgroup_mounts, sandbox.cgroup, self.id)
        self.status["sandbox"] = sandbox.job.id  # exec into the task lands there
        self.launch_deadline = time.monotonic() + LAUNCH_SECONDS
        self.pending_problems: list[str] = []  # the cleanup's, while the cgroup empties

    def launch(self, premount: object = None) -> None:
        """Make the task's cgroup and logs and hand it to the sandbox; never raises."""
        try:
            self.write_spec()
            write_private(self.path(CONFIG_FILE), self.config_text)  # what an exec starts from
            out = self.output("stdout.log")
            try:
                err = self.output("stderr.log")
            except OSError:
                os.close(out)
                raise
        except OSError as exc:
            self.fail(f"setting up: {exc}")
            return
        self.sandbox.submit(self, out, err)

    def on_forked(self, ns_pid: int) -> None:
        """The server forked the task's child (``ns_pid`` in the sandbox): move it into the
        task's cgroup, then let it exec."""
        pid = self.sandbox.host_pid(ns_pid)
        if pid is None:
            self.fail(f"task sandbox: the server named pid {ns_pid}, not a process of its own")
            return
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            self.fail(one_line(f"task sandbox: the task's process is gone: {exc}"))
            return
        try:
            self.task_cgroup.join(pid)
            # Alive after the move: the pid written was this process's, not a reused one.
            if select.select([pidfd], [], [], 0)[0]:
                raise TaskCgroupError("the task's process died before it started")
            self.sandbox.go(self)
        except (TaskCgroupError, OSError) as exc:
            self.fail(one_line(f"task sandbox: {exc}"))
            return
        finally:
            os.close(pidfd)
        now = time.monotonic()
        self.pid = pid
        self.phase = "running"
        self.deadline = None if self.timeout is None else now + self.timeout
        self.next_peak_write = now + 2.0
        self.status.update(state="running", pid=pid, started_at=time.time())
        self.write()
        if self.pending_grace is not None:
            self.status["cancelled"] = True
            self.terminate(self.pending_grace)
        self.host.job_changed(self)

    def send(self, signum: int) -> None:
        """Signal every process of the task (its cgroup's)."""
        self.task_cgroup.signal(signum)

    def stop(self, grace: float | None = None) -> None:
        """Cancel the task; one still waiting for its server ends at once."""
        if self.phase == "launching" and self.seq and self.seq not in self.sandbox.tasks:
            self.status["cancelled"] = True
            self.fail("cancelled before it started")
            return
        super().stop(grace)

    def end(self) -> None:
        """The task's end: recorded and answered (then its cgroup goes)."""
        self.sandbox.forget(self)
        super().end()

    def cleaned(self, problems: list[str]) -> None:
        """Done once the task's cgroup is removed (whatever it left is killed first)."""
        if not self.task_cgroup.remove():
            self.phase = "cleaning"
            self.kill_at = time.monotonic() + 0.05  # retried by tick
            self.pending_problems = problems
            return
        super().cleaned(problems)

    def next_wakeup(self) -> float | None:
        """As a job's; while its cgroup is being emptied, soon; while its server has not
        started it, its launch deadline."""
        if self.phase == "cleaning" and self.task_cgroup.made:
            return self.kill_at
        if self.phase == "launching":
            return self.launch_deadline
        return super().next_wakeup()

    def tick(self, now: float) -> None:
        """As a job's; retry removing the cgroup while cleaning; past the launch deadline,
        fail the task and end its sandbox (a server that does not answer is stuck or
        hostile, and would hold every later task of its key too)."""
        if self.phase == "launching":
            if now >= self.launch_deadline:
                self.fail(f"task sandbox: the server did not start the task within"
                          f" {LAUNCH_SECONDS:g} s; the sandbox was ended")
                self.sandbox.abandon()
            return
        if self.phase == "cleaning" and self.task_cgroup.made:
            if self.kill_at is not None and now >= self.kill_at:
                self.cleaned(self.pending_problems)
            return
        super().tick(now)

    def known_pids(self) -> tuple[int, ...]:
        """None: a task's processes are the server's children, not the monitor's."""
        return ()


def parse_config(text: str) -> dict[str, Any]:
    """The task's OCI config (checked to be a JSON object)."""
    config = json.loads(text)
    if not isinstance(config, dict) or not isinstance(config.get("process"), dict):
        raise ValueError("the config is not an OCI config")
    return dict(config)
