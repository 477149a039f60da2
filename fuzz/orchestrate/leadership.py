"""Which of a cluster's ``fuzz server`` replicas leads: a lease row in PostgreSQL.

Replicas share one PostgreSQL store; one of them, the leader, runs the runner, the
elastic loop and the data mover. Leadership is the one row of ``fuzz_leader``:
its ``holder`` (a replica's own id), the ``address`` clients and agents reach it at,
an ``epoch`` that only grows (the fencing token), and ``expires_at`` by the
database's clock. A replica takes the row by a conditional ``UPDATE`` once it has
expired (``epoch + 1``), and renews it every ``ttl / 4`` seconds by a conditional
``UPDATE`` on its own epoch. No replica's clock is compared with another's.

Fencing: the leader's store checks the row in every write transaction
(:func:`fence_check`: ``SELECT … FOR SHARE``, epoch its own and not expired) before
writing; a takeover's ``UPDATE`` waits for that row lock, so every write of an old
epoch commits before a new epoch exists, and none after. A bare advisory lock would
not do: a stopped (SIGSTOPped, swapped-out) leader keeps its connection and its lock.

What a leader does outside the store (calls to agents) is fenced by its own clock:
:meth:`LeaderLease.held` is true only until ``ttl`` after the last renewal was *sent*
(the monotonic clock runs on while a process is stopped), earlier than the database
lets anyone take the row, so a paused old leader finds it may not act on waking.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuzz.errors import FuzzError
from fuzz.orchestrate.store_sql import DATABASE_ERRORS, PostgresDialect, open_database
from fuzz.orchestrate.store_target import PostgresTarget, StoreError

logger = logging.getLogger(__name__)

DEFAULT_LEASE_TTL = 5.0  # seconds a leader's lease lasts without renewal
LEASE_TTL_ENV = "FUZZ_LEADER_LEASE_TTL"  # seconds: shorter in tests
ROW = "orchestrator"
_TABLE = """CREATE TABLE IF NOT EXISTS fuzz_leader (
    name TEXT PRIMARY KEY, instance TEXT NOT NULL, holder TEXT NOT NULL,
    address TEXT NOT NULL, epoch BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL)"""
_FENCE = ("SELECT 1 FROM fuzz_leader WHERE name = %s AND epoch = %s "
          "AND expires_at > clock_timestamp() FOR SHARE")


class FencedError(FuzzError):
    """A write by a replica whose leadership epoch is no longer the current one."""


class LeadershipLostError(FuzzError):
    """This replica's lease was taken or expired: it stops leading."""


def lease_ttl() -> float:
    """The lease's TTL: ``$FUZZ_LEADER_LEASE_TTL`` seconds (tests), else 5."""
    text = os.environ.get(LEASE_TTL_ENV, "")
    try:
        value = float(text) if text else DEFAULT_LEASE_TTL
    except ValueError:
        raise StoreError(f"${LEASE_TTL_ENV}={text!r} is not a number of seconds") from None
    if value <= 0:
        raise StoreError(f"${LEASE_TTL_ENV} must be more than 0 seconds")
    return value


def replica_id(data_dir: Path) -> str:
    """This replica's holder id: its host and data dir (one server per data dir, so a
    server restarted on the same data dir may take back its own lease at once)."""
    return f"{socket.gethostname()}:{data_dir.absolute()}"


def fence_check(db: Any, epoch: int) -> None:
    """In a write transaction on ``db``: raise FencedError unless ``epoch`` holds the
    lease now, and keep the row share-locked (no takeover) until the transaction ends."""
    if db.execute(_FENCE, (ROW, epoch)).fetchone() is None:
        raise FencedError(f"this orchestrator's leadership (epoch {epoch}) was taken or "
                          "expired: it writes nothing more")


@dataclass(frozen=True)
class Leader:
    """Who leads: its holder id, where it serves, its epoch, and whether it is live."""

    holder: str
    address: str
    epoch: int
    live: bool


class LeaderLease:
    """The ``fuzz_leader`` row of one PostgreSQL store, on a connection of its own."""

    def __init__(self, target: PostgresTarget, instance: str | None, holder: str,
                 address: str, ttl: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        """Open the row (created free on first use, with ``instance``, else a new id).

        The row keeps the cluster's instance id (part of every container id), which
        :attr:`instance` says: a replica whose data dir has none takes it from there;
        one whose data dir names another is refused (it belongs to another cluster).
        """
        self._dialect = PostgresDialect(target)
        self._holder, self._address, self.ttl = holder, address, ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._db = open_database(self._dialect)
        self.epoch = 0
        self._held_until = 0.0
        self.instance: str = self._run(
            lambda db: self._ensure(db, instance or secrets.token_hex(4)))
        if instance is not None and self.instance != instance:
            self.close()
            raise StoreError(f"the store {target.url} belongs to the cluster instance "
                             f"{self.instance}, this data dir's instance-id is {instance}: "
                             "a replica's data dir starts without one (see README, "
                             "\"Replicas\")")

    def _run(self, work: Callable[[Any], Any]) -> Any:
        """``work(db)`` in a transaction; on a lost connection, once more on a new one."""
        with self._lock:
            try:
                with self._db.transaction():
                    return work(self._db)
            except DATABASE_ERRORS as exc:
                if not self._dialect.broken(self._db, exc):
                    raise
            self._db = open_database(self._dialect)
            with self._db.transaction():
                return work(self._db)

    @staticmethod
    def _ensure(db: Any, instance: str) -> str:
        db.execute("SELECT pg_advisory_xact_lock(hashtext('fuzz_leader'))")
        db.execute(_TABLE)
        db.execute("INSERT INTO fuzz_leader VALUES (%s, %s, '', '', 0, '-infinity') "
                   "ON CONFLICT (name) DO NOTHING", (ROW, instance))
        return str(db.execute("SELECT instance FROM fuzz_leader WHERE name = %s",
                              (ROW,)).fetchone()[0])

    def close(self) -> None:
        """Close the lease's connection (the row stays; it expires by itself)."""
        with self._lock:
            self._db.close()

    def try_take(self) -> bool:
        """Take the lease if it is free (expired, or this replica's own from before a
        restart); True when this replica now leads, at a new :attr:`epoch`."""
        sent = self._clock()
        row = self._run(lambda db: db.execute(
            "UPDATE fuzz_leader SET holder = %s, address = %s, epoch = epoch + 1, "
            "expires_at = clock_timestamp() + make_interval(secs => %s) "
            "WHERE name = %s AND (expires_at <= clock_timestamp() OR holder = %s) "
            "RETURNING epoch", (self._holder, self._address, self.ttl, ROW, self._holder),
        ).fetchone())
        if row is None:
            return False
        self.epoch = int(row[0])
        self._held_until = sent + self.ttl
        return True

    def renew(self) -> bool:
        """Extend the lease; False when it is no longer this replica's epoch, or expired
        (another may be taking it: a leader that let it lapse does not carry on)."""
        sent = self._clock()
        row = self._run(lambda db: db.execute(
            "UPDATE fuzz_leader SET expires_at = clock_timestamp() + make_interval(secs => %s) "
            "WHERE name = %s AND epoch = %s AND expires_at > clock_timestamp() "
            "RETURNING epoch", (self.ttl, ROW, self.epoch)).fetchone())
        if row is None:
            self._held_until = 0.0
            return False
        self._held_until = sent + self.ttl
        return True

    def held(self) -> bool:
        """Whether this replica surely still leads, by its own clock (see the module)."""
        return self._clock() < self._held_until

    def leader(self) -> Leader | None:
        """The current holder (None before anyone led)."""
        row = self._run(lambda db: db.execute(
            "SELECT holder, address, epoch, expires_at > clock_timestamp() "
            "FROM fuzz_leader WHERE name = %s", (ROW,)).fetchone())
        if row is None or not row[0]:
            return None
        return Leader(str(row[0]), str(row[1]), int(row[2]), bool(row[3]))

    def keep(self, stop: threading.Event, lost: Callable[[str], None]) -> None:
        """Renew every ``ttl / 4`` seconds until ``stop``; on losing the lease (or the
        database for longer than it lasts) call ``lost(reason)`` once and return."""
        while not stop.wait(self.ttl / 4):
            try:
                if self.renew():
                    continue
                reason = f"its lease (epoch {self.epoch}) was taken or expired"
            except (*DATABASE_ERRORS, StoreError) as exc:
                if self.held():
                    logger.warning("cannot renew the leadership lease yet: %s", exc)
                    continue
                reason = f"it could not renew its lease (epoch {self.epoch}): {exc}"
            lost(reason)
            return

    def release(self) -> None:
        """Give the lease up (a clean stop): another replica may take it at once."""
        self._held_until = 0.0
        self._run(lambda db: db.execute(
            "UPDATE fuzz_leader SET expires_at = '-infinity' WHERE name = %s AND epoch = %s",
            (ROW, self.epoch)))


class LeaderTerm:
    """This replica's time as leader: the lease renewed in the background, and on its
    loss (or a fenced write) the server told to stop, once, with the reason kept."""

    def __init__(self, lease: LeaderLease, stop: threading.Event) -> None:
        """Lead on ``lease`` (already taken); ``stop`` stops the server."""
        self.lease = lease
        self._stop = stop
        self._lock = threading.Lock()
        self.lost_reason: str | None = None
        threading.Thread(target=lease.keep, args=(stop, self.lose), name="leader-lease",
                         daemon=True).start()

    def lose(self, reason: str) -> None:
        """Stop leading: say why (once) and stop the server."""
        with self._lock:
            if self.lost_reason is not None:
                return
            self.lost_reason = reason
        logger.error("this orchestrator stops leading: %s", reason)
        self._stop.set()

    def fenced(self, exc: FencedError) -> None:
        """A write was fenced: stop leading."""
        self.lose(str(exc))

    def leading(self) -> bool:
        """Whether this replica still leads (it has not lost its lease)."""
        return self.lost_reason is None

    def acting(self) -> bool:
        """Whether this replica may act outside the store (call agents) now: it leads, and
        its lease surely holds by its own clock; if not, it stops leading, before the
        caller can react to the refusal."""
        if self.lost_reason is None and not self.lease.held():
            self.lose("its lease lapsed by its own clock (the process was paused, or the "
                      "store did not answer)")
        return self.lost_reason is None

    def end(self) -> None:
        """After the server stopped: give the lease up if it was still held; raise
        LeadershipLostError if it was lost."""
        try:
            if self.lost_reason is None:
                self.lease.release()
        finally:
            self.lease.close()
        if self.lost_reason is not None:
            raise LeadershipLostError(f"this orchestrator stopped leading: {self.lost_reason}")
