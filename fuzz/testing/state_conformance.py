"""The state-backend conformance kit: one behavioural suite that every state backend passes.

A backend's test module subclasses :class:`StateBackendConformance` and defines a
``state_target`` fixture that returns a :class:`StateTarget`: the backend's name,
a ``state:`` block (without ``backend``) naming a fresh, empty state that only this
test uses, and a block whose every operation fails (a server that does not
answer, a path that cannot be a directory)::

    from fuzz.testing.state_conformance import StateBackendConformance, StateTarget

    class TestMyStoreConformance(StateBackendConformance):
        @pytest.fixture
        def state_target(self, my_server, tmp_path) -> StateTarget:
            return StateTarget(name="mystore", config={"url": my_server.url,
                               "prefix": uuid.uuid4().hex}, base_dir=tmp_path,
                               failing_config={"url": "http://127.0.0.1:9"},
                               breaks_live_locks=True, lock_outlives_holder=True)

This module is a pytest plugin (entry point ``pytest11``, loaded wherever fuzz is
installed): it provides the ``state_conformance`` fixture, a
:class:`StateConformanceSession` that vendors may use in tests of their own.

The kit opens the backend the way ``fuzz`` does, through
:func:`fuzz.lifecycle.statestore.open_backend` and the installed plugins (or the target's
plugin in-process when no entry point publishes its name); every
:meth:`StateConformanceSession.open` is another client of the same state, as
another machine would be. It checks: the document round-trips byte for byte; a
write based on an outdated read is refused; the lock admits one holder and names
it, is released only by its id, and ``force-unlock`` breaks it only with that id;
a killed holder's lock goes away or stays breakable, as the backend says; the
versions it keeps can be listed and read; every failure is a one-line
:class:`~fuzz.errors.FuzzError` of the right type. A behaviour the backend does
not have is left out with a reason in ``exemptions`` and shown as a skip with it.
"""

from __future__ import annotations

import importlib
import json
import select
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import pytest

from fuzz.engine.model import State
from fuzz.errors import ConfigError, FuzzError, LockError, StateError
from fuzz.lifecycle.statestore import StateStore, open_backend
from fuzz.plugin.state import LockInfo, StateBackend, VersionedBackend
from fuzz.testing.loading import plugins_with_state_backend

Behaviour = Literal["conditional-write", "versions", "other-processes"]
ALL_BEHAVIOURS: frozenset[Behaviour] = frozenset(get_args(Behaviour))
NO_SUCH_VERSION = "999999"
# Sealed state is binary: every byte value, and enough of them to span several packets.
DOCUMENT = bytes(range(256)) * 512


@dataclass(frozen=True)
class StateTarget:
    """A state backend under test and how it behaves where backends may differ.

    ``config`` names a fresh, empty state used by this test only; ``failing_config``
    a state every operation on fails (a port nobody listens on, a path below a
    regular file). ``breaks_live_locks``: ``force-unlock`` ends a holder that
    still runs (S3 deletes the lock object, PostgreSQL ends the holder's session);
    when False it must refuse with a LockError instead (a local ``flock``).
    ``lock_outlives_holder``: a killed holder's lock stays until ``force-unlock``
    (an S3 lock object); when False it goes away with the holder's process.
    ``exemptions`` maps a behaviour the backend lacks to why; ``timeout`` bounds
    the wait for a killed holder's lock to go.
    """

    name: str
    config: Mapping[str, Any]
    base_dir: Path
    failing_config: Mapping[str, Any]
    breaks_live_locks: bool
    lock_outlives_holder: bool
    plugin: object | None = None
    exemptions: Mapping[Behaviour, str] = field(default_factory=dict)
    timeout: float = 20.0


class StateConformanceSession:
    """Opens clients of the target's state the way ``fuzz`` does, and cleans up after."""

    def __init__(self, target: StateTarget) -> None:
        """Load the installed plugins, or the target's plugin in-process."""
        self.target = target
        self.plugins = plugins_with_state_backend(target.name, target.plugin)
        self._locks: list[tuple[StateBackend, str]] = []
        self._holders: list[subprocess.Popen[str]] = []

    def open(self, config: Mapping[str, Any] | None = None) -> StateBackend:
        """A new client of the target's state (of ``config`` when given)."""
        block = self.target.config if config is None else config
        return open_backend(self.target.name, dict(block), self.target.base_dir, self.plugins)

    def lock(self, backend: StateBackend, operation: str) -> LockInfo:
        """Take the lock through ``backend`` (failing the test if it is held); return its info."""
        info = LockInfo.new(operation)
        holder = backend.try_lock(info)
        assert holder is None, f"a free lock was refused: held by {holder}"
        self._locks.append((backend, info.id))
        return info

    def try_lock(self, backend: StateBackend, operation: str) -> tuple[LockInfo, LockInfo | None]:
        """Try the lock through ``backend``: this request's info and the holder (None: ours)."""
        info = LockInfo.new(operation)
        holder = backend.try_lock(info)
        if holder is None:
            self._locks.append((backend, info.id))
        return info, holder

    def exempt(self, behaviour: Behaviour) -> None:
        """Skip with the target's reason when it lacks ``behaviour``; fail without one."""
        if behaviour not in self.target.exemptions:
            return
        reason = self.target.exemptions[behaviour]
        if not reason.strip():
            pytest.fail(f"the target leaves out {behaviour!r} without saying why "
                        "(StateTarget.exemptions)")
        pytest.skip(f"the {self.target.name} backend has no {behaviour!r}: {reason}")

    def hold_in_another_process(self) -> tuple[subprocess.Popen[str], str]:
        """Start a process that takes the lock and keeps it; return it and its lock id."""
        spec = {"name": self.target.name, "config": dict(self.target.config),
                "base_dir": str(self.target.base_dir), "plugin": _module_name(self.target)}
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, json.dumps(spec)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self._holders.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], self.target.timeout)
        line = proc.stdout.readline().strip() if ready else ""
        if not line.startswith("locked "):
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"the holder process did not take the lock: {line!r} {err[-2000:]}")
        return proc, line.removeprefix("locked ")

    def cleanup(self) -> list[str]:
        """Release every lock the kit took and end its holder processes; return problems."""
        problems: list[str] = []
        for proc in self._holders:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        for backend, lock_id in self._locks:
            try:
                backend.unlock(lock_id)
            except (FuzzError, OSError) as exc:
                problems.append(f"unlock {lock_id}: {exc}")
        return problems


def _module_name(target: StateTarget) -> str:
    """The module a child process imports to get the target's in-process plugin, or ""."""
    return target.plugin.__name__ if isinstance(target.plugin, types.ModuleType) else ""


def _hold_the_lock(spec_json: str) -> None:
    """In a child process: take the lock of the state ``spec_json`` names, then wait."""
    spec = json.loads(spec_json)
    plugin = importlib.import_module(spec["plugin"]) if spec["plugin"] else None
    backend = open_backend(spec["name"], spec["config"], Path(spec["base_dir"]),
                           plugins_with_state_backend(spec["name"], plugin))
    info = LockInfo.new("conformance-holder")
    holder = backend.try_lock(info)
    print(f"locked {info.id}" if holder is None else f"refused: {holder.describe()}", flush=True)
    while True:  # until the test kills it; the lock lives as long as this backend does
        signal.pause()


@pytest.fixture
def state_conformance(state_target: StateTarget) -> Iterator[StateConformanceSession]:
    """A :class:`StateConformanceSession` on the target; releases its locks afterwards."""
    session = StateConformanceSession(state_target)
    yield session
    problems = session.cleanup()
    if problems:
        pytest.fail("conformance clean-up: " + "; ".join(problems))


def _one_line(error: BaseException) -> str:
    message = str(error).strip()
    assert message, f"{type(error).__name__} has an empty message"
    assert "\n" not in message, f"the message is not one line: {message!r}"
    return message


def _versioned(backend: StateBackend) -> VersionedBackend:
    assert hasattr(backend, "history") and hasattr(backend, "read_version"), (
        "the backend keeps no versions (no history/read_version); exempt 'versions' and say why"
    )
    return backend  # type: ignore[return-value]  # checked just above


def _write_after_reading(backend: StateBackend, data: bytes) -> None:
    backend.read()
    backend.write(data)


class StateBackendConformance:
    """The behavioural suite. Subclass it (``class TestXConformance(StateBackendConformance)``)
    and define a ``state_target`` fixture; see the module docstring."""

    def test_a_document_round_trips_byte_for_byte(
        self, state_conformance: StateConformanceSession
    ) -> None:
        """A fresh state reads None; what one client writes, every client reads exactly."""
        writer = state_conformance.open()
        description = writer.describe()
        assert description.strip() and "\n" not in description, f"describe(): {description!r}"
        assert isinstance(writer.shared, bool), f"shared is {writer.shared!r}, not a bool"
        assert writer.read() is None, "a fresh state is not empty"
        writer.write(DOCUMENT)
        assert writer.read() == DOCUMENT, "the writer reads back other bytes"
        assert state_conformance.open().read() == DOCUMENT, "another client reads other bytes"
        writer.write(b'{"second": 2}\n')
        assert state_conformance.open().read() == b'{"second": 2}\n', "the rewrite was lost"

    def test_a_write_based_on_an_outdated_read_is_refused(
        self, state_conformance: StateConformanceSession
    ) -> None:
        """Of two clients that read the same version, only the first write lands; the
        other is refused with a StateError and changes nothing."""
        state_conformance.exempt("conditional-write")
        first, second = state_conformance.open(), state_conformance.open()
        assert first.read() is None and second.read() is None
        first.write(b'{"one": 1}')
        with pytest.raises(StateError) as refused:
            second.write(b'{"two": 2}')  # both started from "no state": only one may create
        _one_line(refused.value)
        assert state_conformance.open().read() == b'{"one": 1}'
        _write_after_reading(second, b'{"two": 2}')
        with pytest.raises(StateError):
            first.write(b'{"three": 3}')
        assert state_conformance.open().read() == b'{"two": 2}'

    def test_a_store_refuses_a_change_based_on_an_older_serial(
        self, state_conformance: StateConformanceSession
    ) -> None:
        """Through :class:`StateStore`, a client that missed a write cannot undo it:
        each read sees the newest document, never a cached one."""
        mine, theirs = (StateStore(state_conformance.open()) for _ in range(2))
        created = mine.write(State.new("conformance"))
        seen = theirs.read()
        assert seen is not None and (seen.lineage, seen.serial) == (created.lineage, 1)
        created.cluster = "conformance-renamed"
        mine.write(created)
        seen.cluster = "conformance-other"
        with pytest.raises(StateError, match="newer than serial 1") as refused:
            theirs.write(seen)
        _one_line(refused.value)
        final = StateStore(state_conformance.open()).read()
        assert final is not None and (final.serial, final.cluster) == (2, "conformance-renamed")

    def test_the_lock_admits_one_holder_and_names_it(
        self, state_conformance: StateConformanceSession
    ) -> None:
        """A second client is told who holds the lock; only the holder's id releases it;
        the holder asking again with its id still holds it."""
        holder, waiter = state_conformance.open(), state_conformance.open()
        mine = state_conformance.lock(holder, "apply")
        assert holder.try_lock(mine) is None, "the holder's own id was refused"
        theirs, seen = state_conformance.try_lock(waiter, "plan")
        assert seen is not None, "two clients hold the lock at once"
        assert (seen.id, seen.operation, seen.created) == (mine.id, "apply", mine.created)
        assert seen.who.startswith(mine.who), f"holder {seen.who!r}, expected {mine.who!r}"
        shown = state_conformance.open().lock_holder()
        assert shown is not None and (shown.id, shown.operation) == (mine.id, "apply")
        waiter.unlock(theirs.id)  # not the holder's id: nothing happens
        still = state_conformance.open().lock_holder()
        assert still is not None and still.id == mine.id, "another id released the lock"
        waiting = StateStore(waiter)
        with (pytest.raises(LockError, match=f"state is locked: ID {mine.id}") as waited,
              waiting.lock("plan", 0.2)):
            pass
        _one_line(waited.value)
        holder.unlock(mine.id)
        assert state_conformance.open().lock_holder() is None, "unlock left the lock held"
        state_conformance.lock(waiter, "plan")

    def test_force_unlock_needs_the_holders_id(
        self, state_conformance: StateConformanceSession
    ) -> None:
        """``force-unlock`` with another id is a LockError naming the lock held, and
        leaves it held; with the holder's id it breaks the lock, or refuses to break a
        live holder (``breaks_live_locks``) with a LockError."""
        holder, admin = state_conformance.open(), state_conformance.open()
        mine = state_conformance.lock(holder, "apply")
        with pytest.raises(LockError) as wrong:
            admin.force_unlock("not-the-lock-id")
        assert mine.id in _one_line(wrong.value), f"the error does not name {mine.id}"
        held = admin.lock_holder()
        assert held is not None and held.id == mine.id, "a wrong id broke the lock"
        if not state_conformance.target.breaks_live_locks:
            with pytest.raises(LockError) as refused:
                admin.force_unlock(mine.id)
            _one_line(refused.value)
            held = state_conformance.open().lock_holder()
            assert held is not None and held.id == mine.id, "a live holder's lock was broken"
            return
        admin.force_unlock(mine.id)
        assert state_conformance.open().lock_holder() is None, "force-unlock left the lock"
        newcomer = state_conformance.open()
        taken = state_conformance.lock(newcomer, "apply")
        holder.unlock(mine.id)  # the old holder finishes late: it must not free the new lock
        held = state_conformance.open().lock_holder()
        assert held is not None and held.id == taken.id, "a late unlock freed another's lock"

    def test_a_killed_holders_lock_goes_or_stays_breakable(
        self, state_conformance: StateConformanceSession
    ) -> None:
        """Another process's lock is seen while it runs; once it is killed (``kill -9``) the
        lock goes with it, or stays until ``force-unlock`` (``lock_outlives_holder``).
        Either way a newcomer then holds it, and the dead holder's id cannot break it."""
        state_conformance.exempt("other-processes")
        target = state_conformance.target
        proc, dead_id = state_conformance.hold_in_another_process()
        seen = state_conformance.open().lock_holder()
        assert seen is not None and seen.id == dead_id, f"the other process's lock: {seen}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=target.timeout)
        admin = state_conformance.open()
        if target.lock_outlives_holder:
            held = admin.lock_holder()
            assert held is not None and held.id == dead_id, "the lock did not outlive its holder"
            _, refused_by = state_conformance.try_lock(state_conformance.open(), "apply")
            assert refused_by is not None and refused_by.id == dead_id
            admin.force_unlock(dead_id)
        deadline = time.monotonic() + target.timeout
        while (held := admin.lock_holder()) is not None:
            assert time.monotonic() < deadline, f"a killed holder's lock stays: {held}"
            time.sleep(0.05)
        newcomer = state_conformance.lock(state_conformance.open(), "apply")
        with pytest.raises(LockError) as refused:
            admin.force_unlock(dead_id)
        _one_line(refused.value)
        held = state_conformance.open().lock_holder()
        assert held is not None and held.id == newcomer.id, "the dead holder's id broke a lock"

    def test_versions_are_listed_newest_first_and_readable(
        self, state_conformance: StateConformanceSession
    ) -> None:
        """``history`` lists the current document first and the one before next, with
        their sizes; ``read_version`` returns each; an unknown version is a StateError."""
        state_conformance.exempt("versions")
        backend = _versioned(state_conformance.open())
        for document in (b'{"v": 1}', b'{"v": 2}', b'{"v": 3, "longer": true}'):
            _write_after_reading(backend, document)
        reader = _versioned(state_conformance.open())
        versions = reader.history(10)
        assert len(versions) >= 2, f"history keeps {len(versions)} version(s)"
        current, previous = versions[0], versions[1]
        assert current.current and not any(v.current for v in versions[1:]), versions
        assert (current.size, previous.size) == (len(b'{"v": 3, "longer": true}'), 8)
        assert reader.read_version(current.id) == b'{"v": 3, "longer": true}'
        assert reader.read_version(previous.id) == b'{"v": 2}'
        assert len({v.id for v in versions}) == len(versions), f"repeated ids: {versions}"
        assert len(reader.history(1)) == 1, "history ignores its limit"
        with pytest.raises(StateError) as unknown:
            reader.read_version(NO_SUCH_VERSION)
        _one_line(unknown.value)

    def test_an_unknown_key_is_a_one_line_config_error(
        self, state_conformance: StateConformanceSession
    ) -> None:
        """A misspelt key in the ``state:`` block is a ConfigError naming it."""
        with pytest.raises(ConfigError) as refused:
            state_conformance.open({**state_conformance.target.config, "no_such_key": "x"})
        assert "no_such_key" in _one_line(refused.value)

    def test_failures_are_one_line_state_and_lock_errors(
        self, state_conformance: StateConformanceSession
    ) -> None:
        """Where nothing works (no server, no directory), reading and writing are
        StateErrors and locking is a LockError, each one line, as ``fuzz`` shows them."""
        broken = state_conformance.target.failing_config
        store = StateStore(state_conformance.open(broken))
        with pytest.raises(StateError) as read:
            store.read()
        with pytest.raises(StateError) as written:
            StateStore(state_conformance.open(broken)).write(State.new("conformance"))
        with pytest.raises(LockError) as locked, store.lock("apply", 0):
            pass
        for raised in (read.value, written.value, locked.value):
            assert len(_one_line(raised)) >= 15, f"the message does not say what: {raised}"


if __name__ == "__main__":  # the other process of test_a_killed_holders_lock_goes_...
    _hold_the_lock(sys.argv[1])
