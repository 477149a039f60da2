"""End to end: the chaos soak's books (bench/chaos.py), and kill -9 of the orchestrator
at the one moment its books and a node's disagree."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.clients.agent import AgentClient
from fuzz.orchestrate.datadir import orchestrator_client_tls
from fuzz.testing.chaos import Marks, read_marks, soak_fuzzfile, tally
from fuzz.testing.oci import PushedImage, free_port
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """One local node and its orchestrator, its volumes in ``volumes/`` beside the spec."""
    directory = tmp_path_factory.mktemp("chaos")
    os.chmod(directory, 0o755)  # jobs run as their owner's ids; volumes live under it
    with local_cluster(directory, [busybox_image.registry.host], free_port(), nodes=1,
                       orchestrator={"volume_root": str(directory / "volumes")}) as running:
        yield running


def _marks(cluster: LocalCluster, volume: str) -> Path:
    return cluster.directory / "volumes" / "persistent" / "admin" / volume


def _agent(cluster: LocalCluster, node_dir: Path) -> AgentClient:
    """A client for the agent of a local node, calling as the orchestrator does."""
    address = json.loads((node_dir / "meta.json").read_text())["address"]
    endpoint = json.loads((node_dir / "agent.json").read_text())["endpoint"]
    return AgentClient(endpoint, (node_dir / "token").read_text().strip(),
                       tls=orchestrator_client_tls(cluster.data_dir, address))


def _states(status: dict[str, object]) -> dict[int, str]:
    return {task["index"]: task["state"] for task in status["tasks"]}  # type: ignore[attr-defined]


def test_the_soak_books_count_a_task_whose_work_started_twice_and_tasks_not_succeeded(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    image = busybox_image.reference
    cluster.start("books", soak_fuzzfile(image, "books", 3))
    first = cluster.wait("books")
    assert first["state"] == "SUCCEEDED", dump(first)
    marks = read_marks(_marks(cluster, "books"))
    assert marks == {1: Marks(1, 1), 2: Marks(1, 1), 3: Marks(1, 1)}
    assert tally(_states(first), marks, range(1, 4)).run_twice == ()

    # task 2's work starts again, in the same volume: the books see it started twice
    cluster.start("books-again", soak_fuzzfile(image, "books", 1, first=2))
    again = cluster.wait("books-again")
    assert again["state"] == "SUCCEEDED", dump(again)
    marks = read_marks(_marks(cluster, "books"))
    books = tally(_states(first), marks, range(1, 4))
    assert (books.lost, books.run_twice, books.unfinished_work) == ((), (2,), ())

    # read against the second run, which reports task 2 only: tasks 1 and 3 are lost
    books = tally(_states(again), marks, range(1, 4))
    assert (books.lost, books.run_twice) == ((1, 3), (2,))


def test_a_server_killed_as_a_task_ends_does_not_run_the_task_again(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    """kill -9 of the server just after a task's work ended, while the server can write
    nothing to its store: it may have removed the container by then (it did, before it
    recorded the outcome), and the restarted server must not take that for an attempt
    that never began."""
    cluster.start("once", soak_fuzzfile(busybox_image.reference, "once", 1))
    # the container's directory, watched on disk: a status poll can miss a 2 s task on a
    # loaded machine
    pattern = ".fuzz/nodes/*/*/containers/*admin.once.1.soak*"
    wait_until("the task's container", lambda: any(cluster.directory.glob(pattern)))
    found = list(cluster.directory.glob(pattern))
    assert len(found) == 1, found
    marks = _marks(cluster, "once")
    database = sqlite3.connect(cluster.data_dir / "server.db", isolation_level=None)
    try:
        database.execute("BEGIN IMMEDIATE")  # the server's next write waits for this one
        wait_until("the task's work to end", lambda: read_marks(marks) == {1: Marks(1, 1)})
        # what the server does before it must write: remove the container, or nothing more
        # (it gives up on a locked store after 5 s: kill it well before)
        with contextlib.suppress(AssertionError):
            wait_until("the server to remove the ended container",
                       lambda: not found[0].exists(), timeout=2)
        os.kill(cluster.server_pid(), signal.SIGKILL)
    finally:
        database.rollback()
        database.close()
    cluster.ok("server", "--detach")
    status = cluster.wait("once")
    assert status["state"] == "SUCCEEDED", dump(status)
    assert tasks_by_key(status)["soak[1]"]["attempt"] == 1
    assert read_marks(marks) == {1: Marks(1, 1)}  # its work ran once


def test_a_server_killed_between_removing_the_container_and_ending_the_task_reports_it(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    """The state a kill -9 of the server leaves once it has recorded an ended attempt's
    outcome and removed its container (with its lease), before it recorded the task's end
    (written here as the server writes it): the restarted server reports that outcome."""
    cluster.start("ended", soak_fuzzfile(busybox_image.reference, "ended", 1))
    # the container's directory, watched on disk: a status poll can miss a 2 s task on a
    # loaded machine (it did: the task had SUCCEEDED before a poll saw it RUNNING)
    pattern = ".fuzz/nodes/*/*/containers/*admin.ended.1.soak*"
    wait_until("the task's container", lambda: any(cluster.directory.glob(pattern)))
    [container] = cluster.directory.glob(pattern)
    os.kill(cluster.server_pid(), signal.SIGKILL)
    with _agent(cluster, container.parent.parent) as agent:
        wait_until("the task to end", lambda: agent.get_container(container.name).state
                   in ("exited", "failed"))
        database = sqlite3.connect(cluster.data_dir / "server.db", isolation_level=None)
        try:
            recorded = database.execute(
                "UPDATE tasks SET outcome = 'SUCCEEDED' WHERE workflow_id = ? AND key = ?",
                ("admin.ended.1", "soak[1]"))
            assert recorded.rowcount == 1
        finally:
            database.close()
        agent.remove_container(container.name, release_lease=True)
        cluster.ok("server", "--detach")
        status = cluster.wait("ended")
        assert status["state"] == "SUCCEEDED", dump(status)
        assert tasks_by_key(status)["soak[1]"]["attempt"] == 1
        assert read_marks(_marks(cluster, "ended")) == {1: Marks(1, 1)}  # not run again
        assert agent.list_leases() == []
