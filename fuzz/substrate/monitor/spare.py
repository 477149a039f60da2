"""The monitor's next container directory, made before it is needed.

Creating files and directories costs far more than renaming them (about 250 us
each against 25 us on the ext4 this was measured on), and an overlay mount made
right after a container ended waits for the kernel to tear that container's
mounts down. So while runc works on one container, the monitor makes the next
one's directory (:data:`~fuzz.substrate.monitor.files.SPARE_DIRS` and empty
:data:`~fuzz.substrate.monitor.files.SPARE_FILES`) and, betting that the next
job uses the same image as the last one (task arrays, batches), mounts that
image's overlay on its ``rootfs`` already. A start renames the spare into place;
a lost bet costs an unmount and a fresh work dir before the right mount.

The premounted overlay is the same as the one a start would mount (fresh upper
and work dirs, nothing written yet), and lives in the monitor's mount namespace
like the containers' overlays.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading

from fuzz.substrate.monitor.files import (
    ROOTFS_DIR,
    SPARE_DIRS,
    SPARE_FILES,
    SPARE_PREFIX,
    UPPER_DIR,
    WORK_DIR,
)
from fuzz.substrate.monitor.syscalls import SysError, mount_overlay, unmount

logger = logging.getLogger(__name__)

Premount = tuple[str, int, int]  # the lower dir (real path), its st_dev and st_ino


def image_identity(lower: str) -> Premount | None:
    """What identifies the image directory ``lower`` (None: not a directory).

    Asked twice per job (the spare's bet, the start), so the kernel resolves the
    path once (an ``O_PATH`` descriptor, its real path read back from ``/proc``)
    where ``os.path.realpath`` makes an ``lstat`` per component in Python.
    """
    try:
        fd = os.open(lower, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    finally:
        os.close(fd)
    return (real, info.st_dev, info.st_ino)


READY = 2  # spares kept ready: a node's concurrent starts (its cores) rarely outrun this


class Made:
    """One spare directory: its path and the image mounted on its ``rootfs`` (None: none)."""

    def __init__(self, path: str, premount: Premount | None) -> None:
        """The spare at ``path``."""
        self.path = path
        self.premount = premount


class Spare:
    """Container directories made in advance under ``root``, by a thread of their own.

    Making one (a dozen mkdir/open and an overlay mount) took more than half of
    the monitor's time under bench/throughput.py when its event loop did it between
    a start and the next event, where every other job's runc exit and request
    waited behind it. The maker thread does it off the loop (the syscalls release
    the GIL); :meth:`claim` takes a ready spare, or makes one itself when none is.
    """

    def __init__(self, root: str) -> None:
        """Make spares in ``root`` (the state dir's ``containers``)."""
        self.root = root
        self.image: Premount | None = None  # the last start's image: the bet
        self.count = 0
        self._ready: list[Made] = []
        self._lock = threading.Lock()
        self._wanted = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = False

    def replenish(self) -> None:
        """Have the maker thread fill the pool (started on the first call)."""
        with self._lock:
            if self._stopping:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._keep_ready, name="spares",
                                                daemon=True)
                self._thread.start()
            self._wanted.notify()

    def _keep_ready(self) -> None:
        while True:
            with self._lock:
                self._wanted.wait_for(lambda: self._stopping or len(self._ready) < READY)
                if self._stopping:
                    return
            try:
                made = self._make()
            except OSError as exc:
                logger.warning("cannot make a spare container directory: %s", exc)
                with self._lock:  # try again at the next start
                    self._wanted.wait_for(lambda: self._stopping, timeout=1.0)
                continue
            with self._lock:
                if self._stopping:
                    self._discard(made)
                    return
                self._ready.append(made)

    def _make(self) -> Made:
        """Make a spare, with the bet's overlay mounted when there is one."""
        with self._lock:
            self.count += 1
            path = os.path.join(self.root, f"{SPARE_PREFIX}{os.getpid()}.{self.count}")
            bet = self.image
        os.mkdir(path)
        made = Made(path, None)
        try:
            for name in SPARE_DIRS:
                os.mkdir(os.path.join(path, name))
            for name in SPARE_FILES:
                flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
                os.close(os.open(os.path.join(path, name), flags, 0o640))
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            raise
        if bet is not None and image_identity(bet[0]) == bet:
            try:
                mount_overlay(
                    bet[0],
                    os.path.join(path, UPPER_DIR),
                    os.path.join(path, WORK_DIR),
                    os.path.join(path, ROOTFS_DIR),
                )
            except SysError as exc:
                logger.warning("premounting %s: %s", bet[0], exc)
            else:
                made.premount = bet
        return made

    def claim(self) -> Made:
        """A spare, out of the pool (made now if none is ready); the maker refills."""
        with self._lock:
            made = self._ready.pop(0) if self._ready else None
        if made is None:
            made = self._make()
        self.replenish()
        return made

    @staticmethod
    def place(made: Made, target: str) -> Premount | None:
        """Rename the claimed spare to ``target``; what is mounted in it."""
        os.rename(made.path, target)
        return made.premount

    def drop(self, made: Made) -> None:
        """Unmount and delete a claimed spare that is not used."""
        self._discard(made)

    @staticmethod
    def _discard(made: Made) -> None:
        if made.premount is not None:
            unmount(os.path.join(made.path, ROOTFS_DIR))
        shutil.rmtree(made.path, ignore_errors=True)

    def discard(self) -> None:
        """Stop the maker; unmount and delete every spare."""
        with self._lock:
            self._stopping = True
            self._wanted.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._lock:
            ready, self._ready = self._ready, []
        for made in ready:
            self._discard(made)


def unmount_bet(directory: str) -> str | None:
    """Undo a lost bet in a container ``directory``: unmount, fresh work dir; error or None."""
    problem = unmount(os.path.join(directory, ROOTFS_DIR))
    if problem is not None:
        return problem
    work = os.path.join(directory, WORK_DIR)
    shutil.rmtree(work)  # a volatile overlay's work dir may not be used twice
    os.mkdir(work)
    return None
