"""The runner's part of draining a node: what runs there, and stopping it past the timeout.

Cordoning is the node directory's (:meth:`NodeDirectory.cordon
<fuzz.orchestrate.cluster.nodes.NodeDirectory.cordon>`): the scheduler places nothing
new on a cordoned node, so its queued work goes elsewhere. Whoever deletes the node
(``fuzz apply``, ``fuzz destroy``, the elastic loop, ``fuzz node drain``) waits for
:meth:`DrainSteps.node_work` to come back empty, up to its drain timeout, then
:meth:`DrainSteps.evict` stops what is left: each attempt ends FAILED with the reason
given, and is retried elsewhere when its job's retry policy allows another attempt.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from fuzz.orchestrate.states import TaskState
from fuzz.orchestrate.workflows.scheduling import SchedulingSteps
from fuzz.orchestrate.workflows.tasks import LaunchPlan


@dataclass(frozen=True)
class NodeTask:
    """One attempt in flight on a node, as ``fuzz plan`` and ``fuzz node drain`` show it."""

    workflow: str
    owner: str
    key: str
    job: str
    state: TaskState
    started: float
    attempt: int


class DrainSteps(SchedulingSteps):
    """Reports the attempts in flight per node, and stops them when a drain times out."""

    def node_work(self, nodes: Collection[str]) -> dict[str, list[NodeTask]]:
        """The attempts in flight (STARTING or RUNNING) on each of ``nodes``."""
        work: dict[str, list[NodeTask]] = {node: [] for node in nodes}
        with self._lock:
            for workflow in self._active.values():
                for plan in workflow.plans.values():
                    task = workflow.tasks[plan.key]
                    for node in set(plan.nodes) & work.keys():
                        work[node].append(NodeTask(
                            workflow.record.name, workflow.record.owner, task.key, task.job,
                            task.state, task.started, task.attempt))
        for listed in work.values():
            listed.sort(key=lambda t: (t.owner, t.workflow, t.key))
        return work

    def evict(self, node: str, reason: str) -> int:
        """Stop every attempt in flight on ``node``; each ends FAILED with ``reason``.

        The job's retry policy applies as to any failure. Returns how many were asked
        to stop.
        """
        with self._lock:
            plans: list[LaunchPlan] = [plan for workflow in self._active.values()
                                       for plan in workflow.plans.values() if node in plan.nodes]
            for plan in plans:
                self._evicted[(plan.workflow_id, plan.key)] = reason
        for plan in plans:
            self._act(self._executor.cancel, plan)
        return len(plans)
