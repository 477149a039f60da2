"""Calls to a node's agent that ride out the agent's restart, and what is left to clean up.

An agent may die and be started again in place (by a supervisor, a restart, the
local provider): its container monitor keeps the jobs running, and the new agent
re-adopts them, keeps its leases and registers again, perhaps at a new endpoint
with a new token. So a call that fails as a dead agent's would is retried with
backoff, each time through the node's current client, until the node has been
silent for the grace period (``orchestrator.node_grace``); then the node is lost
(:meth:`~fuzz.orchestrate.cluster.nodes.NodeDirectory.silent`) and the call raises
:class:`NodeLostError`.

What could not be removed from a silent or lost node (an attempt's container, its
lease) is remembered and removed by :meth:`AgentCalls.sweep` once the agent answers
again, rather than left to the lease's TTL; :meth:`AgentCalls.find_orphans` finds what
no attempt owns any more (after a restart of the orchestrator it has no memory of).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import methodcaller
from typing import Any, TypeVar

import grpc

from fuzz.api.substrate_pb2 import ContainerStatus, StartContainerRequest
from fuzz.clients.agent import (
    AgentAuthError,
    AgentClient,
    AgentError,
    AgentNotFoundError,
    AgentUnreachableError,
)
from fuzz.errors import FuzzError
from fuzz.orchestrate.cluster.nodes import NodeDirectory

RETRY_FIRST = 0.2  # seconds before the first retry of a failed call; doubled each time
RETRY_MAX = 2.0  # the longest pause between two retries
_Result = TypeVar("_Result")


class NodeLostError(FuzzError):
    """The node was declared lost: its agent stayed silent past the grace period."""


class CallsStoppedError(FuzzError):
    """The orchestrator is stopping: a call waiting for a silent agent gives up, and the
    attempt is left as recorded for the next orchestrator to re-adopt."""


def transient(exc: AgentError) -> bool:
    """Whether a failed call may succeed once the agent is back.

    Nothing listening, no answer in time, a refused token (a restarted agent's new
    one), a closed client or a call cut off without a status is what a dead or
    restarting agent looks like. Every other status is the agent's own answer about
    the request (not found, no room, a bad request, a failed pull, an error of its
    runtime): asking again would get it again, so it is not waited out.
    """
    if isinstance(exc, (AgentUnreachableError, AgentAuthError)):
        return True
    return exc.code in _CUT_OFF


_CUT_OFF = (None, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)


@dataclass
class _Asked:
    """One request (a container to remove, a start) waiting for its node's next batch call."""

    request: Any
    done: bool = False
    result: Any = None
    error: Exception | None = None


@dataclass
class _NodeBatch:
    """A node's requests of one kind: those asked while a call is under way go together in
    the next."""

    sending: threading.Lock = field(default_factory=threading.Lock)
    pending: list[_Asked] = field(default_factory=list)


class AgentCalls:
    """Calls to the agents of :class:`NodeDirectory` that wait for a restarting agent."""

    def __init__(self, nodes: NodeDirectory) -> None:
        """Call the agents of ``nodes``."""
        self._nodes = nodes
        self._lock = threading.Lock()
        self._leftovers: dict[str, dict[str, str]] = {}  # node: {container: lease ('' none)}
        self._stopped = threading.Event()
        self._removal_hooks: list[Callable[[str, str], None]] = []
        self._removals: dict[str, _NodeBatch] = {}
        self._starts: dict[str, _NodeBatch] = {}
        self._one_by_one: set[str] = set()  # nodes whose agents lack RemoveContainers
        self._starts_one_by_one: set[str] = set()  # nodes whose agents lack StartContainers

    def on_removal(self, hook: Callable[[str, str], None]) -> None:
        """Call ``hook(node, container)`` once a container is removed from its node."""
        self._removal_hooks.append(hook)

    def remove(self, node: str, client: AgentClient, container: str) -> None:
        """Remove ``container`` from ``node`` with its lease, through ``client`` (the node's).

        Removals asked on one node while a call to it is under way are sent together in
        the next RemoveContainers call, as group commit does (no timer: a lone removal
        goes at once, under load the groups grow by themselves); each gets its own
        outcome (AgentNotFoundError and the like). An agent without RemoveContainers
        (UNIMPLEMENTED) is sent one RemoveContainer each, from then on.
        """
        if node in self._one_by_one:
            client.remove_container(container, release_lease=True)
        else:
            self._batched(self._removals, node, container, lambda group: self._send(
                node, group, client.remove_containers,
                lambda one: client.remove_container(one, release_lease=True), self._one_by_one))
        self.removed(node, container)

    def start(self, node: str, client: AgentClient, request: StartContainerRequest
              ) -> ContainerStatus:
        """Start the container ``request`` describes on ``node``, through ``client`` (the
        node's): its status as the agent answered, or the AgentError of that start.

        Starts asked of one node while a call to it is under way are sent together in the
        next StartContainers call, as :meth:`remove` sends removals; each gets its own
        outcome. A call that fails as a whole fails each of its starts (a transport error:
        each caller looks for its container, as after a lone start's). An agent without
        StartContainers (UNIMPLEMENTED) is sent one StartContainer each, from then on.
        """
        if node in self._starts_one_by_one:
            return client.start(request)
        status: ContainerStatus = self._batched(
            self._starts, node, request, lambda group: self._send(
                node, group, client.start_containers, client.start, self._starts_one_by_one))
        return status

    def _batched(self, batches: dict[str, _NodeBatch], node: str, request: Any,
                 send: Callable[[list[_Asked]], None]) -> Any:
        """``request``'s result, sent by ``send`` with the others of its kind asked of
        ``node`` meanwhile: the first to get the node's sending lock sends every request
        waiting; those asked during that call go together in the next (no timer: a lone
        request goes at once, under load the groups grow by themselves)."""
        asked = _Asked(request)
        with self._lock:
            batch = batches.setdefault(node, _NodeBatch())
            batch.pending.append(asked)
        with batch.sending:
            if not asked.done:
                with self._lock:
                    group, batch.pending = batch.pending, []
                try:
                    send(group)
                except Exception as exc:  # unforeseen: every request of the group hears it
                    for other in group:
                        if not other.done:
                            other.error, other.done = exc, True
        if asked.error is not None:
            raise asked.error
        return asked.result

    def _send(self, node: str, group: list[_Asked],
              together: Callable[[list[Any]], Sequence[Any]], alone: Callable[[Any], Any],
              one_by_one: set[str]) -> None:
        """Send ``group``'s requests to ``node`` in one call (``together``: each outcome, in
        order), or to an agent without that call (UNIMPLEMENTED, remembered in
        ``one_by_one``) one call ``alone`` each; each request's result or AgentError set."""
        outcomes: list[Any] = []
        if node not in one_by_one:  # (learnt perhaps while this group waited)
            try:
                outcomes = list(together([asked.request for asked in group]))
            except AgentError as exc:
                if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                    outcomes = [exc] * len(group)
                else:
                    one_by_one.add(node)
        if node in one_by_one:
            for asked in group:
                try:
                    outcomes.append(alone(asked.request))
                except AgentError as error:
                    outcomes.append(error)
        for asked, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, AgentError):
                asked.error = outcome
            else:
                asked.result = outcome
            asked.done = True

    def removed(self, node: str, container: str) -> None:
        """Note that ``container`` was removed from ``node`` (its end acknowledged)."""
        for hook in self._removal_hooks:
            hook(node, container)

    def stop(self) -> None:
        """Stop waiting: every call riding out a silent agent raises CallsStoppedError."""
        self._stopped.set()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` before trying a silent agent again; CallsStoppedError on stop."""
        if self._stopped.wait(seconds):
            raise CallsStoppedError("the orchestrator is stopping")

    def client(self, node: str) -> AgentClient:
        """Node ``node``'s current client; NodeLostError if the node is no longer registered."""
        try:
            return self._nodes.client(node)
        except AgentError:
            raise
        except FuzzError as exc:
            raise NodeLostError(f"node {node} is lost: {exc}") from None

    def ride(self, node: str, action: Callable[[AgentClient], _Result]) -> _Result:
        """``action(client)`` on node ``node``, retried while its agent is silent.

        Raises NodeLostError once the node is lost, the agent's own answer (not
        found, no room, a bad request) at once, and CallsStoppedError on :meth:`stop`.
        """
        delay = RETRY_FIRST
        while True:
            try:
                result = action(self.client(node))
            except AgentError as exc:
                if not transient(exc):
                    self._nodes.answered(node)
                    raise
                self.silence(node, exc)
                self.pause(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self._nodes.answered(node)
            return result

    def silence(self, node: str, exc: AgentError) -> None:
        """Note that node ``node``'s agent failed a call; NodeLostError once it is lost."""
        reason = self._nodes.silent(node, str(exc))
        if reason is not None:
            raise NodeLostError(reason)

    def release_held(self, node: str, holder: str) -> None:
        """Release the leases on ``node`` held by ``holder``: what a start that the agent's
        death cut short (lease granted, container not started) leaves behind."""
        for lease in self.ride(node, lambda client: client.list_leases()):
            if lease.holder == holder:
                with contextlib.suppress(AgentNotFoundError):
                    self.ride(node, methodcaller("release_lease", lease.id))

    def leave(self, node: str, container: str, lease: str) -> None:
        """Remember to remove ``container`` (and release ``lease``) once ``node`` answers."""
        with self._lock:
            self._leftovers.setdefault(node, {})[container] = lease

    def leftovers(self) -> dict[str, dict[str, str]]:
        """What is still to be removed, by node."""
        with self._lock:
            return {node: dict(items) for node, items in self._leftovers.items()}

    def find_orphans(self, prefix: str, live: Callable[[], set[str]]) -> None:
        """Leave for the sweep what this orchestrator made on any node and no attempt owns.

        ``prefix`` starts the id of every container this orchestrator makes (and the
        holder of its leases); ``live()`` gives the containers of the attempts in flight.
        A container listed on a node and owned by no attempt after belongs to an attempt
        that is over (one that vanished with a restart of this orchestrator, or one
        retried elsewhere when its node was lost). ``live()`` is asked once at first and
        again only when a node shows a suspect, one no attempt owned when last asked
        (asked after each of 2,000 nodes, it walked every attempt 2,000 times): what is
        left for the sweep was checked against attempts asked for after its listing,
        and an attempt that ended meanwhile leaves its suspect to the next search.
        """
        keep = live()
        for record in self._nodes.records():
            node = record.name
            if self._nodes.lost(node):
                continue
            try:
                client = self.client(node)
                containers = client.list_containers()
                leases = client.list_leases()
            except (AgentError, NodeLostError):
                continue
            listed = {container.id for container in containers}
            held = {lease.holder for lease in leases}
            if any(item.startswith(prefix) and item not in keep for item in listed | held):
                keep = live()  # a suspect: asked again, after the listing
            for container in containers:
                if container.id.startswith(prefix) and container.id not in keep:
                    self.leave(node, container.id, container.lease_id)
            owned = keep | listed
            for lease in leases:
                if lease.holder.startswith(prefix) and lease.holder not in owned:
                    self.leave(node, "", lease.id)

    def sweep(self) -> None:
        """Try once to stop and remove each leftover container and release its lease.

        A lost node is skipped until its agent registers again; what fails now is
        tried again at the next sweep.
        """
        for node, items in self.leftovers().items():
            if self._nodes.lost(node):
                continue
            for container, lease in items.items():
                if self._remove(node, container, lease):
                    with self._lock:
                        left = self._leftovers.get(node, {})
                        left.pop(container, None)
                        if not left:
                            self._leftovers.pop(node, None)

    def _remove(self, node: str, container: str, lease: str) -> bool:
        """Whether ``container`` and ``lease`` are gone from ``node`` now."""
        try:
            client = self.client(node)
        except NodeLostError:
            return True  # the node was deleted, and what ran there with it
        try:
            if container:
                try:
                    with contextlib.suppress(AgentNotFoundError):
                        client.cancel_container(container)  # it may still run: the task moved on
                    client.remove_container(container, release_lease=True)
                    self.removed(node, container)
                    lease = ""  # released with it
                except AgentNotFoundError:
                    pass  # it never started, or is gone: its lease may still be held
            if lease:
                with contextlib.suppress(AgentNotFoundError):
                    client.release_lease(lease)
        except AgentError:
            return False
        self._nodes.answered(node)
        return True
