"""20 concurrent ``fuzz apply`` processes against one shared, encrypted state per backend.

Every worker has its own copy of a local-cluster spec whose pool size differs from
its neighbours', so every apply is a read-modify-write of the shared state. The
sizes cycle through 1..3 rather than 1..20 so the run stays within a minute or
two on two cores while almost every apply still changes something.

Afterwards: every apply succeeded; the stored versions have serials 1, 2, 3, …
without a gap or a repeat (each write was based on the one before: no update
lost, none forked); the serials reported by changing applies are distinct and the
last is the final serial; the recorded nodes are exactly the agents alive (none
lost, none orphaned); and no stored version holds the secret label in clear text.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fuzz.crypto.envelope import is_sealed
from fuzz.lifecycle.statestore import StateStore, open_store
from fuzz.plugin.loader import load_plugins
from fuzz.spec.loader import load_cluster_spec
from tests.support.cliutil import agent_pids, fuzz_command, kill_agents, run_fuzz
from tests.support.servers import MotoServer, Postgres

WORKERS = 20
SECRET = f"s3cr3t-{uuid.uuid4().hex}"
SPEC = """\
version: 1
cluster: team
state:
{state}
providers:
  local:
    workdir: {workdir}
pools:
  cpu:
    provider: local
    min: {count}
    max: {count}
    labels: {{role: compute, token: {secret}}}
"""


@dataclass
class Shared:
    """One shared state: its ``state:`` block and every stored version's raw bytes."""

    block: str
    versions: Callable[[], list[bytes]]


@pytest.fixture(params=["s3", "postgres"])
def shared(request: pytest.FixtureRequest) -> Shared:
    if request.param == "s3":
        server: MotoServer = request.getfixturevalue("moto_server")
        bucket = server.new_bucket(versioned=True)
        key = server.client("kms").create_key()["KeyMetadata"]["KeyId"]
        block = (f"  backend: s3\n  bucket: {bucket}\n  endpoint_url: {server.endpoint_url}\n"
                 f"  encryption: {{kms_key_id: {key}, kms_endpoint_url: {server.endpoint_url},"
                 " kms_region: us-east-1}")

        def s3_versions() -> list[bytes]:
            s3 = server.client("s3")
            listed = s3.list_object_versions(Bucket=bucket, Prefix="fuzz/state.json")
            return [s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
                    ["Body"].read() for v in listed.get("Versions", [])
                    if v["Key"] == "fuzz/state.json"]

        return Shared(block, s3_versions)
    pg: Postgres = request.getfixturevalue("postgres")
    schema = f"c_{uuid.uuid4().hex[:8]}"
    block = (f"  backend: postgres\n  conninfo: '{pg.conninfo}'\n  schema: {schema}\n"
             "  history: 10000\n  encryption: {passphrase_env: TEAM_PASS}")

    def pg_versions() -> list[bytes]:
        with psycopg.connect(pg.conninfo) as conn:
            rows = conn.execute(f"SELECT data FROM {schema}.state_history").fetchall()
        return [bytes(row[0]) for row in rows]

    return Shared(block, pg_versions)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    nodes = tmp_path / "nodes"
    try:
        yield nodes
    finally:
        kill_agents(nodes)


def result_line(stdout: str) -> dict[str, Any]:
    """The final ``{"type": "result", …}`` of ``apply --json``.

    It is the only (indented) document when nothing changed, else the last of the
    one-line progress events.
    """
    try:
        lines = [json.loads(stdout)]
    except json.JSONDecodeError:
        lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    results = [line for line in lines if line.get("type") == "result"]
    assert results, stdout
    found: dict[str, Any] = results[-1]
    return found


@pytest.mark.slow
def test_concurrent_applies_serialise_on_shared_state(
    shared: Shared, workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_PASS", "a team passphrase")  # for this process and the workers
    dirs = []
    for worker in range(1, WORKERS + 1):
        directory = tmp_path / f"w{worker}"
        directory.mkdir()
        (directory / "fuzz.yaml").write_text(SPEC.format(
            state=shared.block, workdir=workdir, count=worker % 3 + 1, secret=SECRET))
        dirs.append(directory)
    init = run_fuzz(dirs[0], "init", "--json")
    assert init.code == 0, init.err
    initial = init.json()["serial"]

    procs = [subprocess.Popen(fuzz_command("apply", "--auto-approve", "--lock-timeout", "120s",
                                           "--json"),
                              cwd=directory, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for directory in dirs]
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, f"{err}\n{out[-2000:]}"
    results = [result_line(out) for out, _ in outputs]

    loaded = load_cluster_spec(dirs[0] / "fuzz.yaml")
    store: StateStore = open_store(loaded.spec.state, dirs[0], load_plugins())
    final = store.read()
    assert final is not None
    changing = [r for r in results if r["added"] or r["destroyed"] or r["changed"]]
    assert changing, "no apply changed anything"
    assert len({r["serial"] for r in changing}) == len(changing)
    assert max(r["serial"] for r in results) == final.serial

    raw_versions = shared.versions()
    serials = sorted(_serial_of(store, raw) for raw in raw_versions)
    assert serials == list(range(initial, final.serial + 1)), "a write was lost or forked"
    for raw in raw_versions:
        assert is_sealed(raw) and SECRET.encode() not in raw

    count = len(final.resources)
    assert set(final.resources) == {f"pool.cpu.node[{i}]" for i in range(count)}
    assert all(node.status == "created" for node in final.resources.values())
    live = {_state_dir_of(pid) for pid in agent_pids(workdir)}
    assert live == {node.provider_id for node in final.resources.values()}

    destroyed = run_fuzz(dirs[0], "destroy", "--auto-approve")
    assert destroyed.code == 0, destroyed.err
    assert agent_pids(workdir) == []


def _serial_of(store: StateStore, raw: bytes) -> int:
    plain = store.encryption.open(raw, b"fuzz state", "a stored version")
    serial: int = json.loads(plain)["serial"]
    return serial


def _state_dir_of(pid: int) -> str:
    """The provider id of a local node: the name of its agent's --state-dir."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return Path(argv[argv.index("--state-dir") + 1]).name
