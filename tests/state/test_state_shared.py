"""The S3 and PostgreSQL state backends against real servers (moto, Debian's PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fuzz.engine.model import RecordedNode, State
from fuzz.errors import ConfigError, LockError, StateError
from fuzz.lifecycle.statestore import StateStore, open_backend
from fuzz.plugin.loader import load_plugins
from fuzz.plugin.state import LockInfo, StateBackend
from fuzz.testing.oci import free_port
from tests.support.cliutil import run_fuzz
from tests.support.servers import MotoServer, Postgres


@dataclass
class Target:
    """One shared state on a real server; every :meth:`backend` is a new client of it."""

    kind: str
    config: dict[str, Any]
    base_dir: Path

    def backend(self, **overrides: Any) -> StateBackend:
        return open_backend(self.kind, {**self.config, **overrides}, self.base_dir,
                            load_plugins())

    def store(self) -> StateStore:
        return StateStore(self.backend())


def s3_config(server: MotoServer, versioned: bool = True) -> dict[str, Any]:
    return {"bucket": server.new_bucket(versioned), "key": "team/state.json",
            "endpoint_url": server.endpoint_url, "region": "us-east-1"}


def pg_config(server: Postgres) -> dict[str, Any]:
    return {"conninfo": server.conninfo, "schema": f"t_{uuid.uuid4().hex[:10]}",
            "name": "prod"}


@pytest.fixture(params=["s3", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "s3":
        return Target("s3", s3_config(request.getfixturevalue("moto_server")), tmp_path)
    return Target("postgres", pg_config(request.getfixturevalue("postgres")), tmp_path)


def node(address: str) -> RecordedNode:
    return RecordedNode(address=address, pool="cpu", provider="local", kind="local",
                        status="created", generation=1, client_token="t" * 32,
                        provider_id=f"id-{address}")


def with_nodes(state: State, *addresses: str) -> State:
    for address in addresses:
        state.resources[address] = node(address)
    return state


# --- the document ----------------------------------------------------------------------


def test_state_round_trips_with_serial_and_lineage(target: Target) -> None:
    store = target.store()
    assert store.read() is None
    first = store.write(State.new("hpc"))
    assert first.serial == 1
    other = target.store()  # another client, as from another machine
    seen = other.read()
    assert seen is not None and (seen.lineage, seen.serial) == (first.lineage, 1)
    other.write(with_nodes(seen, "pool.cpu.node[0]"))
    again = store.read()
    assert again is not None and again.serial == 2 and "pool.cpu.node[0]" in again.resources
    assert target.backend().shared


def test_a_write_based_on_an_outdated_read_is_refused(target: Target) -> None:
    first, second = target.backend(), target.backend()
    assert first.read() is None and second.read() is None
    first.write(b'{"one": 1}')
    with pytest.raises(StateError, match="changed since fuzz read it"):
        second.write(b'{"two": 2}')  # both started from "no state": only one may create
    assert second.read() == b'{"one": 1}'
    first.read()
    second.write(b'{"two": 2}')
    with pytest.raises(StateError, match="changed since fuzz read it"):
        first.write(b'{"three": 3}')
    assert target.backend().read() == b'{"two": 2}'


# --- the lock --------------------------------------------------------------------------


def test_lock_contention_names_the_holder_and_only_its_id_releases_it(target: Target) -> None:
    holder, waiter = target.backend(), target.backend()
    mine, theirs = LockInfo.new("apply"), LockInfo.new("plan")
    assert holder.try_lock(mine) is None
    seen = waiter.try_lock(theirs)
    assert seen is not None and (seen.id, seen.operation, seen.who) == (mine.id, "apply",
                                                                        mine.who)
    started = time.monotonic()
    with pytest.raises(LockError) as err, StateStore(waiter).lock("plan", 0.5):
        pass
    assert time.monotonic() - started >= 0.5
    assert f"state is locked: ID {mine.id}, operation apply, by {mine.who}" in str(err.value)
    assert f"fuzz force-unlock {mine.id}" in str(err.value)
    waiter.unlock(theirs.id)  # not the holder's id: nothing happens
    holding = target.backend().lock_holder()
    assert holding is not None and holding.id == mine.id
    holder.unlock(mine.id)
    assert target.backend().lock_holder() is None
    assert waiter.try_lock(theirs) is None
    waiter.unlock(theirs.id)


def test_force_unlock_needs_the_right_id(target: Target) -> None:
    holder, admin = target.backend(), target.backend()
    mine = LockInfo.new("apply")
    assert holder.try_lock(mine) is None
    with pytest.raises(LockError, match=f"does not match the current lock \\(ID {mine.id}\\)"):
        admin.force_unlock("not-the-id")
    admin.force_unlock(mine.id)
    assert admin.lock_holder() is None
    holder.unlock(mine.id)  # the old holder finishes late: harmless
    assert target.backend().try_lock(LockInfo.new("apply")) is None


def test_s3_lock_object_holds_the_info_and_a_retried_request_owns_it(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    target = Target("s3", s3_config(moto_server), tmp_path)
    info = LockInfo.new("apply")
    assert target.backend().try_lock(info) is None
    # The same request again (a retry after a lost response) finds its own id: held.
    retry = target.backend()
    assert retry.try_lock(info) is None
    raw = moto_server.client("s3").get_object(Bucket=target.config["bucket"],
                                               Key="team/state.json.lock")["Body"].read()
    recorded = LockInfo.from_json(json.loads(raw))
    assert (recorded.id, recorded.operation, recorded.who) == (info.id, "apply", info.who)
    assert recorded.created == info.created
    retry.unlock(info.id)
    assert target.backend().lock_holder() is None


def test_postgres_states_do_not_block_each_other(postgres: Postgres, tmp_path: Path) -> None:
    config = pg_config(postgres)
    prod = Target("postgres", config, tmp_path)
    # each holder stays referenced: its session (and lock) lives as long as it does
    holders = [prod.backend(), prod.backend(name="staging"), prod.backend(schema="other_schema")]
    for holder in holders:
        assert holder.try_lock(LockInfo.new("apply")) is None
    assert prod.backend().try_lock(LockInfo.new("apply")) is not None


def test_postgres_lock_dies_with_its_holder(postgres: Postgres, tmp_path: Path) -> None:
    target = Target("postgres", pg_config(postgres), tmp_path)
    code = textwrap.dedent("""
        import sys, time
        from fuzz.plugin.loader import load_plugins
        from fuzz.plugin.state import LockInfo
        from fuzz.lifecycle.statestore import open_backend
        config = {"conninfo": sys.argv[1], "schema": sys.argv[2], "name": "prod"}
        backend = open_backend("postgres", config, ".", load_plugins())
        assert backend.try_lock(LockInfo.new("apply")) is None
        print("locked", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, postgres.conninfo,
                             target.config["schema"]], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        holder = target.backend().lock_holder()
        assert holder is not None and holder.operation == "apply"
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while target.backend().lock_holder() is not None:
            assert time.monotonic() < deadline, "the killed holder's lock was not released"
            time.sleep(0.05)
        assert target.backend().try_lock(LockInfo.new("plan")) is None
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


# --- versions --------------------------------------------------------------------------


def test_history_and_rollback(target: Target) -> None:
    store = target.store()
    state = store.write(State.new("hpc"))
    store.write(with_nodes(state, "pool.cpu.node[0]"))
    store.write(with_nodes(state, "pool.cpu.node[1]"))
    entries = target.store().history(10)
    assert [e.state.serial for e in entries if e.state] == [3, 2, 1]
    assert [e.version.current for e in entries] == [True, False, False]
    oldest = entries[-1].version.id
    restored = target.store().rollback(oldest)
    assert restored.serial == 4 and restored.resources == {}
    current = target.store().read()
    assert current is not None and current.serial == 4 and current.resources == {}
    with pytest.raises(StateError, match=r"no version|keeps no version"):
        target.store().rollback("999999")


def test_s3_history_needs_bucket_versioning(moto_server: MotoServer, tmp_path: Path) -> None:
    target = Target("s3", s3_config(moto_server, versioned=False), tmp_path)
    target.store().write(State.new("hpc"))
    with pytest.raises(StateError, match="enable bucket versioning"):
        target.store().history(5)


def test_postgres_keeps_only_the_configured_history(postgres: Postgres, tmp_path: Path) -> None:
    target = Target("postgres", {**pg_config(postgres), "history": 2}, tmp_path)
    store = target.store()
    state = store.write(State.new("hpc"))
    for index in range(3):
        store.write(with_nodes(state, f"pool.cpu.node[{index}]"))
    assert [e.state.serial for e in store.history(10) if e.state] == [4, 3]


# --- configuration and failures --------------------------------------------------------


@pytest.mark.parametrize(("kind", "config", "message"), [
    ("s3", {"buckt": "b"}, "unknown key 'buckt' for the s3 backend (did you mean 'bucket'?)"),
    ("s3", {"key": "k"}, "state.bucket: Field required (s3 backend)"),
    ("postgres", {"schema": "Bad-Name"}, "state.schema: String should match pattern"),
    ("postgres", {"history": 1}, "state.history: Input should be greater than or equal to 2"),
])
def test_bad_config_is_one_line(tmp_path: Path, kind: str, config: dict[str, Any],
                                message: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_backend(kind, config, tmp_path, load_plugins())
    assert message in str(err.value)


def test_validate_points_at_the_bad_state_key(tmp_path: Path) -> None:
    (tmp_path / "fuzz.yaml").write_text(
        "version: 1\ncluster: c\nstate:\n  backend: s3\n  buckt: x\n"
    )
    result = run_fuzz(tmp_path, "validate")
    assert result.code == 1
    assert "fuzz.yaml:5:3: state.buckt: unknown key 'buckt' (did you mean 'bucket'?)" in result.err


@pytest.mark.parametrize("kind", ["s3", "postgres"])
def test_an_unreachable_server_is_a_one_line_error(tmp_path: Path, kind: str) -> None:
    port = free_port()
    config = ({"bucket": "nope", "endpoint_url": f"http://127.0.0.1:{port}", "region": "x"}
              if kind == "s3" else {"conninfo": f"host=127.0.0.1 port={port} user=postgres"})
    with pytest.raises(StateError, match=r"^cannot read (s3://nope|postgres 127\.0\.0\.1)"):
        StateStore(open_backend(kind, config, tmp_path, load_plugins())).read()
    with pytest.raises(LockError, match=r"^cannot lock"):
        open_backend(kind, config, tmp_path, load_plugins()).try_lock(LockInfo.new("apply"))
