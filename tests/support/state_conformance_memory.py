"""An in-memory state backend, sound or with one chosen flaw, run through the state kit.

Not collected by ``make test`` on its own (no ``test_`` prefix):
``tests/state/test_state_conformance_kit.py`` runs this module in a pytest subprocess
and checks that the kit passes the sound backend and fails each flawed one exactly
where it should. The backend registers in-process (no entry point).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from fuzz.errors import StateError
from fuzz.plugin import RegisterStateBackend, StateBackendPlugin, hookimpl
from fuzz.plugin.backend_config import BackendConfig, lock_mismatch, parse_config
from fuzz.plugin.state import LockInfo, StateVersion
from fuzz.testing.state_conformance import StateBackendConformance, StateTarget

NAME = "memory"
IN_PROCESS = "the state lives in the test's process; no other process can see it"


class MemoryConfig(BackendConfig):
    """The ``state:`` block of the memory backend."""

    state: str
    fail: bool = False


@dataclass
class _Stored:
    """One state: its versions (oldest first) and its lock."""

    versions: list[bytes] = field(default_factory=list)
    lock: LockInfo | None = None


STATES: dict[str, _Stored] = {}


class MemoryBackend:
    """A state backend in :data:`STATES`; ``flaws`` switch off one rule of the contract each."""

    shared = False

    def __init__(self, config: MemoryConfig, flaws: frozenset[str]) -> None:
        self.stored = STATES.setdefault(config.state, _Stored())
        self.fail = config.fail
        self.flaws = flaws
        self._read_version: int | None = None  # how many versions there were at our read
        self._cache: bytes | None = None

    def _check(self) -> None:
        if self.fail:
            error = RuntimeError if "untyped-errors" in self.flaws else OSError
            raise error("memory backend: switched off")

    def describe(self) -> str:
        """``memory state``."""
        return "memory state"

    def read(self) -> bytes | None:
        """The newest version (a stale cached one with the ``cached-reads`` flaw)."""
        self._check()
        if "cached-reads" in self.flaws and self._read_version is not None:
            return self._cache
        self._read_version = len(self.stored.versions)
        self._cache = self.stored.versions[-1] if self.stored.versions else None
        return self._cache

    def write(self, data: bytes) -> None:
        """Append a version if none was added since our read (or always, when flawed)."""
        self._check()
        known = self._read_version if self._read_version is not None else 0
        if "unconditional-write" not in self.flaws and known != len(self.stored.versions):
            raise StateError("memory state changed since fuzz read it")
        self.stored.versions.append(data)
        self._read_version, self._cache = len(self.stored.versions), data

    def history(self, limit: int) -> list[StateVersion]:
        """Versions newest first (oldest first with the ``oldest-first`` flaw)."""
        self._check()
        count = len(self.stored.versions)
        found = [StateVersion(str(i), "2026-01-01T00:00:00+00:00", len(v), current=i == count)
                 for i, v in enumerate(self.stored.versions, start=1)]
        return (found if "oldest-first" in self.flaws else found[::-1])[:limit]

    def read_version(self, version_id: str) -> bytes:
        """The document of version ``version_id`` (1 is the first)."""
        self._check()
        if not version_id.isdigit() or not 1 <= int(version_id) <= len(self.stored.versions):
            raise StateError(f"memory state has no version {version_id}")
        return self.stored.versions[int(version_id) - 1]

    def try_lock(self, info: LockInfo) -> LockInfo | None:
        """Take the lock unless another id holds it (always, with ``shared-lock``)."""
        self._check()
        held = self.stored.lock
        if held is not None and held.id != info.id and "shared-lock" not in self.flaws:
            return held
        self.stored.lock = info
        return None

    def unlock(self, lock_id: str) -> None:
        """Release the lock if ``lock_id`` holds it (whoever holds it, when flawed)."""
        self._check()
        held = self.stored.lock
        if held is not None and (held.id == lock_id or "any-id-unlocks" in self.flaws):
            self.stored.lock = None

    def lock_holder(self) -> LockInfo | None:
        """The holder, or None."""
        self._check()
        return self.stored.lock

    def force_unlock(self, lock_id: str) -> None:
        """Break the lock ``lock_id`` (any lock, with ``force-ignores-id``)."""
        self._check()
        held = self.stored.lock
        if held is None:
            return
        if held.id != lock_id and "force-ignores-id" not in self.flaws:
            raise lock_mismatch(lock_id, held.id)
        self.stored.lock = None


class MemoryPlugin:
    """The state plugin of the memory backend, with the flaws its backends get."""

    def __init__(self, flaws: frozenset[str] = frozenset()) -> None:
        self.flaws = flaws

    @hookimpl
    def fuzz_register_state_backends(self, register: RegisterStateBackend) -> None:
        """Register ``memory``."""
        register(StateBackendPlugin(NAME, MemoryConfig, self.open))

    def open(self, config: Mapping[str, Any], base_dir: Path) -> MemoryBackend:
        """A client of the state the block names."""
        if "lax-config" in self.flaws:
            config = {k: v for k, v in config.items() if k in MemoryConfig.model_fields}
        return MemoryBackend(parse_config(MemoryConfig, config, NAME), self.flaws)


def _target(tmp_path: Path, flaws: frozenset[str] = frozenset(), **fields: Any) -> StateTarget:
    state = uuid.uuid4().hex
    target = StateTarget(
        name=NAME, config={"state": state}, base_dir=tmp_path,
        failing_config={"state": state, "fail": True}, breaks_live_locks=True,
        lock_outlives_holder=True, plugin=MemoryPlugin(flaws),
        exemptions={"other-processes": IN_PROCESS}, timeout=2,
    )
    return replace(target, **fields)


class TestSound(StateBackendConformance):
    @pytest.fixture
    def state_target(self, tmp_path: Path) -> StateTarget:
        """The memory backend for this case."""
        return _target(tmp_path)


class TestUnconditionalWrite(StateBackendConformance):
    @pytest.fixture
    def state_target(self, tmp_path: Path) -> StateTarget:
        """The memory backend for this case."""
        return _target(tmp_path, frozenset({"unconditional-write"}))


class TestCachedReads(StateBackendConformance):
    @pytest.fixture
    def state_target(self, tmp_path: Path) -> StateTarget:
        """The memory backend for this case."""
        return _target(tmp_path, frozenset({"cached-reads"}))


class TestSharedLock(StateBackendConformance):
    @pytest.fixture
    def state_target(self, tmp_path: Path) -> StateTarget:
        """The memory backend for this case."""
        return _target(tmp_path, frozenset({"shared-lock"}))


class TestAnyIdUnlocks(StateBackendConformance):
    @pytest.fixture
    def state_target(self, tmp_path: Path) -> StateTarget:
        """The memory backend for this case."""
        return _target(tmp_path, frozenset({"any-id-unlocks"}))


class TestForceIgnoresId(StateBackendConformance):
    @pytest.fixture
    def state_target(self, tmp_path: Path) -> StateTarget:
        """The memory backend for this case."""
        return _target(tmp_path, frozenset({"force-ignores-id"}))


class TestOldestFirst(StateBackendConformance):
    @pytest.fixture
    def state_target(self, tmp_path: Path) -> StateTarget:
        """The memory backend for this case."""
        return _target(tmp_path, frozenset({"oldest-first"}))


class TestLaxConfig(StateBackendConformance):
    @pytest.fixture
    def state_target(self, tmp_path: Path) -> StateTarget:
        """The memory backend for this case."""
        return _target(tmp_path, frozenset({"lax-config"}))


class TestUntypedErrors(StateBackendConformance):
    @pytest.fixture
    def state_target(self, tmp_path: Path) -> StateTarget:
        """The memory backend for this case."""
        return _target(tmp_path, frozenset({"untyped-errors"}))


class TestUnexplainedExemption(StateBackendConformance):
    @pytest.fixture
    def state_target(self, tmp_path: Path) -> StateTarget:
        """The memory backend for this case, leaving out versions without a reason."""
        return _target(tmp_path, exemptions={"other-processes": IN_PROCESS, "versions": " "})
