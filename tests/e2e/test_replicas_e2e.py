"""End to end: the orchestrator as two replicas on one PostgreSQL store, failing over.

A local cluster (real agents, real runc containers) whose spec names two replicas
(``orchestrator.replicas``) on the session's PostgreSQL; the first leads, the second
stands by. A workflow of 50 tasks runs; each task appends a line to a file of its own
in a persistent volume when it starts, so a task started twice shows two lines.

- kill -9 of the leader mid-workflow: the other replica leads within 15 s (short lease
  TTLs for tests), the agents and the CLI move to it, the workflow finishes, and every
  task started exactly once (attempt 1, one line).
  Before, every replica serves the API: through the standby's address alone the CLI
  adds a user, logs in, starts a workflow, follows its log (a server stream), reads
  its status, and is refused with the leader's own answer for a bad token or a call
  its policies forbid; an agent's call (RegisterNode) gets one line naming the leader,
  and the standby's probes say live, not ready. A watch through the standby ends
  UNAVAILABLE when the leader dies; after, the agents refuse calls of the old
  leader's epoch.
- a paused old leader (SIGSTOP until the other leads, then SIGCONT) writes nothing
  (every table of the store unchanged while only it runs) and exits saying it stopped
  leading; a watch the standby relayed to it ends UNAVAILABLE as the standby takes
  over (`the leader changed during the call; try again`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from fuzz.clients.agent import AgentClient, AgentError
from fuzz.clients.orchestrator import (
    OrchestratorClient,
    OrchestratorError,
    OrchestratorUnreachableError,
)
from fuzz.orchestrate.connect import CA_FILE, INFO_FILE, read_ca_file
from fuzz.orchestrate.leadership import LEASE_TTL_ENV
from fuzz.orchestrate.records import RECORD_TYPES
from fuzz.orchestrate.service import SERVICE_NAME
from fuzz.rpc.auth import bearer_metadata
from fuzz.rpc.client import ClientTls, open_channel
from fuzz.rpc.epoch import epoch_metadata
from fuzz.rpc.forward import VIA_KEY
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
from tests.support.cliutil import kill_agents, run_fuzz
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
        _standby_serves_the_api(cluster, standby, second, busybox_image, tmp_path)
        cluster.start("fifty", marking_tasks(busybox_image.reference, TASKS, 1))
        wait_until("ten tasks to start", lambda: started(cluster) >= 10, timeout=180)
        watch = _Watch(cluster, second, "fifty")
        killed = kill_9(cluster.data_dir)
        watch.ended_unavailable()
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


def _standby_serves_the_api(cluster: LocalCluster, standby_dir: Path, second: str,
                            image: PushedImage, home: Path) -> None:
    """Through the standby's address alone, the CLI's calls reach the leader and come back
    as the leader answered them; the agents' calls are refused naming the leader; the
    standby's health probes say live but not ready."""
    admin = ("--server", second, "--token-file", str(cluster.data_dir / "admin.token"))
    with cluster.client() as client:
        leader, node = client.endpoint, client.list_nodes()[0].name
    path = cluster.directory / "lines.yaml"
    path.write_text(f"""\
version: v1
jobs:
  lines:
    image: {{uri: {image.reference}}}
    script: echo one; echo two; sleep 3; echo three
""")
    cluster.ok("workflow", "start", "lines", str(path), *admin)
    followed = cluster.ok("workflow", "log", "lines", "lines", "--follow", *admin)
    assert followed.out == "one\ntwo\nthree\n", followed.out  # a server stream, to its end
    status = cluster.ok("workflow", "status", "lines", "--json", *admin).json()
    assert status["state"] == "SUCCEEDED", dump(status)
    bad = home / "bad.token"
    bad.write_text("not-a-token\n")
    bad.chmod(0o600)
    refusals = [cluster.fuzz("workflow", "list", "--server", address, "--token-file", str(bad))
                for address in (second, leader)]
    assert refusals[0].code == refusals[1].code == 1
    assert refusals[0].err == refusals[1].err, refusals  # the leader's UNAUTHENTICATED
    assert "the orchestrator refused the credentials" in refusals[0].err, refusals[0].err
    _a_user_is_refused_through_the_standby(cluster, second, node, home)
    tls = ClientTls(read_ca_file(cluster.data_dir / CA_FILE))
    with OrchestratorClient(second, "", tls=tls) as agent, pytest.raises(
            OrchestratorUnreachableError,
            match=f"this fuzz server is a standby replica: the leader is at {leader}$"):
        agent.register_node("stray", "127.0.0.1:1", "token", {}, join_token="nothing")
    with open_channel(second, tls) as channel, pytest.raises(  # relayed once: not again
            grpc.RpcError, match="standby replica: the leader is at"):
        channel.unary_unary(f"/{SERVICE_NAME}/ListWorkflows")(
            b"", metadata=(*bearer_metadata("x"), (VIA_KEY, "elsewhere")), timeout=10)
    status_address = json.loads((standby_dir / "server.json").read_text())["metrics"]
    assert _http_status(f"http://{status_address}/healthz") == 200  # live: not restarted
    assert _http_status(f"http://{status_address}/readyz") == 503  # a Service sends nobody
    assert "fuzz_leader 0.0" in urllib.request.urlopen(
        f"http://{status_address}/metrics", timeout=10).read().decode()


def _a_user_is_refused_through_the_standby(cluster: LocalCluster, second: str, node: str,
                                           home: Path) -> None:
    """An admin adds a user and the user logs in, both through the standby; the user's
    call its policies forbid gets the leader's PERMISSION_DENIED."""
    added = cluster.ok("iam", "user", "add", "carol", "--role", "user", "--json",
                       "--server", second, "--token-file", str(cluster.data_dir / "admin.token"))
    laptop = {"FUZZ_CONFIG": str(home / "carol.yaml")}
    home = home / "carol"  # away from the cluster spec: the CLI takes carol's context
    home.mkdir()
    login = run_fuzz(home, "login", second, "--code", added.json()["code"],
                     "--ca-file", str(cluster.data_dir / CA_FILE), env=laptop)
    assert login.code == 0, login.err
    refused = run_fuzz(home, "node", "cordon", node, env=laptop)
    assert refused.code == 1, refused.out
    assert f"permission denied: carol may not node:drain on node/{node}" in refused.err, \
        refused.err


class _Watch:
    """``WatchWorkflow`` through a replica, read in a thread until it ends."""

    def __init__(self, cluster: LocalCluster, endpoint: str, name: str) -> None:
        token = (cluster.data_dir / "admin.token").read_text().strip()
        self._client = OrchestratorClient(
            endpoint, token, tls=ClientTls(read_ca_file(cluster.data_dir / CA_FILE)))
        self._updates = self._client.watch_workflow(name)
        next(self._updates)  # the workflow now: the call is under way
        self._ended: list[BaseException | None] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for _ in self._updates:
                pass
            self._ended.append(None)
        except OrchestratorError as exc:
            self._ended.append(exc)

    def ended_unavailable(self, saying: str = "") -> None:
        """The watch ended as an UNAVAILABLE call does (the caller may try again),
        ``saying`` so."""
        self._thread.join(timeout=60)
        self._client.close()
        assert self._ended and isinstance(self._ended[0], OrchestratorUnreachableError), \
            self._ended
        assert saying in str(self._ended[0])


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
        watch = _Watch(cluster, second, "fifty")  # through the standby, to the leader
        os.kill(old, signal.SIGSTOP)
        try:
            wait_leading(cluster, second)
            # the standby ended the call it relayed to the paused leader as it took over
            watch.ended_unavailable(saying="standby replica: the leader changed during "
                                    "the call; try again")
            # it says SERVING a moment before it writes its server.json
            wait_until("the new leader's server.json", (other / INFO_FILE).exists, timeout=30)
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
