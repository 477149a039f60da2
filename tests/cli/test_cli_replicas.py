"""``orchestrator.replicas`` in the cluster spec: replicas need the PostgreSQL store."""

from __future__ import annotations

from pathlib import Path

from tests.support.cliutil import Result, run_fuzz


def _validate(tmp_path: Path, orchestrator: str) -> Result:
    """`fuzz validate` of a spec whose orchestrator block is ``orchestrator``."""
    (tmp_path / "fuzz.yaml").write_text(
        "version: 1\ncluster: c\norchestrator:\n" + orchestrator)
    return run_fuzz(tmp_path, "validate")


def test_replicas_on_sqlite_are_refused_in_one_line(tmp_path: Path) -> None:
    result = _validate(tmp_path, "  replicas: [127.0.0.1:7400, 127.0.0.1:7401]\n")
    assert result.code == 1
    assert result.err == ("fuzz.yaml:4:3: orchestrator: replicas need store: postgres://... "
                          "(the embedded SQLite database is one server's)\n")


def test_a_replica_address_is_host_and_port(tmp_path: Path) -> None:
    result = _validate(tmp_path, "  store: postgres://u@db/fuzz\n"
                                 "  replicas: [127.0.0.1:7400, 'a,b:1']\n")
    assert result.code == 1
    assert "fuzz.yaml:5:" in result.err and "'a,b:1': expected HOST:PORT" in result.err, \
        result.err
    assert result.err.count("\n") == 1, result.err
