"""The audit log: one JSON line per access decision, in ``DATA_DIR/audit.log`` (mode 0600).

Each line holds ``time`` (ISO 8601, UTC), ``who`` (a user, ``node:NAME`` for an
agent, ``-`` when nobody could be authenticated), ``action``, ``resource``,
``allowed`` (true or false) and ``reason``. Lines are appended one ``write`` at a
time (no buffer), so ``tail -f`` follows them and a crash loses none that were decided.

On a full disk the log asks for space (``on_full``: the server gives up the
database's reserve, :mod:`fuzz.orchestrate.diskspace`) and writes again; if the
line still cannot be written the decision fails with :class:`AuditWriteError`, one
sentence: no call is allowed that could not be audited.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from fuzz.errors import FuzzError

AUDIT_FILE = "audit.log"


class AuditWriteError(FuzzError):
    """A decision could not be written to the audit log (its disk is full)."""


class AuditLog:
    """Appends decisions to a file."""

    def __init__(self, path: Path, on_full: Callable[[], bool] | None = None) -> None:
        """Open ``path`` for appending (created mode 0600); ``on_full``: called when the
        disk is full, True when it freed space."""
        self._path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._on_full = on_full
        self._lock = threading.Lock()

    def record(self, who: str, action: str, resource: str, allowed: bool, reason: str) -> None:
        """Write one decision."""
        line = json.dumps({
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "who": who, "action": action, "resource": resource, "allowed": allowed,
            "reason": reason,
        })
        view = memoryview((line + "\n").encode())
        freed = False
        with self._lock:
            while view:  # a short write is continued, never repeated
                try:
                    view = view[os.write(self._fd, view):]
                except OSError as exc:
                    if not freed and exc.errno == errno.ENOSPC and self._on_full is not None \
                            and self._on_full():
                        freed = True
                        continue
                    raise AuditWriteError(
                        f"the orchestrator cannot write its audit log {self._path} "
                        f"({exc.strerror}), so it allows no call; free space on that disk"
                    ) from None

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            os.close(self._fd)
