"""End to end: ``fuzz server`` refuses host paths that someone else could have planted or
can change, with one line naming the path and why, before it serves anything; ``fuzz
init`` makes the ones a spec names."""

from __future__ import annotations

import os
from pathlib import Path

from fuzz.orchestrate.transfer.host_roots import open_root
from fuzz.testing.cluster import cluster_spec
from fuzz.testing.oci import free_port
from tests.support.cliutil import run_fuzz
from tests.support.workflowutil import planted_roots, safe_host_root


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


def test_fuzz_init_makes_the_host_paths_a_server_accepts(tmp_path: Path) -> None:
    with safe_host_root() as root:
        wanted = root / "made" / "here"
        spec = cluster_spec("x", 1, orchestrator_port=free_port(), host_paths=[str(wanted)])
        (tmp_path / "fuzz.yaml").write_text(spec)
        made = run_fuzz(tmp_path, "init")
        assert made.code == 0, made
        assert f"Created the host path {wanted} (mode 0755)." in made.out
        assert oct(wanted.stat().st_mode & 0o7777) == "0o755" and wanted.stat().st_uid == 0
        os.close(open_root(str(wanted)).fd)
        assert "Created the host path" not in run_fuzz(tmp_path, "init").out  # kept as it is
