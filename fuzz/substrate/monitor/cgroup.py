"""A container's memory cgroup as the monitor reads it: peak usage and OOM kills (v1 or v2).

Imported by the monitor process, so it imports only ``os``.
"""

from __future__ import annotations

import os

CgroupMount = tuple[str, str, str, frozenset[str]]  # root, mount point, fs type, super options


def cgroup_mounts() -> list[CgroupMount]:
    """(root, mount point, fs type, super options) of every cgroup mount we can see."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) >= 5 and tail and tail[0] in ("cgroup", "cgroup2"):
                options = frozenset(tail[2].split(",")) if len(tail) > 2 else frozenset()
                found.append((fields[3], fields[4], tail[0], options))
    return found


class MemoryCgroup:
    """The memory cgroup of a process: its peak usage and its OOM kills (v1 or v2)."""

    def __init__(self, directory: str, version: int) -> None:
        """Read the cgroup at ``directory`` (a v1 memory or a v2 unified hierarchy)."""
        self.directory = directory
        self.version = version

    @classmethod
    def at(cls, cgroups_path: str, mounts: list[CgroupMount]) -> MemoryCgroup | None:
        """The memory cgroup that runc makes for an absolute OCI ``cgroupsPath``.

        runc (cgroupfs driver) puts it at that path under the memory hierarchy's
        mount point (v1) or the unified one (v2). It is computed, not read from
        ``/proc/<pid>/cgroup``, which shows ``/`` for an exited process on v1.
        """
        for _, point, kind, options in mounts:
            if kind == "cgroup" and "memory" in options:
                return cls(os.path.join(point, cgroups_path.lstrip("/")), 1)
        for _, point, kind, _ in mounts:
            if kind == "cgroup2":
                return cls(os.path.join(point, cgroups_path.lstrip("/")), 2)
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
