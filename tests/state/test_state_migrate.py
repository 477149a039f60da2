"""fuzz init --migrate-state between backends, force-unlock and history through the CLI."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest

from fuzz.crypto.envelope import is_sealed
from fuzz.engine.model import RecordedNode, State
from fuzz.errors import StateError
from fuzz.lifecycle.statestore import StateStore, dump_state, open_backend
from fuzz.plugin.loader import load_plugins
from fuzz.plugin.state import LockInfo
from fuzz.spec.loader import load_cluster_spec
from tests.support.cliutil import run_fuzz
from tests.support.servers import MotoServer, Postgres

PASSPHRASE = {"TEAM_PASS": "team passphrase"}
HEAD = "version: 1\ncluster: mig\nproviders:\n  local: {workdir: .fuzz/nodes}\n"


def node(address: str) -> RecordedNode:
    return RecordedNode(address=address, pool="cpu", provider="local", kind="local",
                        status="created", generation=1, client_token="t" * 32,
                        provider_id=f"id-{address}")


def local_store(path: Path) -> StateStore:
    return StateStore(open_backend("local", {"path": str(path)}, path.parent, load_plugins()))


def write_spec(directory: Path, state_block: str) -> None:
    (directory / "fuzz.yaml").write_text(HEAD + "state:\n" + state_block)


def test_migrate_local_to_s3_to_encrypted_postgres(
    tmp_path: Path, moto_server: MotoServer, postgres: Postgres
) -> None:
    write_spec(tmp_path, "  backend: local\n")
    assert run_fuzz(tmp_path, "init").code == 0
    state = State.from_json(json.loads((tmp_path / ".fuzz" / "state.json").read_text()))
    state.resources["pool.cpu.node[0]"] = node("pool.cpu.node[0]")
    state.serial = 7
    (tmp_path / "pushed.json").write_bytes(dump_state(state))
    assert run_fuzz(tmp_path, "state", "push", "pushed.json").code == 0

    bucket = moto_server.new_bucket(versioned=True)
    write_spec(tmp_path, f"  backend: s3\n  bucket: {bucket}\n"
                         f"  endpoint_url: {moto_server.endpoint_url}\n")
    refused = run_fuzz(tmp_path, "state", "list")
    assert refused.code == 1
    assert f"state: block changed since fuzz init (from local file {tmp_path}/.fuzz/state.json "\
           f"to s3://{bucket}/fuzz/state.json): run fuzz init --migrate-state" in refused.err
    moved = run_fuzz(tmp_path, "init", "--migrate-state", "--json")
    assert moved.code == 0, moved.err
    report = moved.json()
    assert report["migration"]["copied"] and (report["lineage"], report["serial"]) == (
        state.lineage, 7)
    raw = moto_server.client("s3").get_object(Bucket=bucket, Key="fuzz/state.json")
    assert json.loads(raw["Body"].read())["serial"] == 7
    again = run_fuzz(tmp_path, "init", "--migrate-state", "--json")
    assert again.code == 1 and "nothing to migrate from" in again.err

    schema = f"m_{uuid.uuid4().hex[:8]}"
    write_spec(tmp_path, f"  backend: postgres\n  conninfo: '{postgres.conninfo}'\n"
                         f"  schema: {schema}\n  encryption: {{passphrase_env: TEAM_PASS}}\n")
    moved = run_fuzz(tmp_path, "init", "--migrate-state", env=PASSPHRASE)
    assert moved.code == 0, moved.err
    assert "Copied the state from s3://" in moved.out
    with psycopg.connect(postgres.conninfo) as conn:
        row = conn.execute(f"SELECT data FROM {schema}.states").fetchone()
    assert row is not None and is_sealed(bytes(row[0]))
    listed = run_fuzz(tmp_path, "state", "list", "--json", env=PASSPHRASE)
    assert listed.json() == ["pool.cpu.node[0]"]
    pulled = run_fuzz(tmp_path, "state", "pull", env=PASSPHRASE).json()
    assert (pulled["lineage"], pulled["serial"]) == (state.lineage, 7)


def test_reconfigure_switches_without_copying(tmp_path: Path) -> None:
    write_spec(tmp_path, "  backend: local\n")
    assert run_fuzz(tmp_path, "init").code == 0
    write_spec(tmp_path, "  backend: local\n  path: other.json\n")
    assert run_fuzz(tmp_path, "plan", "--no-refresh").code == 1
    result = run_fuzz(tmp_path, "init", "--reconfigure", "--json")
    assert result.code == 0 and result.json()["created"]
    assert result.json()["serial"] == 1 and (tmp_path / "other.json").exists()


def test_adopt_keeps_lineage_and_serial_and_refuses_what_it_would_lose(tmp_path: Path) -> None:
    source = State.new("mig")
    source.resources["pool.cpu.node[0]"] = node("pool.cpu.node[0]")
    source.serial = 5
    destination = local_store(tmp_path / "dest.json")
    assert destination.adopt(source)
    stored = destination.read()
    assert stored is not None and (stored.lineage, stored.serial) == (source.lineage, 5)
    assert not destination.adopt(source)  # already there

    newer = local_store(tmp_path / "newer.json")
    ahead = State.from_json(source.to_json())
    ahead.serial = 9
    newer.adopt(ahead)
    with pytest.raises(StateError, match="serial 9 is newer than the migrated serial 5"):
        newer.adopt(source)

    unrelated = local_store(tmp_path / "unrelated.json")
    other = State.new("mig")
    other.resources["pool.cpu.node[3]"] = node("pool.cpu.node[3]")
    unrelated.write(other)
    with pytest.raises(StateError, match="unrelated to the migrated lineage"):
        unrelated.adopt(source)
    empty = local_store(tmp_path / "empty.json")
    empty.write(State.new("mig"))  # a fresh init elsewhere: nothing to lose
    assert empty.adopt(source)


@pytest.mark.parametrize("kind", ["s3", "postgres"])
def test_force_unlock_through_the_cli(tmp_path: Path, request: pytest.FixtureRequest,
                                      kind: str) -> None:
    if kind == "s3":
        server: MotoServer = request.getfixturevalue("moto_server")
        block = f"  backend: s3\n  bucket: {server.new_bucket()}\n" \
                f"  endpoint_url: {server.endpoint_url}\n"
    else:
        pg: Postgres = request.getfixturevalue("postgres")
        block = f"  backend: postgres\n  conninfo: '{pg.conninfo}'\n" \
                f"  schema: f_{uuid.uuid4().hex[:8]}\n"
    write_spec(tmp_path, block)
    assert run_fuzz(tmp_path, "init").code == 0
    spec = load_cluster_spec(tmp_path / "fuzz.yaml").spec.state
    holder = open_backend(kind, spec.backend_config(), tmp_path, load_plugins())
    info = LockInfo.new("apply")
    assert holder.try_lock(info) is None
    blocked = run_fuzz(tmp_path, "apply", "--auto-approve", "--lock-timeout", "1s")
    assert blocked.code == 1 and f"fuzz force-unlock {info.id}" in blocked.err
    wrong = run_fuzz(tmp_path, "force-unlock", "--force", "nope")
    assert wrong.code == 1 and f"does not match the current lock (ID {info.id})" in wrong.err
    released = run_fuzz(tmp_path, "force-unlock", "--force", info.id)
    assert released.code == 0, released.err
    assert run_fuzz(tmp_path, "state", "list", "--lock-timeout", "5s").code == 0
