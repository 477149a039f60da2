"""End to end: the orchestrator as two replicas on one PostgreSQL store, failing over.

A local cluster (real agents, real runc containers) whose spec names two replicas
(``orchestrator.replicas``) on the session's PostgreSQL; the first leads, the second
stands by. A workflow of 50 tasks runs; each task appends a line to a file of its own
in a persistent volume when it starts, so a task started twice shows two lines.

- kill -9 of the leader mid-workflow: the other replica leads within 15 s (short lease
  TTLs for tests), the agents and the CLI move to it, the workflow finishes, and every
  task started exactly once (attempt 1, one line).
- a paused old leader (SIGSTOP until the other leads, then SIGCONT) writes nothing
  (every table of the store unchanged while only it runs) and exits saying it stopped
  leading.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fuzz.orchestrate.leadership import LEASE_TTL_ENV
from fuzz.orchestrate.records import RECORD_TYPES
from fuzz.testing.oci import PushedImage, free_port
from fuzz.testing.replicas import (
    add_replica,
    kill_9,
    leads,
    server_pid,
    stop_replica,
    wait_leading,
)
from tests.support.cliutil import run_fuzz
from tests.support.orchestratorutil import wait_until
from tests.support.servers import Postgres
from tests.support.stores import drop_database, fresh_database, postgres_url
from tests.support.workflowutil import LocalCluster, dump, local_cluster

TASKS = 50
FAILOVER_LIMIT = 15.0  # seconds: issue 23's figure
VOLUME = "replica-marks"


def fifty_tasks(image: str, seconds: float) -> str:
    """A Fuzzfile of ``TASKS`` independent jobs; each marks its start, then sleeps."""
    jobs = "".join(f"""\
  t{index:02d}:
    image: {{uri: {image}}}
    script: echo started >> /marks/t{index:02d}; sleep {seconds}
    mounts: {{marks: {{location: /marks}}}}
""" for index in range(TASKS))
    return f"""\
version: v1
volumes:
  marks: {{reference: volume://user/persistent/{VOLUME}}}
jobs:
{jobs}"""


def _marks(cluster: LocalCluster) -> Path:
    return cluster.volume_root / "persistent" / "admin" / VOLUME


def _started(cluster: LocalCluster) -> int:
    marks = _marks(cluster)
    return len(list(marks.iterdir())) if marks.is_dir() else 0


def _each_started_once(cluster: LocalCluster, status: dict[str, Any]) -> None:
    assert status["state"] == "SUCCEEDED", dump(status)
    assert [task["attempt"] for task in status["tasks"]] == [1] * TASKS, dump(status)
    starts = {path.name: path.read_text() for path in _marks(cluster).iterdir()}
    assert starts == {f"t{index:02d}": "started\n" for index in range(TASKS)}


@contextlib.contextmanager
def replicated(tmp_path: Path, image: PushedImage, postgres: Postgres
               ) -> Iterator[tuple[LocalCluster, Path, str, str]]:
    """The cluster, its second replica's data dir, the store's URL, and the second
    replica's address; the first replica leads."""
    url = postgres_url(postgres, fresh_database(postgres))
    first, second = free_port(), free_port()
    spec = {"store": url, "volume_root": ".fuzz/server-volumes",
            "replicas": [f"127.0.0.1:{first}", f"127.0.0.1:{second}"]}
    other: Path | None = None
    try:
        with local_cluster(tmp_path, [image.registry.host], first, nodes=2,
                           orchestrator=spec) as cluster:
            try:
                other = add_replica(cluster, "server-b", second)
                assert not leads(cluster, f"127.0.0.1:{second}")  # it stands by
                yield cluster, other, url, f"127.0.0.1:{second}"
            finally:
                if other is not None:
                    stop_replica(cluster, other)
    finally:
        drop_database(postgres, url.rsplit("/", 1)[1])


def test_kill_9_of_the_leader_mid_workflow_fails_over_and_runs_each_task_once(
        tmp_path: Path, busybox_image: PushedImage, postgres: Postgres,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEASE_TTL_ENV, "3")  # the servers' lease (5 s by default)
    with replicated(tmp_path, busybox_image, postgres) as (cluster, _, _, second):
        cluster.start("fifty", fifty_tasks(busybox_image.reference, 1))
        wait_until("ten tasks to start", lambda: _started(cluster) >= 10, timeout=180)
        killed = kill_9(cluster.data_dir)
        took = wait_leading(cluster, second) - killed
        assert took < FAILOVER_LIMIT, f"the standby led only {took:.1f}s after the kill"
        assert _started(cluster) < TASKS  # the new leader has work left to do
        with cluster.client() as client:  # the spec's replicas: it finds the new leader
            assert client.endpoint == second
            wait_until("the agents to register with the new leader", lambda: [
                node.state for node in client.list_nodes()] == ["READY", "READY"], timeout=60)
        _each_started_once(cluster, cluster.wait("fifty", timeout=600))  # the CLI moved too


def test_a_standby_replica_names_the_leader(
        tmp_path: Path, busybox_image: PushedImage, postgres: Postgres) -> None:
    with replicated(tmp_path, busybox_image, postgres) as (cluster, _, _, second):
        alone = cluster.fuzz("workflow", "list", "--server", second, "--token-file",
                             str(cluster.data_dir / "admin.token"))
        assert alone.code == 1
        assert alone.err.count("\n") == 1, alone.err
        assert "this fuzz server is a standby replica: the leader is at " \
            f"{cluster.client().endpoint}" in alone.err, alone.err


def _snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the store."""
    with psycopg.connect(url.replace("postgres://", "postgresql://")) as db:
        return {record.TABLE: sorted(map(tuple, db.execute(f"SELECT * FROM {record.TABLE}")),
                                     key=repr)
                for record in RECORD_TYPES}


def test_a_paused_old_leader_writes_nothing_and_exits(
        tmp_path: Path, busybox_image: PushedImage, postgres: Postgres,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEASE_TTL_ENV, "6")  # long enough to keep the new leader paused
    with replicated(tmp_path, busybox_image, postgres) as (cluster, other, url, second):
        cluster.start("fifty", fifty_tasks(busybox_image.reference, 1))
        wait_until("ten tasks to start", lambda: _started(cluster) >= 10, timeout=180)
        old, new = server_pid(cluster.data_dir), 0
        os.kill(old, signal.SIGSTOP)
        try:
            wait_leading(cluster, second)
            new = server_pid(other)
            os.kill(new, signal.SIGSTOP)  # now nothing but the old leader could write
            before = _snapshot(url)
            os.kill(old, signal.SIGCONT)
            log = cluster.data_dir / "server.log"
            wait_until("the old leader to stop leading",
                       lambda: "this orchestrator stops leading" in log.read_text(),
                       timeout=30)
            assert _snapshot(url) == before  # it wrote nothing
        finally:
            os.kill(old, signal.SIGCONT)
            if new:
                os.kill(new, signal.SIGCONT)
        wait_until("the old leader to exit", lambda: not Path(f"/proc/{old}").exists()
                   or _zombie(old), timeout=60)
        assert "Error: this orchestrator stopped leading: " in log.read_text()
        _each_started_once(cluster, cluster.wait("fifty", timeout=600))


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    return True


def test_replicas_on_sqlite_are_refused(tmp_path: Path) -> None:
    spec = tmp_path / "fuzz.yaml"
    spec.write_text("version: 1\ncluster: c\norchestrator:\n"
                    "  replicas: [127.0.0.1:7400, 127.0.0.1:7401]\n")
    result = run_fuzz(tmp_path, "validate")
    assert result.code == 1
    assert "fuzz.yaml:3:3: orchestrator: replicas need store: postgres://" in result.err, \
        result.err
