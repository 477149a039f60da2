"""CPU time of a local cluster's processes, by kind, between two moments.

For the throughput bench's ``--cpu``: which process of fuzz spends the machine's time
per task. A process's own time is its ``utime`` (user) and ``stime`` (system: the kernel's
work for its system calls) in ``/proc/PID/stat``; the time of the children it
reaped (``cutime + cstime``) is counted apart, under its kind with "children": the
monitor is the child subreaper of every ``runc`` and container process it starts,
so its children's time is runc's, runc init's and the jobs'.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")

KINDS = (("monitor", "monitor.process"),
         ("agent", "fuzz.substrate serve"),
         ("orchestrator", " server "))


@dataclass(frozen=True)
class Sample:
    """One moment's CPU seconds of each process that mentions a directory."""

    user: dict[int, tuple[str, float]]
    system: dict[int, tuple[str, float]]
    children: dict[int, tuple[str, float]]


def _kind(command: str) -> str:
    return next((kind for kind, marker in KINDS if marker in command), "other")


def _stat_seconds(pid: int) -> tuple[float, float, float] | None:
    """User, system and reaped children's CPU seconds of ``pid`` (None: it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14 to 17
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return utime / TICKS, stime / TICKS, (cutime + cstime) / TICKS


def sample(directory: Path) -> Sample:
    """The CPU seconds so far of every process whose command line names ``directory``."""
    marker = str(directory)
    user: dict[int, tuple[str, float]] = {}
    system: dict[int, tuple[str, float]] = {}
    children: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker not in command:
            continue
        seconds = _stat_seconds(int(entry.name))
        if seconds is not None:
            kind = _kind(command)
            user[int(entry.name)] = (kind, seconds[0])
            system[int(entry.name)] = (kind, seconds[1])
            children[int(entry.name)] = (kind, seconds[2])
    return Sample(user, system, children)


def by_kind(before: Sample, after: Sample) -> Counter[str]:
    """CPU seconds each kind spent from ``before`` to ``after`` (processes alive at both)."""
    spent: Counter[str] = Counter()
    for label, start, end in ((" user", before.user, after.user),
                              (" system", before.system, after.system),
                              (" children", before.children, after.children)):
        for pid, (kind, seconds) in end.items():
            if pid in start:
                spent[kind + label] += seconds - start[pid][1]
    return spent


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all CPUs, not idle nor iowait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICKS
