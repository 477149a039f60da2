"""The contract between fuzz and a state backend: opaque bytes plus a lock.

A backend stores one state document and one lock. It never interprets the
document; serialisation, serial numbers and lineage checks live in
:mod:`fuzz.lifecycle.statestore`, so every backend gets them for free.
"""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or asks for) the state lock, shown when someone else has to wait."""

    id: str
    operation: str
    who: str
    created: str
    path: str = ""

    @classmethod
    def new(cls, operation: str, path: str = "") -> LockInfo:
        """Describe a lock request by this process: a fresh id, user@host and the time now."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        return cls(
            id=str(uuid.uuid4()),
            operation=operation,
            who=f"{user}@{socket.gethostname()}",
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            path=path,
        )

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LockInfo:
        """Build from :meth:`to_json` output, ignoring unknown keys."""
        fields = ("id", "operation", "who", "created", "path")
        return cls(**{k: str(data.get(k, "")) for k in fields})

    def describe(self) -> str:
        """One line naming the holder: id, operation, user@host and since when."""
        return f"ID {self.id}, operation {self.operation}, by {self.who}, since {self.created}"


class StateBackend(Protocol):
    """Stores one state document and guards it with one lock.

    Implementations must make :meth:`write` atomic (a reader sees the old or the
    new document, never a mix) and keep the previous version recoverable.
    ``shared`` is True for backends a team shares (S3, PostgreSQL): encryption is
    then on by default whenever a key is available.
    """

    shared: bool

    def describe(self) -> str:
        """A short human description, e.g. ``local file /x/.fuzz/state.json``."""
        ...

    def read(self) -> bytes | None:
        """Return the stored document, or None when no state exists yet."""
        ...

    def write(self, data: bytes) -> None:
        """Replace the stored document atomically, keeping the previous version."""
        ...

    def try_lock(self, info: LockInfo) -> LockInfo | None:
        """Try once to take the lock: None when taken, else the current holder's info."""
        ...

    def unlock(self, lock_id: str) -> None:
        """Release the lock taken with ``lock_id``; a no-op if it is not held by that id."""
        ...

    def lock_holder(self) -> LockInfo | None:
        """Return the current holder's info, or None when the lock is free."""
        ...

    def force_unlock(self, lock_id: str) -> None:
        """Break a lock left behind by a dead process; raises LockError if ``lock_id`` differs."""
        ...


@dataclass(frozen=True)
class StateVersion:
    """One stored version of the state document, newest first in a history."""

    id: str
    created: str
    size: int
    current: bool = False


class VersionedBackend(StateBackend, Protocol):
    """A backend that keeps earlier versions (``fuzz state history`` and ``rollback``)."""

    def history(self, limit: int) -> list[StateVersion]:
        """The ``limit`` newest versions, newest (the current one) first."""
        ...

    def read_version(self, version_id: str) -> bytes:
        """The document as it was in version ``version_id``; StateError if there is none."""
        ...
