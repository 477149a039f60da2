"""``fuzz server --stop`` says what it found: no cluster here (exit 1), a cluster whose
orchestrator does not run (nothing to stop, exit 0), or the one it stopped."""

from __future__ import annotations

from pathlib import Path

from fuzz.testing.cluster import cluster_spec
from fuzz.testing.oci import free_port
from tests.support.cliutil import run_fuzz


def test_stop_where_there_is_no_cluster_fails_with_one_line(tmp_path: Path) -> None:
    done = run_fuzz(tmp_path, "server", "--stop")
    assert done.code == 1, done.out
    assert done.err.strip() == (
        f"Error: no cluster here: no fuzz.yaml in {tmp_path} and no orchestrator data dir "
        f"at {tmp_path / '.fuzz' / 'server'} (run it in the cluster's directory, or give "
        "-f SPEC or --data-dir DIR)"), done.err
    assert not (tmp_path / ".fuzz").exists()  # looking made nothing


def test_stop_of_a_data_dir_that_holds_no_orchestrator_fails(tmp_path: Path) -> None:
    done = run_fuzz(tmp_path, "server", "--stop", "--data-dir", str(tmp_path / "nothing"))
    assert done.code == 1, done.out
    assert done.err.strip() == (
        f"Error: no orchestrator data dir at {tmp_path / 'nothing'} (no ca.pem: `fuzz init` "
        "makes one)"), done.err


def test_stop_of_a_cluster_whose_orchestrator_is_not_running_is_a_no_op(tmp_path: Path) -> None:
    (tmp_path / "fuzz.yaml").write_text(cluster_spec("quiet", 1, orchestrator_port=free_port()))
    assert run_fuzz(tmp_path, "init").code == 0
    done = run_fuzz(tmp_path, "server", "--stop")
    assert done.code == 0, done.err
    assert done.out.strip() == (
        f"the orchestrator of cluster quiet is not running (data dir "
        f"{tmp_path / '.fuzz' / 'server'}): nothing to stop"), done.out
