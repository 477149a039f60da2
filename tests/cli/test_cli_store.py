"""``fuzz server migrate`` and ``fuzz server migrate-store`` through the real CLI.

``migrate`` is run on a store of every schema an earlier fuzz wrote (the schemas were
dumped from those commits, tests/orchestrate/store_schemas/) and on PostgreSQL;
``migrate-store`` refuses a target that holds other records and a data dir whose
server runs (tests/e2e/test_postgres_store_e2e.py moves a whole site).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from fuzz.fsutil import acquire_lock, release_lock
from fuzz.orchestrate.records import RECORD_TYPES, WorkflowRecord
from fuzz.orchestrate.store import SCHEMA_VERSION, PostgresTarget, Store
from fuzz.testing.oci import free_port
from tests.support.cliutil import Result, run_fuzz

SCHEMAS = sorted((Path(__file__).parent.parent / "orchestrate" / "store_schemas").glob("*.sql"))
SPEC = """\
version: 1
cluster: stores
orchestrator:
  listen: 127.0.0.1:{port}
  data_dir: .fuzz/server
"""


def ok(cwd: Path, *args: str, stdin: str = "") -> Result:
    result = run_fuzz(cwd, *args, stdin=stdin)
    assert result.code == 0, f"fuzz {' '.join(args)}: {result.err}{result.out}"
    return result


def one_line(result: Result) -> str:
    assert result.code == 1, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda path: path.stem)
def test_migrate_brings_every_earlier_schema_up_to_date(schema: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    db = sqlite3.connect(data_dir / "server.db")
    db.executescript(schema.read_text())
    db.execute("INSERT INTO workflows (id, name, run, owner, file_name, fuzzfile, "
               "content_hash, state, error, created, started, finished, cancel_requested) "
               "VALUES ('wf.1','wf',1,'alice','Fuzzfile','version: v1','h','SUCCEEDED','',"
               "1.0,0.0,0.0,0)")
    db.commit()
    old_version = db.execute("PRAGMA user_version").fetchone()[0]
    db.close()
    report = ok(tmp_path, "server", "migrate", "--data-dir", str(data_dir), "--json").json()
    assert report["schema"] == SCHEMA_VERSION
    assert any(line.startswith(("created table", "added column"))
               for line in report["done"]), report
    assert (f"schema {SCHEMA_VERSION}" in " ".join(report["done"])) == (
        old_version < SCHEMA_VERSION)
    version = sqlite3.connect(data_dir / "server.db").execute("PRAGMA user_version")
    assert version.fetchone()[0] == SCHEMA_VERSION
    store = Store(data_dir / "server.db")
    [workflow] = store.load(WorkflowRecord)
    assert (workflow.owner, workflow.name, workflow.run) == ("alice", "wf", 1)
    assert set(store.counts()) == {record_type.TABLE for record_type in RECORD_TYPES}
    store.close()
    again = ok(tmp_path, "server", "migrate", "--data-dir", str(data_dir))
    assert again.out.strip() == f"store {data_dir / 'server.db'}: schema {SCHEMA_VERSION}, " \
        "nothing to do"


def test_migrate_on_the_specs_postgres_store(tmp_path: Path, pg_target: PostgresTarget) -> None:
    spec = SPEC.format(port=free_port()) + f"  store: {pg_target.url}\n"
    (tmp_path / "fuzz.yaml").write_text(spec)
    first = ok(tmp_path, "server", "migrate", "--json").json()
    assert first["store"] == pg_target.url and first["schema"] == SCHEMA_VERSION
    assert f"created table {WorkflowRecord.TABLE}" in first["done"]
    assert ok(tmp_path, "server", "migrate", "--json").json()["done"] == []


def test_a_password_in_the_specs_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "fuzz.yaml").write_text(
        SPEC.format(port=free_port()) + "  store:\n    url: postgres://fuzz:hunter2@db/fuzz\n")
    line = one_line(run_fuzz(tmp_path, "server", "migrate"))
    assert "fuzz.yaml:7:" in line and "orchestrator.store.url" in line, line
    assert "password in the store's URL is refused" in line and "hunter2" not in line, line


def test_migrate_store_refuses_a_target_holding_other_records(
        tmp_path: Path, pg_target: PostgresTarget) -> None:
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    Store(data_dir / "server.db").save(WorkflowRecord("a.1", "a", 1, "o", "f", "", ""))
    Store(pg_target).save(WorkflowRecord("b.1", "b", 1, "o", "f", "", ""))
    line = one_line(run_fuzz(tmp_path, "server", "migrate-store", "--from",
                             f"sqlite:{data_dir / 'server.db'}", "--to", pg_target.url))
    assert "already holds other records (workflows 1)" in line, line
    lock = acquire_lock(data_dir, "server.lock", owner="server")
    try:
        held = run_fuzz(tmp_path, "server", "migrate-store", "--from",
                        f"sqlite:{data_dir / 'server.db'}", "--to", pg_target.url)
        assert "an orchestrator runs on" in one_line(held)
    finally:
        release_lock(lock)


def test_an_interrupted_copy_leaves_nothing_and_runs_again(
        tmp_path: Path, pg_target: PostgresTarget) -> None:
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    source = Store(data_dir / "server.db")
    source.save(*(WorkflowRecord(f"{name}.1", name, 1, "o", "f", "", "") for name in "abc"))
    source.close()
    Store(pg_target).close()
    with psycopg.connect(pg_target.url, autocommit=True) as db:  # the copy fails at b
        db.execute("ALTER TABLE workflows ADD CONSTRAINT not_b CHECK (name <> 'b')")
    argv = ("server", "migrate-store", "--from", f"sqlite:{data_dir / 'server.db'}",
            "--to", pg_target.url, "--json")
    line = one_line(run_fuzz(tmp_path, *argv))
    assert "failed and was rolled back, nothing copied" in line and "not_b" in line, line
    assert Store(pg_target).counts()["workflows"] == 0
    with psycopg.connect(pg_target.url, autocommit=True) as db:
        db.execute("ALTER TABLE workflows DROP CONSTRAINT not_b")
    moved = ok(tmp_path, *argv).json()
    assert moved["copied"] is True and moved["rows"]["workflows"] == 3


def test_an_unreachable_postgres_store_is_one_sentence(tmp_path: Path) -> None:
    url = f"postgres://fuzz@127.0.0.1:{free_port()}/fuzz"
    (tmp_path / "fuzz.yaml").write_text(SPEC.format(port=free_port()) + f"  store: {url}\n")
    line = one_line(run_fuzz(tmp_path, "server", "migrate"))
    assert line.startswith(f"Error: cannot open the orchestrator database {url}: "), line
