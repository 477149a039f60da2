"""The bytes one volume may hold (``orchestrator.limits.volume_bytes``, or less: the volume's
own v4 ``size``), and measuring them.

Ingress is stopped as it streams: every ingress of a volume draws on one
:class:`~fuzz.orchestrate.transfer.stream.ByteBudget`, made at its first ingress
from what the volume holds then, so no chunk that would pass the limit is ever
written. What jobs write is measured after each task ends (:meth:`VolumeLimits.overrun`);
a volume over the limit fails its workflow. That is not a hard quota: a job may
write past the limit until it ends, unless the volume root's file system enforces
project quotas of its own.

A volume's size is the sum of the sizes of the regular files in it, walked
relative to directory descriptors without following symlinks (``os.fwalk``), so
a job that swaps a directory for a symlink cannot make the walk count, or
reveal, anything outside the volume.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

from fuzz.orchestrate.records import VolumeRecord
from fuzz.orchestrate.transfer.stream import ByteBudget
from fuzz.units import format_bytes

LIMIT_KEY = "orchestrator.limits.volume_bytes"


def volume_bytes(directory: Path) -> int:
    """The bytes of the regular files under ``directory`` (0 when it does not exist)."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for _, _, files, dir_fd in os.fwalk(directory, follow_symlinks=False):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode):
                        total += info.st_size
    return total


class VolumeLimits:
    """The volume limit: one ingress budget per volume, and the check after each task.

    A volume whose Fuzzfile gives it a ``size`` (v4) may hold that much; the cluster's
    limit caps every volume, sized or not (a start refuses a size above it).
    """

    def __init__(self, limit: int) -> None:
        """Let each volume hold at most ``limit`` bytes."""
        self.limit = limit
        self._budgets: dict[tuple[str, str], ByteBudget] = {}
        self._lock = threading.Lock()

    def _limit(self, volume: VolumeRecord, size: int | None) -> tuple[int, str]:
        """The bytes ``volume`` may hold, and the key that says so."""
        if size is not None and size < self.limit:
            return size, f"volumes.{volume.name}.size"
        return self.limit, LIMIT_KEY

    def ingress_budget(self, volume: VolumeRecord, size: int | None = None) -> ByteBudget:
        """The budget every ingress of ``volume`` (of ``size`` bytes, if it names one) draws
        on, made, and measured, at the first."""
        key = (volume.workflow_id, volume.name)
        limit, source = self._limit(volume, size)
        with self._lock:
            budget = self._budgets.get(key)
            if budget is None:
                budget = ByteBudget(limit, volume_bytes(Path(volume.path)),
                                    f"the volume {volume.name!r} would hold more than its "
                                    f"limit of {format_bytes(limit)} ({source}); "
                                    "ingress stopped")
                self._budgets[key] = budget
            return budget

    def forget(self, volume: VolumeRecord) -> None:
        """Drop ``volume``'s ingress budget (its workflow has ended)."""
        with self._lock:
            self._budgets.pop((volume.workflow_id, volume.name), None)

    def overrun(self, volume: VolumeRecord, size: int | None = None) -> str | None:
        """Why ``volume`` (of ``size`` bytes, if it names one) holds too much now (one
        line), None while it is within its limit."""
        limit, source = self._limit(volume, size)
        used = volume_bytes(Path(volume.path))
        if used <= limit:
            return None
        return (f"holds {format_bytes(used)} ({used} bytes), over the limit of "
                f"{format_bytes(limit)} ({source})")
