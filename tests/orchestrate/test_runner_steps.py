"""The runner's steps (:mod:`fuzz.orchestrate.workflows`), driven without the gRPC server.

A real :class:`~fuzz.orchestrate.store.Store` in ``tmp_path``, a real
:class:`~fuzz.orchestrate.cluster.nodes.NodeDirectory` holding one real agent (busybox
jobs through runc, the image from the test registry), and the runner's injected clock:
a counter, so that every stamp the runner writes (a task's ``started`` and ``finished``)
is the order in which the runner saw the events.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fuzz.crypto.envelope import Sealer
from fuzz.orchestrate.cluster.nodes import NodeDirectory
from fuzz.orchestrate.records import TaskRecord
from fuzz.orchestrate.secrets import SecretStore
from fuzz.orchestrate.states import TaskState, WorkflowState
from fuzz.orchestrate.store import PostgresTarget, Store
from fuzz.orchestrate.workflows.base import RunnerSettings, WorkflowSnapshot
from fuzz.orchestrate.workflows.loop import Runner
from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.testing.boot import fuzz_executable, stop_agents
from fuzz.testing.oci import PushedImage

OWNER = "alice"
AGENT_TOKEN = "runner-steps-agent-token"
AGENT_START = 30.0


class TickClock:
    """The runner's clock: each reading is the next integer, so stamps order events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = 0.0

    def __call__(self) -> float:
        with self._lock:
            self._now += 1.0
            return self._now


@dataclass
class Rig:
    """A started runner on one node, and what the test reads."""

    runner: Runner
    store: Store
    image: str
    nodes: NodeDirectory
    secrets: SecretStore

    def start(self, name: str, fuzzfile: str) -> None:
        """Submit ``fuzzfile`` (``{image}`` filled in) as ``OWNER``'s workflow ``name``."""
        loaded = parse_fuzzfile(fuzzfile.format(image=self.image), f"{name}.yaml")
        assert loaded.fuzzfile is not None, loaded
        self.runner.submit(name, OWNER, loaded)

    def wait(self, name: str, timeout: float = 90) -> WorkflowSnapshot:
        """The run's snapshot once it has reached a final state."""
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self.runner.snapshot(OWNER, name)
            if snapshot.record.finished_state:
                return snapshot
            assert time.monotonic() < deadline, f"{name} still {snapshot.record.state}"
            time.sleep(0.1)

    def wait_for_task(self, name: str, key: str, state: TaskState,
                      timeout: float = 60) -> TaskRecord:
        """Task ``key`` of ``name`` once it is in ``state``."""
        deadline = time.monotonic() + timeout
        while True:
            task = tasks_of(self.runner.snapshot(OWNER, name))[key]
            if task.state == state:
                return task
            assert time.monotonic() < deadline, f"{key} still {task.state}"
            time.sleep(0.1)


def tasks_of(snapshot: WorkflowSnapshot) -> dict[str, TaskRecord]:
    """A snapshot's tasks by key."""
    return {task.key: task for task in snapshot.tasks}


@pytest.fixture
def agent_endpoint(tmp_path: Path, busybox_image: PushedImage) -> Iterator[str]:
    """A real agent on 127.0.0.1 that may pull from the test registry; its endpoint."""
    token_file = tmp_path / "agent-token"
    token_file.write_text(AGENT_TOKEN + "\n")
    token_file.chmod(0o600)
    state_dir = tmp_path / "agent"
    with open(tmp_path / "agent.log", "wb") as log:
        proc = subprocess.Popen(
            [fuzz_executable(), "substrate", "serve", "--state-dir", str(state_dir),
             "--token-file", str(token_file), "--insecure",
             "--insecure-registry", busybox_image.registry.host],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + AGENT_START
        while not (state_dir / "agent.json").exists():
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "agent.log").read_text()
            time.sleep(0.02)
        yield str(json.loads((state_dir / "agent.json").read_text())["endpoint"])
    finally:
        stop_agents(tmp_path)  # the agent, then its container monitor
        proc.wait()


@pytest.fixture
def rig(tmp_path: Path, agent_endpoint: str, busybox_image: PushedImage,
        store_target: Path | PostgresTarget) -> Iterator[Rig]:
    """A runner (its store on SQLite, then PostgreSQL) whose one node is the real agent."""
    store = Store(store_target)
    sealer = Sealer.from_keys(os.urandom(32))
    clock = TickClock()
    nodes = NodeDirectory(store, sealer, clock=clock)
    nodes.register("n0", agent_endpoint, AGENT_TOKEN, {})
    secrets = SecretStore(store, sealer)
    runner = Runner(store, nodes, secrets, RunnerSettings(
        volume_root=tmp_path / "volumes", log_dir=tmp_path / "logs",
        instance=f"steps{os.getpid()}"), clock=clock)
    runner.start()
    try:
        yield Rig(runner, store, busybox_image.reference, nodes, secrets)
    finally:
        runner.stop()
        nodes.close()
        store.close()


DAG = """\
version: v1
jobs:
  first:
    image: {{uri: {image}}}
    command: [/bin/true]
  second:
    image: {{uri: {image}}}
    command: [/bin/true]
    requires: [first]
  broken:
    image: {{uri: {image}}}
    command: [/bin/sh, -c, "exit 3"]
    requires: [second]
  after-broken:
    image: {{uri: {image}}}
    command: [/bin/true]
    requires: [broken]
"""


def test_jobs_run_in_dag_order_and_a_failed_jobs_dependents_never_run(rig: Rig) -> None:
    rig.start("dag", DAG)
    final = rig.wait("dag")
    tasks = tasks_of(final)
    assert final.record.state == WorkflowState.FAILED
    assert final.record.error == "job 'broken' failed: broken: exit code 3"
    first, second, broken = tasks["first"], tasks["second"], tasks["broken"]
    assert (first.state, second.state, broken.state) == (
        TaskState.SUCCEEDED, TaskState.SUCCEEDED, TaskState.FAILED)
    # the stamps are the runner's clock: each job started after the one it requires ended
    assert first.started < first.finished < second.started < second.finished < broken.started
    never = tasks["after-broken"]
    assert never.state == TaskState.NOT_RUN
    assert never.error == "required job 'broken' failed"
    assert (never.attempt, never.started, never.nodes, never.containers) == (0, 0.0, [], [])
    # what the store holds is what the snapshot said, states as their enums
    stored = {t.key: t for t in rig.store.load(TaskRecord, workflow_id=final.record.id)}
    assert stored["after-broken"].state is TaskState.NOT_RUN


RETRIED = """\
version: v1
jobs:
  flaky:
    image: {{uri: {image}}}
    command: [/bin/sh, -c, "exit 7"]
    policy: {{retry: {{attempts: 3}}}}
  once:
    image: {{uri: {image}}}
    command: [/bin/sh, -c, "exit 5"]
"""


def test_a_failing_job_is_retried_up_to_its_attempts(rig: Rig) -> None:
    rig.start("retried", RETRIED)
    tasks = tasks_of(rig.wait("retried"))
    flaky, once = tasks["flaky"], tasks["once"]
    assert (flaky.state, flaky.attempt, flaky.exit_code) == (TaskState.FAILED, 3, 7)
    assert flaky.error == "exit code 7"
    assert (once.state, once.attempt, once.exit_code) == (TaskState.FAILED, 1, 5)


TIMED = """\
version: v1
jobs:
  slow:
    image: {{uri: {image}}}
    command: [sleep, "60"]
    policy: {{timeout: {{execute: 1s}}}}
"""


def test_an_attempt_past_its_timeout_fails_stamped_by_the_runners_clock(rig: Rig) -> None:
    rig.start("timed", TIMED)
    final = rig.wait("timed", timeout=45)  # well before the sleep 60 would end
    slow = tasks_of(final)["slow"]
    assert slow.state == TaskState.FAILED
    assert slow.error == "timed out after 1s (policy.timeout.execute)"
    # the clock ticks once per reading: started and finished are the runner's, in order
    assert final.record.created < final.record.started < slow.started < slow.finished
    assert slow.finished < final.record.finished


CANCELLED = """\
version: v1
jobs:
  long:
    image: {{uri: {image}}}
    command: [sleep, "120"]
  later:
    image: {{uri: {image}}}
    command: [/bin/true]
    requires: [long]
"""


def test_cancel_stops_the_running_task_and_the_waiting_ones_never_run(rig: Rig) -> None:
    rig.start("cancelled", CANCELLED)
    rig.wait_for_task("cancelled", "long", TaskState.RUNNING)
    assert rig.runner.cancel(OWNER, "cancelled").cancel_requested
    final = rig.wait("cancelled", timeout=60)  # the sleep 120 is stopped, not waited for
    tasks = tasks_of(final)
    assert final.record.state == WorkflowState.CANCELED
    assert tasks["long"].state == TaskState.CANCELED
    assert (tasks["later"].state, tasks["later"].attempt) == (TaskState.CANCELED, 0)
    assert tasks["later"].error == "workflow cancelled"


ARRAY = """\
version: v1
jobs:
  sweep:
    image: {{uri: {image}}}
    command: [sleep, "0.5"]
    task-array: {{start: 1, end: 3, concurrency: 1}}
"""


def test_a_task_arrays_tasks_run_no_more_at_once_than_its_concurrency(rig: Rig) -> None:
    rig.start("array", ARRAY)
    final = rig.wait("array")
    assert final.record.state == WorkflowState.SUCCEEDED
    spans = sorted((t.started, t.finished) for t in final.tasks)
    assert [t.key for t in final.tasks] == ["sweep[1]", "sweep[2]", "sweep[3]"]
    assert len(spans) == 3
    # the node has room for two at once: only the concurrency keeps them one at a time
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert ended < started


@contextlib.contextmanager
def silent_registry() -> Iterator[tuple[str, list[socket.socket]]]:
    """A registry address on 127.0.0.1 that accepts connections and never answers; its
    connections so far. Leaving resets every one (a pull through it then fails)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()
        listener.close()


def test_an_attempt_that_fails_while_starting_on_a_cordoned_node_is_queued_again(
        rig: Rig) -> None:
    # Issue 20: a node cordoned to be deleted (apply --replace, scale-down) takes an attempt
    # still starting there down with it; that task was queued work: placed again, not failed.
    with silent_registry() as (host, accepted):
        rig.start("moved", f"""\
version: v1
jobs:
  job:
    image: {{{{uri: docker://{host}/never/answers:1}}}}
    command: [/bin/true]
""")
        rig.wait_for_task("moved", "job", TaskState.STARTING)
        deadline = time.monotonic() + 30
        while not accepted:  # the node's pull reached the registry
            assert time.monotonic() < deadline, "the pull never began"
            time.sleep(0.05)
        rig.nodes.cordon("n0")
    task = rig.wait_for_task("moved", "job", TaskState.QUEUED)  # the pull failed meanwhile
    assert (task.attempt, task.nodes, task.error) == (0, [], "")
    assert task.waiting_for  # why it waits now: its only node is cordoned


SECRET_GONE = """\
version: v1
jobs:
  first:
    image: {{uri: {image}}}
    command: [sleep, "5"]
  second:
    image: {{uri: {image}}}
    env: [TOKEN=secret://user/TOKEN]
    command: [/bin/true]
    requires: [first]
"""


def test_an_env_secret_deleted_after_the_start_fails_the_job_that_needs_it(rig: Rig) -> None:
    rig.secrets.create(OWNER, "TOKEN", b"token-value")
    rig.start("gone", SECRET_GONE)
    rig.wait_for_task("gone", "first", TaskState.RUNNING)
    rig.secrets.delete(OWNER, "TOKEN")  # while first sleeps: second has not launched
    final = rig.wait("gone")
    second = tasks_of(final)["second"]
    assert (final.record.state, second.state) == (WorkflowState.FAILED, TaskState.FAILED)
    assert second.error == ("cannot open the job's secrets: no secret 'TOKEN' (create it"
                            " with: fuzz secret create TOKEN)"), second.error
    assert tasks_of(final)["first"].state == TaskState.SUCCEEDED
