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
    """What identifies the image directory ``lower`` (None: not a directory)."""
    real = os.path.realpath(lower)
    try:
        info = os.stat(real)
    except OSError:
        return None
    if not os.path.isdir(real):
        return None
    return (real, info.st_dev, info.st_ino)


class Spare:
    """At most one container directory made in advance under ``root``."""

    def __init__(self, root: str) -> None:
        """Make spares in ``root`` (the state dir's ``containers``)."""
        self.root = root
        self.path: str | None = None
        self.premount: Premount | None = None
        self.image: Premount | None = None  # the last start's image: the bet
        self.count = 0

    def make(self) -> None:
        """Make the spare (if there is none), with the bet's overlay mounted when there is one."""
        if self.path is not None:
            return
        self.count += 1
        path = os.path.join(self.root, f"{SPARE_PREFIX}{os.getpid()}.{self.count}")
        os.mkdir(path)
        self.path = path
        for name in SPARE_DIRS:
            os.mkdir(os.path.join(path, name))
        for name in SPARE_FILES:
            flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
            os.close(os.open(os.path.join(path, name), flags, 0o640))
        bet = self.image
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
                self.premount = bet

    def take(self, target: str) -> Premount | None:
        """Rename the spare (made now if there is none) to ``target``; what is mounted in it."""
        self.make()
        assert self.path is not None
        os.rename(self.path, target)
        premount, self.path, self.premount = self.premount, None, None
        return premount

    def discard(self) -> None:
        """Unmount and delete the spare."""
        if self.path is None:
            return
        if self.premount is not None:
            unmount(os.path.join(self.path, ROOTFS_DIR))
            self.premount = None
        shutil.rmtree(self.path, ignore_errors=True)
        self.path = None


def unmount_bet(directory: str) -> str | None:
    """Undo a lost bet in a container ``directory``: unmount, fresh work dir; error or None."""
    problem = unmount(os.path.join(directory, ROOTFS_DIR))
    if problem is not None:
        return problem
    work = os.path.join(directory, WORK_DIR)
    shutil.rmtree(work)  # a volatile overlay's work dir may not be used twice
    os.mkdir(work)
    return None
