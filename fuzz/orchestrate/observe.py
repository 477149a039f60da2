"""The orchestrator's metrics listener: its series, views and readiness, put together.

:func:`start_status` starts the HTTP listener of ``/metrics``, ``/healthz`` and
``/readyz`` (:mod:`fuzz.rpc.statusweb`) over the orchestrator's registry, with the
views read at each scrape (:class:`~fuzz.orchestrate.metrics.ClusterCollector`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from fuzz.orchestrate.cluster.elastic import ElasticLoop
from fuzz.orchestrate.cluster.nodes import NodeDirectory
from fuzz.orchestrate.metrics import ClusterCollector, ClusterReadings, OrchestratorMetrics
from fuzz.orchestrate.records import WorkflowRecord
from fuzz.orchestrate.store import Store
from fuzz.orchestrate.workflows.loop import Runner
from fuzz.rpc.server import RunningServer
from fuzz.rpc.statusweb import StatusListener
from fuzz.spec.cluster import MetricsSpec


@dataclass
class Readiness:
    """What ``/readyz`` asks: the store answers, the runner runs, the gRPC server serves."""

    store: Store
    runner_started: threading.Event = field(default_factory=threading.Event)
    server: RunningServer | None = None

    def problem(self) -> str | None:
        """None when ready, else why not (naming only the orchestrator's own parts)."""
        if not self.runner_started.is_set():
            return "the runner has not started"
        if self.server is None or not self.server.serving:
            return "the gRPC server is not serving"
        try:
            self.store.load(WorkflowRecord, id="")  # a read by key: cheap, touches the store
        except Exception as exc:
            return f"the store cannot be read ({type(exc).__name__})"
        return None


def node_states(nodes: NodeDirectory) -> dict[str, int]:
    """Registered nodes by state: LOST, UNREACHABLE, DRAINING, CORDONED or READY."""
    counts: dict[str, int] = {}
    for record in nodes.records():
        if nodes.lost(record.name):
            state = "LOST"
        elif not nodes.reachable(record):
            state = "UNREACHABLE"
        else:
            state = nodes.cordon_mode(record.name).upper() or "READY"
        counts[state] = counts.get(state, 0) + 1
    return counts


def pool_sizes(loop: ElasticLoop | None) -> Mapping[tuple[str, str], int]:
    """Members of each elastic pool by member state (BOOTING, READY, DRAINING)."""
    counts: dict[tuple[str, str], int] = {}
    for view in loop.pools()[0] if loop is not None else ():
        for state in view.states.values():
            counts[(view.name, state)] = counts.get((view.name, state), 0) + 1
    return counts


def start_status(spec: MetricsSpec, metrics: OrchestratorMetrics, runner: Runner,
                 nodes: NodeDirectory, loop: ElasticLoop | None, readiness: Readiness
                 ) -> StatusListener | None:
    """Start the listener (None when ``orchestrator.metrics.enabled`` is false);
    raises StatusListenError when it cannot bind."""
    if not spec.enabled:
        return None
    metrics.registry.register(ClusterCollector(ClusterReadings(
        tasks=runner.tally, nodes=lambda: node_states(nodes), pools=lambda: pool_sizes(loop))))
    listener = StatusListener(spec.listen, metrics.registry, readiness.problem)
    listener.start()
    return listener
