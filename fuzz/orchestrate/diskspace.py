"""Keeping user data from starving the orchestrator's own disk (``orchestrator.disk``).

Two guards, both on plain files, so they work on any local or shared file system
without preparing the disk (no quota mount options, no file system of its own):

:class:`DiskFloor`
    the free bytes kept on the volume root's disk (``min_free``): below it new
    ingress and new jobs that mount a volume are refused, each with one sentence.
    When the database shares that disk (volumes under the data dir, or next to it
    on one disk), this is what leaves it room.
:class:`DiskReserve`
    a file of ``reserve`` bytes in the data dir, allocated up front
    (``posix_fallocate``: real blocks, not a sparse hole). When a job fills the disk
    anyway and SQLite reports it full, the store gives the reserve back and retries,
    so the job's failure, and the requests that follow, are still recorded. The
    reserve is made again once the disk has room for it and the floor.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from pathlib import Path

from fuzz.units import format_bytes

log = logging.getLogger(__name__)

MIN_FREE_KEY = "orchestrator.disk.min_free"
RESERVE_FILE = "disk-reserve"
REFILL_INTERVAL = 10.0  # seconds between tries to make a given-back reserve again


def free_bytes(path: Path) -> int:
    """The bytes an unprivileged writer may still use on ``path``'s file system."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


class DiskFloor:
    """The free bytes kept on the volume root's disk; refuses new volume writes below it."""

    def __init__(self, volume_root: Path, min_free: int) -> None:
        """Keep ``min_free`` bytes free on ``volume_root``'s file system."""
        self.volume_root = volume_root
        self.min_free = min_free

    def problem(self, what: str) -> str | None:
        """Why ``what`` (e.g. "ingress") may not write to a volume now; None while it may."""
        try:
            free = free_bytes(self.volume_root)
        except OSError as exc:
            return f"{what} refused: cannot measure the volume root {self.volume_root}: " \
                   f"{exc.strerror or exc}"
        if free >= self.min_free:
            return None
        return (f"{what} refused: the volume root's disk ({self.volume_root}) has "
                f"{format_bytes(free)} free, under the floor of {format_bytes(self.min_free)} "
                f"({MIN_FREE_KEY}); free space there or raise the limit")


class DiskReserve:
    """Space held for the database in a file of the data dir, given back when the disk fills."""

    def __init__(self, data_dir: Path, size: int, min_free: int = 0) -> None:
        """Hold ``size`` bytes in ``data_dir``; remake it only while ``min_free`` more are free."""
        self.path = data_dir / RESERVE_FILE
        self.size = size
        self.min_free = min_free
        self._lock = threading.Lock()

    def held(self) -> int:
        """The bytes the reserve holds now."""
        try:
            return self.path.stat().st_blocks * 512
        except FileNotFoundError:
            return 0

    def fill(self) -> bool:
        """Allocate the reserve if it is not whole and the disk has room for it and the
        floor; True when it is whole afterwards."""
        with self._lock:
            held = self.held()
            if held >= self.size:
                return True
            try:
                if free_bytes(self.path.parent) < self.size - held + self.min_free:
                    return False
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    os.posix_fallocate(fd, 0, self.size)
                finally:
                    os.close(fd)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    log.warning("cannot reserve %s for the database in %s: %s",
                                format_bytes(self.size), self.path, exc.strerror or exc)
                with contextlib.suppress(OSError):
                    self.path.unlink()
                return False
            return True

    def release(self) -> bool:
        """Give the reserve back to the disk; True if it held anything."""
        with self._lock:
            held = self.held()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if held:
            log.warning("the disk of %s is full: gave the database its reserve of %s; "
                        "free space there (the volume root's jobs may have filled it)",
                        self.path.parent, format_bytes(held))
        return held > 0

    def keep(self, stop: threading.Event) -> None:
        """Until ``stop``: make the reserve again whenever it was given back and there is room."""
        was_whole = True
        while not stop.wait(REFILL_INTERVAL):
            whole = self.fill()
            if whole and not was_whole:
                log.info("the database's reserve of %s in %s is whole again",
                         format_bytes(self.size), self.path.parent)
            was_whole = whole
