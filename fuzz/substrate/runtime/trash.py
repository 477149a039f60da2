"""Deleting removed container directories off the path of the call that removes them.

A removed container's directory holds a dozen files and directories (its bundle,
overlay dirs, logs, status temps); unlinking them one by one costs milliseconds on
a disk, and the profile of 500 short tasks on a local cluster put that ``rmtree``
at a fifth of the agent's time, on the path between a task's end and its lease's
release. So :meth:`Trash.discard` renames the directory to a hidden name in the
same ``containers`` directory (one rename: the container's id is free at once, and
nothing of it is reachable under that id any more) and a daemon thread deletes it.
What an agent that stopped left there is deleted by the next one's trash.

The monitor ignores hidden names (its sweep skips them), so a directory in the
trash is never taken for a container.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import shutil
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

TRASH_PREFIX = ".removed-"


class Trash:
    """Deletes directories renamed into ``root`` under :data:`TRASH_PREFIX` names."""

    def __init__(self, root: Path) -> None:
        """Trash directories of ``root`` (the state dir's ``containers``)."""
        self.root = root
        self._queue: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def discard(self, directory: Path) -> None:
        """Rename ``directory`` (in :attr:`root`) away and have it deleted in the background."""
        with self._lock:
            if self._thread is None:
                for leftover in self._leftovers():  # from an agent that stopped
                    self._queue.put(leftover)
                self._thread = threading.Thread(target=self._delete_all, name="container-trash",
                                                daemon=True)
                self._thread.start()
        doomed = self.root / f"{TRASH_PREFIX}{directory.name}.{secrets.token_hex(4)}"
        os.rename(directory, doomed)
        self._queue.put(doomed)

    def _leftovers(self) -> list[Path]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [self.root / name for name in names if name.startswith(TRASH_PREFIX)]

    def _delete_all(self) -> None:
        while True:
            path = self._queue.get()
            try:
                shutil.rmtree(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("cannot delete removed container directory %s: %s", path, exc)
