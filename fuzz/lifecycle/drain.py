"""Drain before delete: a node leaves the cluster only once its running tasks have ended.

Every apply that deletes nodes (``fuzz apply`` scaling down or replacing, ``fuzz
destroy``, the orchestrator's elastic loop) goes through :class:`DrainingOperations`:

1. before the first change, every node the plan deletes or replaces is marked
   draining (cordoned: the scheduler places nothing new there, so queued work goes
   to the other nodes);
2. each delete first waits for the node's tasks in flight to end, up to the node's
   drain timeout (``drain_timeout`` of its pool, or ``--drain-timeout``), reporting
   which tasks still run;
3. past the timeout the tasks left are stopped: each fails with the reason (and is
   retried elsewhere when its job's retry policy allows another attempt);
4. once deleted, the orchestrator forgets the node (a replacement registers anew);
   a node this apply marked but did not delete (a failed or skipped change) takes
   work again.

The orchestrator is reached through :class:`NodeDrainer` (the CLI's gRPC client, or
the orchestrator's own node directory for its elastic loop): this layer imports no
client. Waiting is the only I/O here, through the injected ``sleep`` and ``clock``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from fuzz.engine.apply import NodeOperations
from fuzz.engine.model import Action, DesiredNode, Plan, RecordedNode
from fuzz.errors import FuzzError
from fuzz.plugin.provider import NodeObservation

UNREACHABLE = "UNREACHABLE"
POLL = 2.0  # seconds between two looks at a draining node's tasks
REPORT_EVERY = 10.0  # progress is shown when it changes, and at least this often
STOP_WAIT = 60.0  # after the timeout: how long the stopped tasks may take to end


@dataclass(frozen=True)
class NodeTask:
    """A task in flight on a node: whose workflow, which task, in which state."""

    workflow: str
    owner: str
    task: str
    job: str
    state: str

    def describe(self) -> str:
        """``owner/workflow task (STATE)``."""
        return f"{self.owner}/{self.workflow} {self.task} ({self.state})"

    def to_json(self) -> dict[str, str]:
        """The JSON form of ``fuzz plan --json`` and apply's progress lines."""
        return {"workflow": self.workflow, "owner": self.owner, "task": self.task,
                "job": self.job, "state": self.state}


@dataclass(frozen=True)
class NodeWork:
    """A node as the orchestrator sees it (READY, DRAINING, UNREACHABLE …) and its tasks."""

    state: str
    tasks: tuple[NodeTask, ...] = ()


class NodeDrainer(Protocol):
    """What draining needs from the orchestrator."""

    def mark(self, addresses: Collection[str], action: Literal["drain", "uncordon"]) -> None:
        """Mark nodes draining, or take the mark away."""

    def work(self, addresses: Collection[str]) -> dict[str, NodeWork]:
        """Each node's state and the tasks in flight there."""

    def evict(self, address: str, reason: str) -> None:
        """Stop the node's tasks in flight; each fails with ``reason``."""

    def forget(self, address: str) -> None:
        """The node was deleted: the orchestrator drops it."""


DrainPhase = Literal["waiting", "stopping", "drained", "still-cordoned"]


@dataclass(frozen=True)
class DrainEvent:
    """Progress of one node's drain, for the CLI to show (and the orchestrator to log)."""

    address: str
    phase: DrainPhase
    tasks: tuple[NodeTask, ...] = ()
    remaining: float = 0.0  # seconds left of the drain timeout (waiting)
    timeout: float = 0.0
    error: str = ""  # still-cordoned: why the mark could not be taken away

    def describe(self) -> str:
        """One line: which tasks still run on which node, and what happens next."""
        listed = ", ".join(task.describe() for task in self.tasks)
        if self.phase == "waiting":
            return (f"draining {self.address}: {len(self.tasks)} task(s) still running: "
                    f"{listed}; waiting up to {self.remaining:.0f}s more")
        if self.phase == "stopping":
            return (f"draining {self.address}: drain timeout ({self.timeout:g}s) reached; "
                    f"stopping {len(self.tasks)} task(s): {listed}")
        if self.phase == "still-cordoned":
            return (f"{self.address} was not deleted and stays cordoned ({self.error}): "
                    f"fuzz node uncordon {self.address} lets it take work again")
        return f"drained {self.address}: no task runs there"

    def to_json(self) -> dict[str, object]:
        """One JSON progress line."""
        return {"type": "drain", "address": self.address, "phase": self.phase,
                "tasks": [task.to_json() for task in self.tasks],
                "remaining": round(self.remaining, 1), "timeout": self.timeout,
                "error": self.error}


@dataclass(frozen=True)
class DrainSettings:
    """How to drain: through whom, each node's timeout, where progress goes."""

    drainer: NodeDrainer
    timeout_of: Callable[[RecordedNode], float]
    on_event: Callable[[DrainEvent], None] = lambda event: None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def nodes_to_drain(plan: Plan) -> list[str]:
    """The addresses whose node the plan deletes or replaces (drift recreates are gone)."""
    return [change.address for change in plan.changes
            if change.before is not None
            and change.action in (Action.DELETE, Action.REPLACE)]


@dataclass
class DrainingOperations:
    """The providers' operations, with every planned delete drained first.

    Use as a context manager around the apply: entering marks the nodes draining,
    leaving takes the mark from those not deleted.
    """

    operations: NodeOperations
    settings: DrainSettings
    addresses: Sequence[str]
    deleted: set[str] = field(default_factory=set)

    def __enter__(self) -> DrainingOperations:
        if self.addresses:
            self.settings.drainer.mark(self.addresses, "drain")
        return self

    def __exit__(self, *exc: object) -> None:
        left = [address for address in self.addresses if address not in self.deleted]
        if not left:
            return
        try:
            self.settings.drainer.mark(left, "uncordon")
        except FuzzError as error:  # the orchestrator went away: say so, keep apply's result
            for address in left:
                self.settings.on_event(DrainEvent(address, "still-cordoned", error=str(error)))

    def create(self, node: DesiredNode, token: str) -> NodeObservation:
        """Create as the providers do."""
        return self.operations.create(node, token)

    def delete(self, record: RecordedNode) -> None:
        """Drain the node (if the plan deletes or replaces it), delete it, forget it."""
        if record.address not in self.addresses:
            self.operations.delete(record)
            return
        self.drain(record.address, self.settings.timeout_of(record))
        self.operations.delete(record)
        self.deleted.add(record.address)
        self.settings.drainer.forget(record.address)

    def drain(self, address: str, timeout: float) -> None:
        """Wait for the tasks on ``address`` to end, at most ``timeout``; then stop them."""
        drain_node(address, timeout, self.settings)


def drain_node(address: str, timeout: float, settings: DrainSettings) -> None:
    """Wait (the node marked draining) until no task runs on ``address``, at most
    ``timeout`` seconds; then stop those left and wait for them to end.

    An unreachable node is not waited for: its tasks are stopped at once.
    """
    drainer, clock = settings.drainer, settings.clock
    deadline = clock() + timeout
    shown: tuple[NodeTask, ...] = ()
    shown_at = -REPORT_EVERY
    while True:
        work = drainer.work([address]).get(address, NodeWork("UNKNOWN"))
        if not work.tasks:
            if shown:
                settings.on_event(DrainEvent(address, "drained", timeout=timeout))
            return
        now = clock()
        if now >= deadline or work.state == UNREACHABLE:
            break
        if work.tasks != shown or now - shown_at >= REPORT_EVERY:
            settings.on_event(DrainEvent(address, "waiting", work.tasks, deadline - now,
                                         timeout))
            shown, shown_at = work.tasks, now
        settings.sleep(min(POLL, max(deadline - now, 0.0)))
    settings.on_event(DrainEvent(address, "stopping", work.tasks, 0.0, timeout))
    why = ("its node was unreachable when it was deleted" if work.state == UNREACHABLE
           else f"still running when its node {address} was deleted: the drain timeout "
                f"({timeout:g}s) had passed")
    drainer.evict(address, why)
    stop_by = clock() + STOP_WAIT
    while drainer.work([address]).get(address, NodeWork("UNKNOWN")).tasks and \
            clock() < stop_by:
        settings.sleep(POLL)
    settings.on_event(DrainEvent(address, "drained", timeout=timeout))
