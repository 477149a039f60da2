"""End to end: the orchestrator as two replicas on one PostgreSQL store, failing over.

A local cluster (real agents, real runc containers) whose spec names two replicas
(``orchestrator.replicas``) on the session's PostgreSQL; the first leads, the second
stands by. A workflow of 50 tasks runs; each task appends a line to a file of its own
in a persistent volume when it starts, so a task started twice shows two lines.

- kill -9 of the leader mid-workflow: the other replica leads within 15 s (short lease
  TTLs for tests), the agents and the CLI move to it, the workflow finishes, and every
  task started exactly once (attempt 1, one line).
  Before, the standby answers the CLI with one line naming the leader, and its probes
  say live, not ready; after, the agents refuse calls of the old leader's epoch.
- a paused old leader (SIGSTOP until the other leads, then SIGCONT) writes nothing
  (every table of the store unchanged while only it runs) and exits saying it stopped
  leading.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fuzz.clients.agent import AgentClient, AgentError
from fuzz.orchestrate.leadership import LEASE_TTL_ENV
from fuzz.orchestrate.records import RECORD_TYPES
from fuzz.rpc.epoch import epoch_metadata
from fuzz.testing.oci import PushedImage
from fuzz.testing.replicas import (
    kill_9,
    leads,
    marking_tasks,
    marks,
    replicated_cluster,
    server_pid,
    started,
    wait_leading,
)
from tests.support.agents import agent_client, state_dir
from tests.support.cliutil import kill_agents
from tests.support.orchestratorutil import wait_until
from tests.support.servers import Postgres
from tests.support.stores import drop_database, fresh_database, postgres_url
from tests.support.workflowutil import LocalCluster, dump

TASKS = 50
FAILOVER_LIMIT = 15.0  # seconds: issue 23's figure


def _each_started_once(cluster: LocalCluster, status: dict[str, Any]) -> None:
    assert status["state"] == "SUCCEEDED", dump(status)
    assert [task["attempt"] for task in status["tasks"]] == [1] * TASKS, dump(status)
    starts = {path.name: path.read_text() for path in marks(cluster).iterdir()}
    assert starts == {f"t{index:03d}": "started\n" for index in range(TASKS)}


@contextlib.contextmanager
def replicated(tmp_path: Path, image: PushedImage, postgres: Postgres
               ) -> Iterator[tuple[LocalCluster, Path, str, str]]:
    """The cluster, its second replica's data dir, the store's URL, and the second
    replica's address; the first replica leads, the second stands by."""
    url = postgres_url(postgres, fresh_database(postgres))
    try:
        with replicated_cluster(tmp_path, [image.registry.host], url) as running:
            cluster = LocalCluster(running.cluster.directory, running.cluster.nodes)
            assert not leads(cluster, running.standby)
            yield cluster, running.standby_dir, url, running.standby
    finally:
        kill_agents(tmp_path)
        drop_database(postgres, url.rsplit("/", 1)[1])


def test_kill_9_of_the_leader_mid_workflow_fails_over_and_runs_each_task_once(
        tmp_path: Path, busybox_image: PushedImage, postgres: Postgres,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEASE_TTL_ENV, "3")  # the servers' lease (5 s by default)
    with replicated(tmp_path, busybox_image, postgres) as (cluster, standby, _, second):
        _standby_names_the_leader(cluster, standby, second)
        cluster.start("fifty", marking_tasks(busybox_image.reference, TASKS, 1))
        wait_until("ten tasks to start", lambda: started(cluster) >= 10, timeout=180)
        killed = kill_9(cluster.data_dir)
        took = wait_leading(cluster, second) - killed
        assert took < FAILOVER_LIMIT, f"the standby led only {took:.1f}s after the kill"
        assert started(cluster) < TASKS  # the new leader has work left to do
        with cluster.client() as client:  # the spec's replicas: it finds the new leader
            assert client.endpoint == second
            wait_until("the agents to register with the new leader", lambda: [
                node.state for node in client.list_nodes()] == ["READY", "READY"], timeout=60)
        _each_started_once(cluster, cluster.wait("fifty", timeout=600))  # the CLI moved too
        with cluster.client() as client:
            addresses = [node.name for node in client.list_nodes()]
        for address in addresses:  # the agents were called at epoch 2: 1 is refused
            leader = agent_client(cluster, address)
            stale = AgentClient(leader.endpoint, (state_dir(cluster, address) / "token")
                                .read_text().strip(), tls=leader.tls, metadata=epoch_metadata(1))
            with leader, stale:
                leader.list_leases()
                with pytest.raises(AgentError, match=r"newer leadership epoch \(2\).*"
                                   r"epoch 1 are refused"):
                    stale.list_leases()


def _standby_names_the_leader(cluster: LocalCluster, standby_dir: Path, second: str) -> None:
    """A standby answers the CLI with one line naming the leader, its health probes say
    live but not ready, and the CLI given both addresses takes the leader."""
    alone = cluster.fuzz("workflow", "list", "--server", second, "--token-file",
                         str(cluster.data_dir / "admin.token"))
    assert alone.code == 1
    assert alone.err.count("\n") == 1, alone.err
    with cluster.client() as client:
        leader = client.endpoint
    assert f"this fuzz server is a standby replica: the leader is at {leader}" \
        in alone.err, alone.err
    both = cluster.fuzz("workflow", "list", "--server", f"{second},{leader}",
                        "--token-file", str(cluster.data_dir / "admin.token"))
    assert both.code == 0, both.err  # of several addresses, the CLI takes the leader
    status = json.loads((standby_dir / "server.json").read_text())["metrics"]
    assert _http_status(f"http://{status}/healthz") == 200  # live: not restarted
    assert _http_status(f"http://{status}/readyz") == 503  # a Service sends nobody
    assert "fuzz_leader 0.0" in urllib.request.urlopen(
        f"http://{status}/metrics", timeout=10).read().decode()


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


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
        cluster.start("fifty", marking_tasks(busybox_image.reference, TASKS, 1))
        wait_until("ten tasks to start", lambda: started(cluster) >= 10, timeout=180)
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
