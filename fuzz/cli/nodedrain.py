"""Draining through the orchestrator's API: what ``fuzz apply``, ``destroy``, ``plan`` and
``fuzz node drain`` use (the waiting itself is :mod:`fuzz.lifecycle.drain`'s)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal

import click
from rich.markup import escape

from fuzz.api import orchestrator_pb2 as pb
from fuzz.cli.options import AppContext, parse_duration_option
from fuzz.cli.render import print_json_line
from fuzz.clients.orchestrator import (
    AccessDeniedError,
    OrchestratorClient,
    OrchestratorUnreachableError,
)
from fuzz.engine.model import RecordedNode
from fuzz.lifecycle.drain import DrainEvent, DrainSettings, NodeTask, NodeWork
from fuzz.spec.cluster import PoolSpec
from fuzz.units import parse_duration

PROBE_TIMEOUT = 5.0
# An orphan's (it is in no pool of the spec): the pools' default.
DEFAULT_DRAIN_TIMEOUT = parse_duration(str(PoolSpec.model_fields["drain_timeout"].default))


class OrchestratorDrainer:
    """:class:`~fuzz.lifecycle.drain.NodeDrainer` over the orchestrator's gRPC API."""

    def __init__(self, client: OrchestratorClient) -> None:
        """Call the orchestrator through ``client``."""
        self._client = client

    def mark(self, addresses: Collection[str], action: Literal["drain", "uncordon"]) -> None:
        """Mark the nodes draining, or take the mark away."""
        self._client.cordon_nodes(list(addresses), action)

    def work(self, addresses: Collection[str]) -> dict[str, NodeWork]:
        """Each node's state and its tasks in flight."""
        return {reply.node: node_work(reply) for reply in self._client.node_work(list(addresses))}

    def evict(self, address: str, reason: str) -> None:
        """Stop the node's tasks in flight, each failing with ``reason``."""
        self._client.cordon_nodes([address], "evict", reason)

    def forget(self, address: str) -> None:
        """The node was deleted."""
        self._client.cordon_nodes([address], "forget")


def node_work(reply: pb.NodeWork) -> NodeWork:
    """An API NodeWork as the lifecycle's."""
    return NodeWork(reply.state, tuple(
        NodeTask(task.workflow, task.owner, task.task, task.job, task.state)
        for task in reply.tasks))


def drain_timeout_option(func: click.decorators.FC) -> click.decorators.FC:
    """``--drain-timeout``: how long a node being deleted waits for its running tasks."""
    return click.option(
        "--drain-timeout", metavar="DURATION",
        help="How long each node to delete waits for its running tasks before they are "
             "stopped (seconds, or 90s, 10m; default: its pool's drain_timeout).",
    )(func)


def reachable_orchestrator(app: AppContext, addresses: Sequence[str]
                           ) -> OrchestratorClient | None:
    """The cluster's orchestrator when the spec has one and it answers (about
    ``addresses``); None otherwise.

    Without an answer the caller goes on as without an orchestrator, and says so.
    """
    ws = app.workspace
    if ws.loaded.spec.orchestrator is None:
        return None
    client = ws.orchestrator
    try:
        client.node_work(list(addresses), timeout=PROBE_TIMEOUT)
    except OrchestratorUnreachableError as exc:
        app.err.print(f"[yellow]No orchestrator answers ({escape(str(exc))}): nothing is "
                      "known of the tasks on the nodes to delete, and they are deleted "
                      "without draining.[/]")
        return None
    return client


def drain_settings(app: AppContext, addresses: Sequence[str], drain_timeout: str | None,
                   as_json: bool) -> DrainSettings | None:
    """How ``fuzz apply`` and ``destroy`` drain ``addresses``, or None when no
    orchestrator answers."""
    override = None if drain_timeout is None else \
        parse_duration_option("--drain-timeout", drain_timeout)
    client = reachable_orchestrator(app, addresses)
    if client is None:
        return None
    pools = app.workspace.loaded.spec.pools

    def timeout_of(record: RecordedNode) -> float:
        if override is not None:
            return override
        pool = pools.get(record.pool)
        return pool.drain_timeout_seconds() if pool is not None else DEFAULT_DRAIN_TIMEOUT

    def show(event: DrainEvent) -> None:
        if as_json:
            print_json_line(app.out, event.to_json())
        else:
            app.out.print(escape(event.describe()))

    return DrainSettings(OrchestratorDrainer(client), timeout_of, show)


def interrupted_work(app: AppContext, addresses: Sequence[str]
                     ) -> dict[str, list[NodeTask]] | None:
    """The tasks in flight on ``addresses`` (those with some); None without an orchestrator."""
    if not addresses:
        return {}
    try:
        client = reachable_orchestrator(app, addresses)
        if client is None:
            return None
        work = OrchestratorDrainer(client).work(addresses)
    except AccessDeniedError as exc:
        app.err.print(f"[yellow]The running tasks on the nodes to delete are not shown: "
                      f"{escape(str(exc))}[/]")
        return None
    return {address: list(found.tasks) for address, found in work.items() if found.tasks}
