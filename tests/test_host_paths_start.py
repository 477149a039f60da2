"""End to end: ``fuzz server`` refuses host paths that someone else could have planted or
can change, with one line naming the path and why, before it serves anything."""

from __future__ import annotations

from pathlib import Path

from fuzz.testing.cluster import cluster_spec
from fuzz.testing.oci import free_port
from tests.cliutil import run_fuzz
from tests.workflowutil import planted_roots


def test_the_server_refuses_to_start_on_a_planted_root(tmp_path: Path) -> None:
    (tmp_path / "planted").mkdir()
    with planted_roots(tmp_path / "planted") as planted:
        absolute = {path: reason for path, reason in planted.items() if path.startswith("/")}
        for path, reason in absolute.items():
            spec = cluster_spec("x", 1, orchestrator_port=free_port(), host_paths=[path])
            (tmp_path / "fuzz.yaml").write_text(spec)
            assert run_fuzz(tmp_path, "server", "--init").code == 0
            started = run_fuzz(tmp_path, "server", timeout=30)  # a server that starts: timeout
            assert started.code == 1, started
            assert started.err.strip().splitlines()[-1].endswith(
                f"orchestrator.host_paths: {path}: {reason}; a host path must be a directory "
                "owned by root that only root can change, up to /"), started.err
