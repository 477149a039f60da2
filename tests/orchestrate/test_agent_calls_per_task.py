"""How many agent calls a task costs (issues 21 and 23): counted on simulated agents.

Each task used to cost three unary calls to its node's agent (StartContainer with the
lease, WaitContainer held open until the end, RemoveContainer releasing the lease).
Now each node's agent pushes every container's end on one WatchContainers stream, so a
task is its start and its removal; an agent without the stream (an older one, answering
UNIMPLEMENTED) is waited on as before, one WaitContainer per task. Removals go in
RemoveContainers calls, those of one node asked meanwhile together, and so do starts, in
StartContainers calls; an older agent gets one RemoveContainer and one StartContainer each.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fuzz.orchestrate.store import PostgresTarget
from fuzz.testing.simagents import SimulatedAgents
from tests.support.simcluster import array_fuzzfile, run_to_end, simulated_cluster

NODES, CORES, TASKS = 3, 2, 24
PER_TASK = ("StartContainer", "StartContainers", "WaitContainer", "GetContainer", "RemoveContainer",
            "RemoveContainers", "AcquireLease", "ReleaseLease")


def _run_workflow(tmp_path: Path, pg_target: PostgresTarget, batch_calls: bool,
                  nodes: int = NODES, cores: int = CORES, tasks: int = TASKS) -> Counter[str]:
    """Run the task array onto simulated nodes; the agent calls they answered."""
    agents = SimulatedAgents(nodes, cores=cores, memory_bytes=1024**3, run_seconds=0.3,
                             heartbeat_interval=0.5, batch_calls=batch_calls)
    with simulated_cluster(tmp_path, pg_target, agents) as admin:
        workflow = run_to_end(admin, "calls", array_fuzzfile(tasks))
        left = agents.running()
        calls = agents.calls()
    assert workflow.state == "SUCCEEDED", workflow
    assert len(agents.starts()) == tasks
    assert left == 0  # every container removed, and its lease with it
    return calls


def test_a_task_costs_its_start_and_its_removal(tmp_path: Path, pg_target: PostgresTarget
                                               ) -> None:
    calls = _run_workflow(tmp_path, pg_target, batch_calls=True)
    per_task = sum(calls[method] for method in PER_TASK)
    assert calls["WaitContainer"] == 0, calls  # the ends came on the watch streams
    assert per_task <= 2 * TASKS, calls  # three a task before
    assert calls["WatchContainers"] <= NODES, calls  # one stream per node
    assert calls["RemoveContainer"] == 0, calls  # removals go in RemoveContainers


def test_an_agent_without_the_watch_is_waited_on_as_before(tmp_path: Path,
                                                           pg_target: PostgresTarget) -> None:
    calls = _run_workflow(tmp_path, pg_target, batch_calls=False)
    assert calls["WaitContainer"] >= TASKS // 2, calls  # each running task waited on
    assert calls["WatchContainers"] <= NODES, calls  # asked once per node, then remembered
    assert calls["RemoveContainers"] <= NODES, calls  # so is this
    assert calls["RemoveContainer"] == TASKS, calls  # one by one instead


ROUND_NODES, ROUND_CORES = 2, 32  # room for every task at once: one round places them all


def test_a_nodes_starts_of_one_round_go_in_few_calls(tmp_path: Path,
                                                      pg_target: PostgresTarget) -> None:
    """The 64 starts of one round on two nodes were 64 StartContainer calls, each after a
    pull of the image (64 pulls); now a node's image is pulled once while the other starts
    wait for it, and the starts asked of a node while a call to it is under way go
    together in the next."""
    tasks = ROUND_NODES * ROUND_CORES
    calls = _run_workflow(tmp_path, pg_target, True, ROUND_NODES, ROUND_CORES, tasks)
    assert calls["PullImage"] == ROUND_NODES, calls
    assert calls["StartContainer"] == 0, calls
    assert calls["StartContainers"] <= tasks // 4, calls


def test_an_agent_without_start_containers_gets_one_start_each(
        tmp_path: Path, pg_target: PostgresTarget) -> None:
    tasks = ROUND_NODES * ROUND_CORES
    calls = _run_workflow(tmp_path, pg_target, False, ROUND_NODES, ROUND_CORES, tasks)
    assert calls["StartContainers"] <= ROUND_NODES, calls  # asked once per node, remembered
    assert calls["StartContainer"] == tasks, calls
