"""Recorded state on top of any backend: JSON, lineage and serial rules, and the lock.

A :class:`~fuzz.plugin.state.StateBackend` stores opaque bytes and one lock. This
module gives every backend the same behaviour:

* the document is the JSON of :meth:`State.to_json <fuzz.engine.model.State.to_json>`;
* the serial grows by one with every change of content, and only then;
* a state of another lineage is never overwritten, nor a newer serial by an older one;
* :meth:`StateStore.lock` waits for the lock with backoff and names its holder;
* the backend only ever sees what :class:`~fuzz.lifecycle.sealing.Encryption` seals;
* versioned backends give :meth:`StateStore.history` and :meth:`StateStore.rollback`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuzz.crypto.envelope import DecryptionError
from fuzz.engine.model import State
from fuzz.errors import LockError, StateError
from fuzz.lifecycle.sealing import PLAINTEXT, STATE_CONTEXT, Encryption, resolve_encryption
from fuzz.plugin.loader import PluginSet
from fuzz.plugin.state import LockInfo, StateBackend, StateVersion, VersionedBackend
from fuzz.spec.cluster import StateSpec

LOCK_POLL_START = 0.05
LOCK_POLL_FACTOR = 1.5
LOCK_POLL_MAX = 1.0


def open_backend(
    backend_name: str, config: Mapping[str, Any], base_dir: Path, plugins: PluginSet
) -> StateBackend:
    """Build the backend named by a spec's ``state:`` block through its plugin.

    ``config`` is the block without ``backend`` and ``encryption``; relative paths in
    it are relative to ``base_dir``. Raises PluginError when no plugin provides
    ``backend_name`` and ConfigError (from the plugin) for bad keys.
    """
    return plugins.require_state_backend(backend_name).impl.open(config, base_dir)


def open_store(spec: StateSpec, base_dir: Path, plugins: PluginSet) -> StateStore:
    """The store of a ``state:`` block: its backend, encrypted as its ``encryption`` says."""
    backend = open_backend(spec.backend, spec.backend_config(), base_dir, plugins)
    return StateStore(backend, resolve_encryption(spec.encryption, backend.shared))


def dump_state(state: State) -> bytes:
    """The stored form of ``state``: indented, key-sorted JSON ending in a newline."""
    return _dump(state.to_json())


def _dump(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def parse_state(data: bytes, source: str) -> State:
    """Parse a stored document; any defect is a one-line StateError naming ``source``."""
    if not data.strip():
        raise StateError(f"{source} is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StateError(f"{source} is not UTF-8 text") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(
            f"{source} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    if not isinstance(raw, dict):
        raise StateError(f"{source} is not a JSON object")
    resources = raw.get("resources")
    if resources is not None and not isinstance(resources, dict):
        raise StateError(f"{source}: 'resources' is not a JSON object")
    for address, node in (resources or {}).items():
        if not isinstance(node, dict):
            raise StateError(f"{source}: resource {address!r} is not a JSON object")
    try:
        return State.from_json(raw)
    except StateError as exc:
        raise StateError(f"{source}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateError(f"{source} is malformed: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class HistoryEntry:
    """One stored version and its state, or why it cannot be read."""

    version: StateVersion
    state: State | None
    problem: str = ""


@dataclass(frozen=True)
class _Stored:
    """What the backend holds, as far as write's checks need it."""

    lineage: str
    serial: int
    content: dict[str, Any]


class StateStore:
    """Reads and writes :class:`State` through a backend, enforcing lineage and serial.

    Thread-safe: the engine may call :meth:`write` from worker threads. While this
    store holds the lock (inside :meth:`lock`), it trusts its record of what it
    last read or wrote and does not re-read the backend before each write; outside
    the lock it re-reads every time.
    """

    def __init__(self, backend: StateBackend, encryption: Encryption = PLAINTEXT) -> None:
        self.backend = backend
        self.encryption = encryption
        self._mutex = threading.Lock()
        self._stored: _Stored | None = None  # what the backend holds, if _known
        self._known = False
        self._lock_id: str | None = None

    def describe(self) -> str:
        """The backend's description, e.g. ``local file /x/.fuzz/state.json``."""
        return self.backend.describe()

    def _source(self) -> str:
        return f"state in {self.backend.describe()}"

    # --- reading -------------------------------------------------------------------

    def read(self) -> State | None:
        """Read and parse the stored state; None when there is none yet.

        Raises StateError (one line, naming the backend) for unreadable content.
        """
        with self._mutex:
            return self._read()

    def _read(self, allow_plaintext: bool = False) -> State | None:
        try:
            data = self.backend.read()
        except OSError as exc:
            raise StateError(f"cannot read {self._source()}: {exc}") from exc
        self._known = False
        if data is None:
            self._stored, self._known = None, True
            return None
        state = self._parse(data, self._source(), allow_plaintext)
        self._stored = _Stored(state.lineage, state.serial, state.content_json())
        self._known = True
        return state

    def _parse(self, data: bytes, source: str, allow_plaintext: bool = False) -> State:
        plain = self.encryption.open(data, STATE_CONTEXT, source, allow_plaintext=allow_plaintext)
        return parse_state(plain, source)

    def read_or_new(self, cluster: str) -> State:
        """The stored state, or a new empty one (fresh lineage, serial 0) not yet written."""
        state = self.read()
        return state if state is not None else State.new(cluster)

    def read_or_create(self, cluster: str) -> State:
        """The stored state, or a new empty one for ``cluster``, written now.

        Writing it at once fixes the lineage from the first command on, so a plan
        saved before the first apply is not refused as stale.
        """
        state = self.read()
        return state if state is not None else self.write(State.new(cluster))

    def _current(self) -> _Stored | None:
        """What the backend holds: remembered while we hold the lock, else read again."""
        if self._lock_id is not None and self._known:
            return self._stored
        self._read()
        return self._stored

    # --- writing -------------------------------------------------------------------

    def write(self, state: State) -> State:
        """Record ``state`` if its content changed; return ``state`` itself.

        Unchanged content (lineage, cluster, resources) writes nothing. Otherwise the
        write is refused when the stored state has another lineage, or a serial
        newer than ``state.serial`` (someone wrote meanwhile); else it is stored
        with serial ``max(stored, state.serial) + 1`` and **``state.serial`` is
        updated in place** to that value. The content is snapshotted once at the
        start, so another thread may keep changing ``state``; its changes are
        written by its own call.
        """
        with self._mutex:
            content = state.content_json()
            stored = self._current()
            if stored is not None:
                if content == stored.content:
                    return state
                if stored.lineage != state.lineage:
                    raise StateError(
                        f"refusing to overwrite state of lineage {stored.lineage} with "
                        f"lineage {state.lineage} ({self.describe()})"
                    )
                if stored.serial > state.serial:
                    raise StateError(
                        f"{self._source()} has serial {stored.serial}, newer than serial "
                        f"{state.serial} this change is based on: someone else wrote it "
                        "meanwhile; run the command again"
                    )
            base = max(stored.serial if stored else 0, state.serial)
            self._store(state, content, base + 1)
            return state

    def push(self, state: State, force: bool = False) -> State:
        """Replace the stored state with ``state`` (``fuzz state push FILE``).

        Without ``force`` the lineage must match and ``state.serial`` must be higher
        than the stored serial. With ``force`` anything goes, even over an unreadable
        document, but the serial never goes backwards: it is stored as
        ``max(state.serial, stored + 1)``.
        ``state.serial`` is updated in place to the serial written; returns ``state``.
        """
        with self._mutex:
            try:
                self._read()  # always compare against the backend, not memory
                stored = self._stored
            except (StateError, DecryptionError):
                if not force:
                    raise
                stored = None
            if stored is not None and not force:
                if stored.lineage != state.lineage:
                    raise StateError(
                        f"refusing to push state of lineage {state.lineage} over state of "
                        f"lineage {stored.lineage} ({self.describe()}); use --force to "
                        "replace it"
                    )
                if state.serial <= stored.serial:
                    raise StateError(
                        f"refusing to push serial {state.serial}: {self._source()} already "
                        f"has serial {stored.serial}; use --force to replace it"
                    )
            serial = max(state.serial, (stored.serial if stored else 0) + 1)
            self._store(state, state.content_json(), serial)
            return state

    def _store(self, state: State, content: dict[str, Any], serial: int) -> None:
        """Write ``content`` (a snapshot of ``state``) with ``serial``; caller holds ``_mutex``.

        The document is built from the snapshot, not from ``state`` again, so what is
        written is exactly what is remembered even if ``state`` changes meanwhile.
        """
        self._known = False  # unknown until the write succeeds
        try:
            document = _dump({**content, "serial": serial})
            self.backend.write(self.encryption.seal(document, STATE_CONTEXT))
        except OSError as exc:
            raise StateError(f"cannot write {self._source()}: {exc}") from exc
        state.serial = serial
        self._stored, self._known = _Stored(str(content["lineage"]), serial, content), True

    def adopt(self, incoming: State) -> bool:
        """Store ``incoming`` keeping its lineage and serial (``fuzz init --migrate-state``).

        Returns False when the stored state already is ``incoming``. Refuses (StateError)
        to overwrite state of another lineage that records any node, state with a
        newer serial, or different state with the same serial.
        """
        with self._mutex:
            stored = self._read()
            if stored is not None:
                content = incoming.content_json()
                if stored.lineage != incoming.lineage:
                    if stored.resources:
                        raise StateError(
                            f"refusing to overwrite {self._source()}: it holds lineage "
                            f"{stored.lineage} with {len(stored.resources)} node(s), unrelated "
                            f"to the migrated lineage {incoming.lineage}"
                        )
                elif stored.serial > incoming.serial:
                    raise StateError(
                        f"refusing to overwrite {self._source()}: its serial {stored.serial} "
                        f"is newer than the migrated serial {incoming.serial}"
                    )
                elif stored.serial == incoming.serial:
                    if stored.content_json() == content:
                        return False
                    raise StateError(
                        f"refusing to overwrite {self._source()}: it has serial "
                        f"{stored.serial} too, but different content"
                    )
            self._store(incoming, incoming.content_json(), incoming.serial)
            return True

    def rekey(self) -> State:
        """Write the stored state again (serial + 1) with the current key and settings.

        Encrypts plaintext state once encryption is on, re-encrypts state sealed with
        a fallback key with the primary one, or decrypts it once encryption is off.
        """
        with self._mutex:
            state = self._read(allow_plaintext=True)
            if state is None:
                raise StateError(f"no state yet in {self.describe()}")
            self._store(state, state.content_json(), state.serial + 1)
            return state

    # --- versions ------------------------------------------------------------------

    def _versioned(self) -> VersionedBackend:
        backend = self.backend
        if not (hasattr(backend, "history") and hasattr(backend, "read_version")):
            raise StateError(f"{self.describe()} keeps no versions")
        return backend  # type: ignore[return-value]  # checked just above

    def history(self, limit: int) -> list[HistoryEntry]:
        """The ``limit`` newest stored versions, newest first, each with its state."""
        backend = self._versioned()
        found: list[HistoryEntry] = []
        for version in backend.history(limit):
            source = f"version {version.id} of {self._source()}"
            try:
                data = backend.read_version(version.id)
                found.append(HistoryEntry(version, self._parse(data, source,
                                                               allow_plaintext=True)))
            except (StateError, DecryptionError) as exc:
                found.append(HistoryEntry(version, None, str(exc)))
        return found

    def rollback(self, version_id: str) -> State:
        """Make stored version ``version_id`` current again, as a new write (serial + 1).

        Refused when that version has another lineage than the current state.
        """
        backend = self._versioned()
        with self._mutex:
            old = self._parse(backend.read_version(version_id),
                              f"version {version_id} of {self._source()}", allow_plaintext=True)
            current = self._read()
            if current is not None and current.lineage != old.lineage:
                raise StateError(
                    f"refusing to roll back to version {version_id}: its lineage {old.lineage} "
                    f"is not the current lineage {current.lineage}"
                )
            serial = max(old.serial, current.serial if current else 0) + 1
            self._store(old, old.content_json(), serial)
            return old

    # --- the lock ------------------------------------------------------------------

    @contextmanager
    def lock(self, operation: str, timeout: float) -> Iterator[LockInfo]:
        """Hold the state lock for ``operation``, waiting up to ``timeout`` seconds.

        Polls with backoff (50 ms, x1.5, at most 1 s); ``timeout`` 0 tries once.
        Raises LockError naming the holder when it cannot be had. Yields this
        request's LockInfo and always unlocks on exit. Not re-entrant.
        """
        info = LockInfo.new(operation)
        try:
            self._acquire(info, max(0.0, timeout))
            with self._mutex:
                self._lock_id = info.id
                self._known = False  # others may have written before we got the lock
            yield info
        finally:
            with self._mutex:
                self._lock_id = None
            try:
                self.backend.unlock(info.id)
            except OSError as exc:
                message = f"cannot release the state lock ({self.describe()}): {exc}"
                raise LockError(message) from exc

    def _acquire(self, info: LockInfo, timeout: float) -> None:
        start = time.monotonic()
        delay = LOCK_POLL_START
        while True:
            try:
                holder = self.backend.try_lock(info)
            except OSError as exc:
                message = f"cannot take the state lock ({self.describe()}): {exc}"
                raise LockError(message) from exc
            if holder is None:
                return
            waited = time.monotonic() - start
            if waited >= timeout:
                raise LockError(
                    f"state is locked: {holder.describe()}; waited {_seconds(waited)}s "
                    "(raise --lock-timeout to wait longer; if its holder died, run: "
                    f"fuzz force-unlock {holder.id})"
                )
            time.sleep(min(delay, timeout - waited))
            delay = min(delay * LOCK_POLL_FACTOR, LOCK_POLL_MAX)

    def lock_holder(self) -> LockInfo | None:
        """Who holds the lock now, or None when it is free."""
        return self.backend.lock_holder()

    def force_unlock(self, lock_id: str) -> None:
        """Break a lock left behind by a dead process (``fuzz force-unlock LOCK_ID``)."""
        self.backend.force_unlock(lock_id)


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}"
