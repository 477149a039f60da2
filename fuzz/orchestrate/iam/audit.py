"""The audit log: one JSON line per access decision, in ``DATA_DIR/audit.log`` (mode 0600).

Each line holds ``time`` (ISO 8601, UTC), ``who`` (a user, ``node:NAME`` for an
agent, ``-`` when nobody could be authenticated), ``action``, ``resource``,
``allowed`` (true or false) and ``reason``. Lines are appended and flushed one
at a time, so ``tail -f`` follows them and a crash loses none that were decided.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from pathlib import Path

AUDIT_FILE = "audit.log"


class AuditLog:
    """Appends decisions to a file."""

    def __init__(self, path: Path) -> None:
        """Open ``path`` for appending (created mode 0600)."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def record(self, who: str, action: str, resource: str, allowed: bool, reason: str) -> None:
        """Write one decision."""
        line = json.dumps({
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "who": who, "action": action, "resource": resource, "allowed": allowed,
            "reason": reason,
        })
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()
