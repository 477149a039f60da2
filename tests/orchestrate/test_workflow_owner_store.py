"""Workflows are keyed by (owner, name) in the orchestrator's store, and a database of an
older fuzz (names global, schema 1) keeps its rows: each run stays its recorded owner's."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from fuzz.crypto.envelope import Sealer
from fuzz.orchestrate.cluster.nodes import NodeDirectory
from fuzz.orchestrate.records import VolumeRecord
from fuzz.orchestrate.secrets import SecretStore
from fuzz.orchestrate.store import SCHEMA_VERSION, Store
from fuzz.orchestrate.workflows.base import RunnerSettings
from fuzz.orchestrate.workflows.jobids import JobIds
from fuzz.orchestrate.workflows.loop import Runner
from fuzz.orchestrate.workflows.volumes import VolumeManager
from fuzz.spec.fuzzfile_loader import parse_fuzzfile

# The workflows table as fuzz wrote it before workflows were keyed by owner (schema 1).
SCHEMA_1_WORKFLOWS = (
    'CREATE TABLE workflows ("id" TEXT, "name" TEXT, "run" INTEGER, "owner" TEXT, '
    '"file_name" TEXT, "fuzzfile" TEXT, "content_hash" TEXT, "state" TEXT, "error" TEXT, '
    '"created" REAL, "started" REAL, "finished" REAL, "cancel_requested" INTEGER, '
    'PRIMARY KEY ("id"))')
FUZZFILE = """\
version: v1
jobs:
  hello:
    image: {uri: "docker://127.0.0.1:9/nothing:1"}
    command: [/bin/true]
"""


def _old_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute(SCHEMA_1_WORKFLOWS)
    for number, (wid, name, run, owner) in enumerate((
            ("wf.1", "wf", 1, "alice"), ("wf.2", "wf", 2, "alice"),
            ("other.1", "other", 1, "bob"))):
        db.execute("INSERT INTO workflows VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (wid, name, run, owner, "Fuzzfile", FUZZFILE, "h", "SUCCEEDED", "",
                    float(number), 0.0, 0.0, 0))
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()


def _runner(store: Store, root: Path) -> Runner:
    sealer = Sealer.from_keys(os.urandom(32))
    return Runner(store, NodeDirectory(store, sealer), SecretStore(store, sealer),
                  RunnerSettings(volume_root=root / "volumes", log_dir=root / "logs"))


def test_an_older_database_keeps_its_runs_each_its_owners(tmp_path: Path) -> None:
    _old_database(tmp_path / "server.db")
    store = Store(tmp_path / "server.db")
    version = sqlite3.connect(tmp_path / "server.db").execute("PRAGMA user_version")
    assert version.fetchone()[0] == SCHEMA_VERSION > 1
    runner = _runner(store, tmp_path)
    assert [(r.owner, r.name, r.run) for r in runner.workflows()] == [
        ("bob", "other", 1), ("alice", "wf", 2)]
    assert runner.snapshot("alice", "wf").record.id == "wf.2"
    loaded = parse_fuzzfile(FUZZFILE, "Fuzzfile")
    assert runner.submit("wf", "alice", loaded).run == 3  # alice's runs go on
    mine = runner.submit("wf", "bob", loaded)  # bob's `wf` is a workflow of his own
    assert (mine.owner, mine.run) == ("bob", 1) and mine.id != "wf.1"
    assert runner.snapshot("bob", "wf").record.id == mine.id
    assert runner.snapshot("alice", "wf").record.run == 3
    assert {(r.owner, r.name, r.run) for r in runner.workflows()} == {
        ("bob", "other", 1), ("alice", "wf", 3), ("bob", "wf", 1)}


def test_a_persistent_volume_of_the_shared_uid_is_given_to_its_owner(tmp_path: Path) -> None:
    volume = tmp_path / "volumes" / "persistent" / "alice" / "data"
    (volume / "sub").mkdir(parents=True)
    (volume / "sub" / "result").write_text("from before\n")
    for path in (volume, volume / "sub", volume / "sub" / "result"):
        os.chown(path, 65534, 65534)  # written by every owner's jobs alike, before job ids
    record = VolumeRecord("wf.1", "data", "volume://user/persistent/data", str(volume),
                          ephemeral=False)
    VolumeManager(tmp_path / "volumes").create(record, JobIds(200000, 200000))
    info = volume.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (200000, 200000, 0o700)
    for path in (volume / "sub", volume / "sub" / "result"):
        assert (path.stat().st_uid, path.stat().st_gid) == (200000, 200000)
    assert (volume / "sub" / "result").read_text() == "from before\n"
