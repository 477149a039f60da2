"""A sandboxed task's cgroups: beside the task server's, with the task's own CPUs and memory.

A task sandbox's container (:mod:`fuzz.substrate.monitor.sandbox`) is runc's, at the OCI
``cgroupsPath`` ``/fuzz/<sandbox>/server``; each task gets ``/fuzz/<sandbox>/<task id>`` in
every cgroup v1 hierarchy where runc made the server's, with the server's settings (its
devices allow-list, pids limit, memory nodes) and the task's own cpuset and memory
limit. Only cgroup v1 hierarchies are handled: on a v2 host the devices rules are an
eBPF program attached to the server's cgroup alone, which a sibling would not get, so
the monitor runs no sandbox there (:func:`supported`).

Imported by the monitor process, so it imports only ``os`` and ``signal``.
"""

from __future__ import annotations

import contextlib
import os
import signal

from fuzz.substrate.monitor.cgroup import CgroupMount, MemoryCgroup

SERVER_LEAF = "server"
COPIED = ("cpuset.mems", "pids.max")  # the server's settings a task gets as they are


class TaskCgroupError(Exception):
    """A task's cgroup could not be made or joined; the message is one line."""


# The v1 controllers a task gets a cgroup of its own in: its CPUs and memory, the devices
# allow-list and pids limit (copied from the server's, so nothing is looser than its
# container). In the others (cpu, cpuacct, blkio, freezer, systemd's) it stays in the
# server's cgroup: none limits a task, and each more hierarchy is a mkdir, a move and an
# rmdir per task (the monitor's system time).
CONTROLLERS = ("memory", "cpuset", "devices", "pids")


def hierarchies(mounts: list[CgroupMount]) -> list[str]:
    """The mount points of the cgroup v1 hierarchies of :data:`CONTROLLERS`, memory's
    first."""
    return [point for controller in CONTROLLERS for _, point, kind, options in mounts
            if kind == "cgroup" and controller in options]


def supported(mounts: list[CgroupMount]) -> bool:
    """Whether tasks may run in sandboxes here: runc uses cgroup v1 (with a memory one)."""
    return any(kind == "cgroup" and "memory" in options for _, _, kind, options in mounts)


def remove_sandbox(mounts: list[CgroupMount], sandbox_path: str) -> None:
    """Remove the cgroups of an ended sandbox (its processes are gone with its PID 1):
    its tasks' and its own, in every hierarchy (v2's of a hybrid host too)."""
    for _, point, _, _ in mounts:
        directory = os.path.join(point, sandbox_path.lstrip("/"))
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                if entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.rmdir(entry.path)
            os.rmdir(directory)


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(value)


def _read(path: str) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read()


class TaskCgroup:
    """One task's cgroup directories, one per hierarchy that has the server's."""

    def __init__(self, mounts: list[CgroupMount], sandbox_path: str, task_id: str) -> None:
        """The task ``task_id`` of the sandbox whose cgroup is ``sandbox_path`` (absolute)."""
        self.mounts = mounts
        self.sandbox_path = sandbox_path
        self.task_id = task_id
        self.path = f"{sandbox_path}/{task_id}"
        self.memory = MemoryCgroup.at(self.path, mounts)
        self.made: list[str] = []

    def create(self, cpus: str | None, memory_bytes: int | None) -> None:
        """Make the directories with the server's limits, the task's ``cpus`` (a cpuset
        list) and ``memory_bytes`` (memory + swap too: no swap escape), in every hierarchy
        where runc made the server's (which runs by now)."""
        base = self.sandbox_path.lstrip("/")
        dirs = []  # (the task's directory, the server's)
        for point in hierarchies(self.mounts):
            server = os.path.join(point, base, SERVER_LEAF)
            if os.path.isdir(server):
                dirs.append((os.path.join(point, base, self.task_id), server))
        if not dirs:
            raise TaskCgroupError("the task sandbox's cgroups are gone")
        try:
            for task, server in dirs:
                os.mkdir(task)
                self.made.append(task)
                for name in COPIED:
                    if os.path.exists(os.path.join(task, name)):
                        _write(os.path.join(task, name), _read(os.path.join(server, name)))
                if os.path.exists(os.path.join(task, "cpuset.cpus")):
                    _write(os.path.join(task, "cpuset.cpus"),
                           cpus or _read(os.path.join(server, "cpuset.cpus")))
                if os.path.exists(os.path.join(task, "devices.deny")):
                    _write(os.path.join(task, "devices.deny"), "a")
                    for rule in _read(os.path.join(server, "devices.list")).splitlines():
                        _write(os.path.join(task, "devices.allow"), rule)
                if memory_bytes and os.path.exists(os.path.join(task, "memory.limit_in_bytes")):
                    _write(os.path.join(task, "memory.limit_in_bytes"), str(memory_bytes))
                    swap = os.path.join(task, "memory.memsw.limit_in_bytes")
                    if os.path.exists(swap):
                        _write(swap, str(memory_bytes))
        except OSError as exc:
            raise TaskCgroupError(f"making the task's cgroup {self.path}: {exc}") from None

    def join(self, pid: int) -> None:
        """Move ``pid`` (a process of the sandbox) into every one of the task's cgroups."""
        try:
            for task in self.made:
                _write(os.path.join(task, "cgroup.procs"), str(pid))
        except OSError as exc:
            raise TaskCgroupError(f"moving the task into {self.path}: {exc}") from None

    def pids(self) -> list[int]:
        """The processes in the task's cgroup (of its first hierarchy, memory's)."""
        if not self.made:
            return []
        try:
            return [int(line) for line in _read(os.path.join(self.made[0], "cgroup.procs")).split()]
        except (OSError, ValueError):
            return []

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every process of the task (its children included)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def remove(self) -> bool:
        """Kill what is left in it and remove the directories; False: still busy (retry)."""
        if self.pids():
            self.signal(signal.SIGKILL)
            return False
        for task in list(self.made):
            try:
                os.rmdir(task)
            except FileNotFoundError:
                pass
            except OSError:
                return False
            self.made.remove(task)
        return True
