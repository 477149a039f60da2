"""Draining from inside the orchestrator: the elastic loop's nodes leave as ``fuzz apply``'s do.

:class:`DirectoryDrainer` is the :class:`~fuzz.lifecycle.drain.NodeDrainer` the elastic
loop hands the engine: the same cordon, wait and stop as the CLI's, on the node
directory and the runner directly instead of through the API.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Literal

from fuzz.lifecycle.drain import UNREACHABLE, NodeTask, NodeWork
from fuzz.orchestrate.cluster.nodes import NodeDirectory

if TYPE_CHECKING:  # only a type here: the runner imports the node directory of this package
    from fuzz.orchestrate.workflows.loop import Runner


class DirectoryDrainer:
    """Cordons, watches and stops through the node directory and the runner."""

    def __init__(self, nodes: NodeDirectory, runner: Runner) -> None:
        """Act on ``nodes`` and ``runner``'s attempts."""
        self._nodes = nodes
        self._runner = runner

    def mark(self, addresses: Collection[str], action: Literal["drain", "uncordon"]) -> None:
        """Mark the nodes draining, or take the mark away."""
        for address in addresses:
            if action == "drain":
                self._nodes.drain(address)
            else:
                self._nodes.uncordon(address)

    def work(self, addresses: Collection[str]) -> dict[str, NodeWork]:
        """Each node's reachability and its attempts in flight."""
        records = {record.name: record for record in self._nodes.records()}
        work = self._runner.node_work(addresses)
        return {address: NodeWork(
            "UNKNOWN" if address not in records
            else "READY" if self._nodes.reachable(records[address]) else UNREACHABLE,
            tuple(NodeTask(t.workflow, t.owner, t.key, t.job, t.state) for t in work[address]))
            for address in addresses}

    def evict(self, address: str, reason: str) -> None:
        """Stop the node's attempts in flight, each failing with ``reason``."""
        self._runner.evict(address, reason)

    def forget(self, address: str) -> None:
        """The node was deleted."""
        self._nodes.forget(address)
