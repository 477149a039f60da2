"""Per-tenant job ids: every job owner runs as a uid:gid of their own.

The orchestrator gives each owner, on their first workflow, the lowest id of the
admin's range (``orchestrator.job_ids``) that no owner has had, as both uid and
gid, and records it in the store (:class:`~fuzz.orchestrate.records.OwnerIdsRecord`):
it never changes, and since records are never deleted it is never given to another
owner, even when the range moves. Every job and every volume of the owner use it,
so one tenant's processes cannot enter another's volumes (0700).

At server start the range is checked against the host's accounts: no uid of
``/etc/passwd``, gid of ``/etc/group`` or subordinate range of ``/etc/subuid``,
``/etc/subgid`` (user namespaces of rootless containers) may fall in it.
"""

from __future__ import annotations

import grp
import pwd
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fuzz.errors import FuzzError
from fuzz.orchestrate.records import OwnerIdsRecord
from fuzz.orchestrate.store import Store

SUBORDINATE_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))


class JobIdsExhaustedError(FuzzError):
    """Every id of the range was given to an owner already."""


@dataclass(frozen=True)
class JobIdRange:
    """``count`` ids from ``first`` on."""

    first: int
    count: int

    @property
    def last(self) -> int:
        """The highest id of the range."""
        return self.first + self.count - 1

    def __contains__(self, number: object) -> bool:
        """Whether ``number`` is an id of the range."""
        return isinstance(number, int) and self.first <= number <= self.last

    def __str__(self) -> str:
        """``first-last``."""
        return f"{self.first}-{self.last}"


DEFAULT_JOB_IDS = JobIdRange(200000, 100000)  # as the spec's orchestrator.job_ids defaults


@dataclass(frozen=True)
class JobIds:
    """The uid and gid an owner's jobs run as and their volumes belong to."""

    uid: int
    gid: int


class JobIdAllocator:
    """Gives each owner their ids once and remembers them; thread-safe."""

    def __init__(self, store: Store, id_range: JobIdRange) -> None:
        """Give new owners ids of ``id_range``; the ones recorded in ``store`` stay."""
        self._store = store
        self._range = id_range
        self._lock = threading.Lock()
        self._given = {r.owner: JobIds(r.uid, r.gid) for r in store.load(OwnerIdsRecord)}

    def of(self, owner: str) -> JobIds:
        """``owner``'s ids, given (and recorded) now if they have none yet."""
        with self._lock:
            ids = self._given.get(owner)
            if ids is None:
                ids = self._give(owner)
            return ids

    def _give(self, owner: str) -> JobIds:
        taken = {ids.uid for ids in self._given.values()} | {
            ids.gid for ids in self._given.values()}
        number = next((n for n in range(self._range.first, self._range.last + 1)
                       if n not in taken), None)
        if number is None:
            raise JobIdsExhaustedError(
                f"all {self._range.count} job ids of orchestrator.job_ids ({self._range}) are "
                "taken: widen the range in the cluster spec to add owners")
        self._store.save(OwnerIdsRecord(owner, number, number, time.time()))
        ids = self._given[owner] = JobIds(number, number)
        return ids


def _subordinate_ranges(files: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(account, first, count) of every line of the subordinate id files that exist."""
    ranges = []
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                ranges.append((fields[0], int(fields[1]), int(fields[2])))
    return ranges


def range_problem(id_range: JobIdRange,
                  subordinate: Iterable[tuple[str, int, int]] | None = None) -> str | None:
    """Why ``id_range`` may not be used on this host (it holds an account's id); None if
    it may. ``subordinate``: (account, first, count) ranges, by default those of
    ``/etc/subuid`` and ``/etc/subgid``."""
    for user in pwd.getpwall():
        if user.pw_uid in id_range:
            return (f"orchestrator.job_ids ({id_range}) holds uid {user.pw_uid} "
                    f"({user.pw_name}) of this host: choose a range no account uses")
    for group in grp.getgrall():
        if group.gr_gid in id_range:
            return (f"orchestrator.job_ids ({id_range}) holds gid {group.gr_gid} "
                    f"({group.gr_name}) of this host: choose a range no account uses")
    if subordinate is None:
        subordinate = _subordinate_ranges(SUBORDINATE_FILES)
    for account, first, count in subordinate:
        if first <= id_range.last and id_range.first <= first + count - 1:
            return (f"orchestrator.job_ids ({id_range}) overlaps the subordinate ids of "
                    f"{account} ({first}-{first + count - 1}) on this host: choose a range "
                    "no account uses")
    return None
