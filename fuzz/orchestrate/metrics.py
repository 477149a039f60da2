"""The orchestrator's Prometheus series (every name is documented in docs/metrics.md).

Two kinds:

- events, counted where they happen: task starts and ends, queue wait, scheduling
  rounds, transfers, elastic provider errors (:class:`OrchestratorMetrics`, handed
  to the runner and the elastic loop);
- views, read when Prometheus scrapes: tasks by state (the queue depth among them),
  nodes by state, leases held, elastic pool sizes, leader status
  (:class:`ClusterCollector`).

Labels are states, directions, pools and node states: never a workflow, task or user
name, which are tenants' data (``/metrics`` needs no token).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fuzz.orchestrate.states import TaskState

WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
                86400.0)
ROUND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LEADER_HELP = "1 while this orchestrator leads (runs the scheduler), else 0"

FINAL_TASK_STATES = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELED,
                     TaskState.NOT_RUN)

TaskKey = tuple[str, str]  # (workflow id, task key)


class OrchestratorMetrics:
    """The orchestrator's event series, in a registry of its own; thread-safe."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Register the series in ``registry`` (a new one when None)."""
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._queued_at: dict[TaskKey, float] = {}
        reg = self.registry
        self._starts = Counter("fuzz_task_starts", "Task attempts dispatched to nodes",
                               registry=reg)
        self._ends = Counter("fuzz_task_ends", "Tasks that reached a final state, by state",
                             ["state"], registry=reg)
        self._wait = Histogram("fuzz_queue_wait_seconds", "Time tasks spent QUEUED before "
                               "they were placed on nodes", registry=reg, buckets=WAIT_BUCKETS)
        self._round = Histogram("fuzz_scheduling_round_seconds", "Duration of one placement "
                                "round over the queue", registry=reg, buckets=ROUND_BUCKETS)
        self._transfers = Counter("fuzz_transfers", "Volume transfers finished, by direction "
                                  "and outcome", ["direction", "outcome"], registry=reg)
        self._transfer_bytes = Counter("fuzz_transfer_bytes", "Bytes moved by finished "
                                       "transfers, by direction", ["direction"], registry=reg)
        self._provider_errors = Counter("fuzz_elastic_provider_errors", "Elastic passes in "
                                        "which a pool's provider failed, by pool", ["pool"],
                                        registry=reg)
        for state in FINAL_TASK_STATES:
            self._ends.labels(state.value)  # every final state shows, at 0 at first

    def queued(self, workflow_id: str, key: str) -> None:
        """Task ``key`` entered the queue (first queued, retried, or requeued)."""
        with self._lock:
            self._queued_at.setdefault((workflow_id, key), self._clock())

    def started(self, workflow_id: str, key: str) -> None:
        """An attempt of task ``key`` was placed and dispatched.

        Its queue wait is observed when its entry into the queue was seen by this
        process (not for tasks already queued when the orchestrator started).
        """
        with self._lock:
            since = self._queued_at.pop((workflow_id, key), None)
        self._starts.inc()
        if since is not None:
            self._wait.observe(self._clock() - since)

    def ended(self, workflow_id: str, key: str, state: str) -> None:
        """Task ``key`` reached final ``state`` (SUCCEEDED, FAILED, CANCELED, NOT_RUN)."""
        with self._lock:
            self._queued_at.pop((workflow_id, key), None)
        self._ends.labels(state).inc()

    def scheduling_round(self, seconds: float) -> None:
        """One placement round took ``seconds``."""
        self._round.observe(seconds)

    def transfer(self, direction: str, ok: bool, size: int) -> None:
        """A transfer (``ingress`` or ``egress``) finished, having moved ``size`` bytes."""
        self._transfers.labels(direction, "ok" if ok else "failed").inc()
        if size:
            self._transfer_bytes.labels(direction).inc(size)

    def provider_error(self, pool: str) -> None:
        """Pool ``pool``'s provider failed in an elastic pass."""
        self._provider_errors.labels(pool).inc()


@dataclass(frozen=True)
class ClusterReadings:
    """What the collector reads at each scrape (callables into the running parts)."""

    tasks: Callable[[], tuple[Mapping[str, int], int]]  # tasks by state, leases held
    nodes: Callable[[], Mapping[str, int]]  # nodes by state
    pools: Callable[[], Mapping[tuple[str, str], int]]  # (pool, member state) -> members
    leader: Callable[[], bool] = lambda: True  # one orchestrator: it leads


class ClusterCollector(Collector):
    """The series read at scrape time from the runner, the node directory and the
    elastic loop."""

    def __init__(self, readings: ClusterReadings) -> None:
        """Read through ``readings``."""
        self._readings = readings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The current values (prometheus_client calls this at each scrape)."""
        by_state, leases = self._readings.tasks()
        tasks = GaugeMetricFamily("fuzz_tasks", "Tasks of active workflows, by state",
                                  labels=["state"])
        for state in TaskState:
            tasks.add_metric([state.value], by_state.get(state.value, 0))
        yield tasks
        yield GaugeMetricFamily("fuzz_queue_depth", "Tasks QUEUED for a node",
                                value=by_state.get(TaskState.QUEUED.value, 0))
        yield GaugeMetricFamily("fuzz_leases", "Leases held on nodes by tasks in flight",
                                value=leases)
        nodes = GaugeMetricFamily("fuzz_nodes", "Registered nodes, by state",
                                  labels=["state"])
        for node_state, count in sorted(self._readings.nodes().items()):
            nodes.add_metric([node_state], count)
        yield nodes
        pools = GaugeMetricFamily("fuzz_elastic_pool_nodes", "Members of elastic pools, by "
                                  "pool and member state", labels=["pool", "state"])
        for (pool, member_state), count in sorted(self._readings.pools().items()):
            pools.add_metric([pool, member_state], count)
        yield pools
        yield GaugeMetricFamily("fuzz_leader", LEADER_HELP, value=int(self._readings.leader()))

