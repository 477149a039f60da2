"""The ``s3`` state backend passes the state-backend conformance kit, against moto's S3."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.testing.oci import free_port
from fuzz.testing.state_conformance import StateBackendConformance, StateTarget
from tests.support.servers import MotoServer


class TestS3StateConformance(StateBackendConformance):
    """A state object and a lock object in a versioned bucket of a real moto server."""

    @pytest.fixture
    def state_target(self, moto_server: MotoServer, tmp_path: Path) -> StateTarget:
        return StateTarget(
            name="s3",
            config={"bucket": moto_server.new_bucket(versioned=True), "key": "team/state.json",
                    "endpoint_url": moto_server.endpoint_url, "region": "us-east-1"},
            base_dir=tmp_path,
            failing_config={"bucket": "nobody-listens", "region": "us-east-1",
                            "endpoint_url": f"http://127.0.0.1:{free_port()}"},
            breaks_live_locks=True,  # force-unlock deletes the lock object
            lock_outlives_holder=True,  # the lock object stays until force-unlock
        )
