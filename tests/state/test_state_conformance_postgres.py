"""The ``postgres`` state backend passes the state-backend conformance kit, against a real
PostgreSQL (Debian's, started by the ``postgres`` fixture)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from fuzz.testing.oci import free_port
from fuzz.testing.state_conformance import StateBackendConformance, StateTarget
from tests.support.servers import Postgres


class TestPostgresStateConformance(StateBackendConformance):
    """A row, its history and a session advisory lock, in a schema of this test's own."""

    @pytest.fixture
    def state_target(self, postgres: Postgres, tmp_path: Path) -> StateTarget:
        return StateTarget(
            name="postgres",
            config={"conninfo": postgres.conninfo, "schema": f"c_{uuid.uuid4().hex[:10]}",
                    "name": "conformance"},
            base_dir=tmp_path,
            failing_config={"conninfo": f"host=127.0.0.1 port={free_port()} user=postgres"},
            breaks_live_locks=True,  # force-unlock ends the holder's database session
            lock_outlives_holder=False,  # the advisory lock ends with the holder's session
        )
