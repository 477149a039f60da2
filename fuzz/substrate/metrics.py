"""The node agent's Prometheus series, read when Prometheus scrapes (docs/metrics.md).

Containers by state, leases held, images fetched; the agent's RPC latency is counted
by :class:`fuzz.rpc.metrics.RpcLatency`. Labels are states only: no job, image or
user name (``/metrics`` needs no token).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fuzz.errors import FuzzError
from fuzz.substrate.capacity.leases import LeaseBook
from fuzz.substrate.jobs import JobRunner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentParts:
    """Where the collector reads: the node's job runner and lease book (each made on
    first use by the servicer)."""

    jobs: Callable[[], JobRunner]
    book: Callable[[], LeaseBook]


class AgentCollector(Collector):
    """``fuzz_agent_containers{state}``, ``fuzz_agent_leases``, ``fuzz_agent_image_pulls``
    and ``fuzz_agent_image_pull_bytes``."""

    def __init__(self, parts: AgentParts) -> None:
        """Read through ``parts``."""
        self._parts = parts

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The current values (prometheus_client calls this at each scrape)."""
        try:
            jobs = self._parts.jobs()
            statuses = jobs.containers.list()
            leases = len(self._parts.book().list())
        except (FuzzError, OSError) as exc:  # a scrape shows what it can, never fails
            log.warning("metrics: the node's jobs cannot be read: %s", exc)
            return
        counts: dict[str, int] = {}
        for status in statuses:
            counts[str(status.state)] = counts.get(str(status.state), 0) + 1
        containers = GaugeMetricFamily("fuzz_agent_containers", "Containers on this node, "
                                       "by state", labels=["state"])
        for state, count in sorted(counts.items()):
            containers.add_metric([state], count)
        yield containers
        yield GaugeMetricFamily("fuzz_agent_leases", "Leases held on this node", value=leases)
        yield CounterMetricFamily("fuzz_agent_image_pulls", "Images fetched from a registry "
                                  "by this agent process", value=jobs.images.fetches)
        yield CounterMetricFamily("fuzz_agent_image_pull_bytes", "Unpacked bytes of the "
                                  "images this agent process fetched",
                                  value=jobs.images.fetched_bytes)
