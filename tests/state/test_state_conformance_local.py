"""The default ``local`` state backend passes the state-backend conformance kit."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.testing.state_conformance import StateBackendConformance, StateTarget


class TestLocalStateConformance(StateBackendConformance):
    """A JSON file and its ``flock`` on this machine."""

    @pytest.fixture
    def state_target(self, tmp_path: Path) -> StateTarget:
        (tmp_path / "a-file").write_text("not a directory\n")
        return StateTarget(
            name="local",
            config={"path": ".fuzz/state.json"},
            base_dir=tmp_path,
            failing_config={"path": "a-file/state.json"},
            breaks_live_locks=False,  # a flock lives with its process: stop that instead
            lock_outlives_holder=False,
            exemptions={
                "conditional-write": "the file is written only under its flock (fuzz holds "
                "the state lock around every change), so a write is not checked against the "
                "last read; the store's serial check refuses stale changes",
            },
        )
