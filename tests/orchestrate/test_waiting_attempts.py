"""Attempts hold a runner worker only while they act, not while their containers run
(issue 23): counted on simulated agents.

Each attempt's worker used to block until its container ended, so a runner of 256
workers (the default) ran at most 256 tasks at once, cluster-wide, whatever the nodes'
room. Now an attempt waits on its node's watch stream without a thread: the end it
pushes (or a slice without one) hands the rest of the attempt back to a worker. Here a
runner of 4 workers runs 24 tasks at once, and each still ends as before: recorded,
removed, finished; cancelled ones too. And a round starts no more attempts than the
workers can take: the ends of the waiting attempts never queue behind a backlog of starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.orchestrate.store import PostgresTarget
from fuzz.orchestrate.workflows.base import RunnerSettings
from fuzz.testing.simagents import SimulatedAgents
from tests.support.orchestratorutil import wait_until
from tests.support.simcluster import array_fuzzfile, simulated_cluster

WORKERS, NODES, CORES, TASKS = 4, 2, 12, 24  # room for every task at once
RUN_SECONDS = 12.0
SLICE = 2.0  # seconds an attempt waits for its end before asking its agent (WAIT_SLICE)


@pytest.fixture
def few_workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The orchestrator's runner gets :data:`WORKERS` workers."""
    monkeypatch.setattr("fuzz.orchestrate.server.RunnerSettings",
                        partial(RunnerSettings, workers=WORKERS))
    yield


def _running(admin: OrchestratorClient, name: str) -> int:
    """How many of workflow ``name``'s tasks run now."""
    workflow = admin.get_workflow(name)
    return sum(task.state == "RUNNING" for task in workflow.tasks)


@pytest.mark.usefixtures("few_workers")
def test_more_tasks_than_workers_run_at_once(tmp_path: Path, pg_target: PostgresTarget,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fuzz.orchestrate.workflows.tasks.WAIT_SLICE", SLICE)
    agents = SimulatedAgents(NODES, cores=CORES, memory_bytes=1024**3, run_seconds=RUN_SECONDS,
                             heartbeat_interval=0.5)
    with simulated_cluster(tmp_path, pg_target, agents) as admin:
        admin.start_workflow("wide", array_fuzzfile(TASKS), "Fuzzfile")
        wait_until(f"{TASKS} tasks running at once on {WORKERS} workers",
                   lambda: _running(admin, "wide") == TASKS, timeout=RUN_SECONDS / 2)
        wait_until("the workflow to finish",
                   lambda: admin.get_workflow("wide").state not in ("PENDING", "RUNNING"),
                   timeout=60)
        workflow = admin.get_workflow("wide")
        left = agents.running()
        calls = agents.calls()
    assert workflow.state == "SUCCEEDED", workflow
    assert {task.state for task in workflow.tasks} == {"SUCCEEDED"}
    assert len(agents.starts()) == TASKS  # each started once
    assert left == 0  # every container removed after its end, and its lease with it
    assert calls["WaitContainer"] == 0, calls  # the ends came on the watch streams
    slices = int(RUN_SECONDS / SLICE) - 2  # each slice without an end asks, then renews
    assert calls["GetContainer"] >= TASKS * slices, calls
    assert calls["RenewLease"] >= TASKS * slices, calls


@pytest.mark.usefixtures("few_workers")
def test_waiting_attempts_are_cancelled(tmp_path: Path, pg_target: PostgresTarget) -> None:
    agents = SimulatedAgents(NODES, cores=CORES, memory_bytes=1024**3, run_seconds=60.0,
                             heartbeat_interval=0.5)
    with simulated_cluster(tmp_path, pg_target, agents) as admin:
        admin.start_workflow("stopped", array_fuzzfile(TASKS), "Fuzzfile")
        wait_until(f"{TASKS} tasks running", lambda: _running(admin, "stopped") == TASKS,
                   timeout=RUN_SECONDS / 2)
        admin.cancel_workflow("stopped")
        wait_until("the workflow to end",
                   lambda: admin.get_workflow("stopped").state not in ("PENDING", "RUNNING"),
                   timeout=30)
        workflow = admin.get_workflow("stopped")
        wait_until("every container removed", lambda: agents.running() == 0, timeout=15)
    assert workflow.state == "CANCELED", workflow
    assert {task.state for task in workflow.tasks} == {"CANCELED"}, workflow.tasks


@pytest.mark.usefixtures("few_workers")
def test_a_round_starts_no_more_attempts_than_the_workers_can_take(
        tmp_path: Path, pg_target: PostgresTarget) -> None:
    """Without a limit a round made all 24 attempts STARTING at once, 20 of them queued
    behind the 4 workers (and at scale, the ends behind them: 24,000 attempts in flight at
    2,000 nodes, the orchestrator's memory 695 MiB against 387)."""
    agents = SimulatedAgents(NODES, cores=CORES, memory_bytes=1024**3, run_seconds=30.0,
                             heartbeat_interval=0.5, start_seconds=0.5)
    starting: list[int] = []
    with simulated_cluster(tmp_path, pg_target, agents) as admin:
        admin.start_workflow("slow", array_fuzzfile(TASKS), "Fuzzfile")

        def all_running() -> bool:
            states = [task.state for task in admin.get_workflow("slow").tasks]
            starting.append(states.count("STARTING"))
            return states.count("RUNNING") == TASKS

        wait_until(f"{TASKS} tasks running", all_running, timeout=25)
        admin.cancel_workflow("slow")
    assert max(starting) <= WORKERS, starting
    assert max(starting) > 0, starting  # the starts were seen under way
