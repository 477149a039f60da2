"""Running one attempt of one task on its node(s) through their agents.

For each rank (one per node; more than one for a multinode job): acquire a lease,
pull the image, start the container, then wait for every rank, renewing the leases
while they run. Once all ranks have ended their output is copied into the
orchestrator's log directory (so it outlives the node), the outcome is recorded,
the containers are removed and the leases given back. Every step is reported to
the runner through :class:`TaskEvents` before the next one begins, so a restarted
orchestrator knows which containers to look for (:meth:`TaskExecutor.adopt`), or
that the attempt has ended already (:meth:`TaskExecutor.conclude`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from fuzz.api.substrate_pb2 import ContainerStatus
from fuzz.clients.agent import (
    AgentClient,
    AgentError,
    AgentNotFoundError,
    AgentResourceExhaustedError,
)
from fuzz.orchestrate.cluster.nodes import NodeDirectory
from fuzz.orchestrate.states import TaskState
from fuzz.resources import ResourceRequest

LEASE_TTL = 600.0
WAIT_SLICE = 15.0
STREAMS = ("stdout", "stderr")
ENDED = ("exited", "failed")  # container states with an outcome


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to run one attempt of a task."""

    workflow_id: str
    key: str
    nodes: tuple[str, ...]
    containers: tuple[str, ...]
    image: str
    credentials: tuple[str, str] | None
    request: ResourceRequest
    argv: tuple[str, ...]
    env: tuple[tuple[str, ...], ...]  # one environment per rank
    cwd: str
    mounts: tuple[tuple[str, str, bool], ...]
    timeout_seconds: float
    uid: int
    gid: int
    log_paths: tuple[Path, Path]  # where stdout and stderr are kept
    leases: tuple[str, ...] = ()
    log_limit_bytes: int = 0  # of each of stdout and stderr, on the node; 0: unlimited
    addresses: tuple[str, ...] = ()  # each rank's job network address ("": the node's network)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: SUCCEEDED, FAILED or CANCELED, with the exit code and why."""

    state: TaskState
    exit_code: int = 0
    error: str = ""


class TaskEvents(Protocol):
    """What the runner hears from a running attempt."""

    def leased(self, workflow_id: str, key: str, leases: Sequence[str]) -> None:
        """The attempt holds these leases (one per rank)."""

    def pulling(self, workflow_id: str, image: str) -> None:
        """The image is being pulled on a node."""

    def pulled(self, workflow_id: str, image: str, digest: str) -> None:
        """The image is on the node, at ``digest``."""

    def image_failed(self, workflow_id: str, image: str, error: str) -> None:
        """The image could not be pulled."""

    def running(self, workflow_id: str, key: str, leases: Sequence[str]) -> None:
        """Every rank's container was started, under these leases."""

    def requeue(self, workflow_id: str, key: str, reason: str) -> None:
        """The attempt could not start for a passing reason; queue the task again."""

    def ended(self, workflow_id: str, key: str, outcome: Outcome) -> None:
        """The attempt ended with ``outcome``: record it before its containers go."""

    def finished(self, workflow_id: str, key: str, outcome: Outcome) -> None:
        """The attempt ended, and its containers are gone."""


def describe_end(status: Any, timeout_seconds: float) -> Outcome:
    """An agent's final ContainerStatus as an :class:`Outcome`."""
    if status.cancelled:
        return Outcome(TaskState.CANCELED, status.exit_code, "cancelled")
    if status.timed_out:
        return Outcome(TaskState.FAILED, status.exit_code,
                       f"timed out after {timeout_seconds:g}s (policy.timeout.execute)")
    if status.oom_killed:
        return Outcome(TaskState.FAILED, status.exit_code,
                       "killed: out of memory (resource.memory)")
    if status.error:
        return Outcome(TaskState.FAILED, status.exit_code, status.error)
    if status.signal:
        return Outcome(TaskState.FAILED, 128 + status.signal, f"killed by signal {status.signal}")
    if status.exit_code != 0:
        return Outcome(TaskState.FAILED, status.exit_code, f"exit code {status.exit_code}")
    return Outcome(TaskState.SUCCEEDED)


class TaskExecutor:
    """Runs attempts through the agents of :class:`NodeDirectory`."""

    def __init__(self, nodes: NodeDirectory, events: TaskEvents) -> None:
        """Report to ``events``."""
        self._nodes = nodes
        self._events = events
        self._pulled: set[tuple[str, str]] = set()  # (node, image) pulled by this process

    # --- starting ------------------------------------------------------------------

    def launch(self, plan: LaunchPlan) -> None:
        """Lease, pull, start and supervise ``plan``'s containers (blocks until they end).

        A one-node task leases and starts in one call to its agent. A multinode
        task first leases every node (all or none), then starts each rank.
        """
        if len(plan.nodes) > 1:
            acquired = self._acquire(plan)
            if acquired is None:
                return
            leases = [lease_id for lease_id, _ in acquired]
            plan = _with_addresses(_with_leases(plan, leases), [a for _, a in acquired])
            self._events.leased(plan.workflow_id, plan.key, leases)
        try:
            started = []
            for rank, node in enumerate(plan.nodes):
                client = self._nodes.client(node)
                if not self._pull(plan, node, client):
                    self._release(plan)
                    self._events.finished(plan.workflow_id, plan.key,
                                          Outcome(TaskState.FAILED, 0,
                                                  f"image {plan.image}: pull failed"))
                    return
                started.append(client.start_container(
                    plan.containers[rank], plan.image,
                    plan.leases[rank] if plan.leases else "",
                    lease=None if plan.leases else plan.request, lease_ttl=LEASE_TTL,
                    args=plan.argv, env=plan.env[rank], cwd=plan.cwd, uid=plan.uid,
                    gid=plan.gid, mounts=plan.mounts, timeout_seconds=plan.timeout_seconds,
                    credentials=plan.credentials, log_limit_bytes=plan.log_limit_bytes,
                    peers=[a for other, a in enumerate(plan.addresses) if other != rank and a],
                ))
        except AgentResourceExhaustedError as exc:  # a one-node start found its node full
            self._events.requeue(plan.workflow_id, plan.key, str(exc))
            return
        except AgentError as exc:
            self._abandon(plan)
            self._events.finished(plan.workflow_id, plan.key,
                                  Outcome(TaskState.FAILED, 0, str(exc)))
            return
        if not plan.leases:
            plan = _with_leases(plan, [status.lease_id for status in started])
        self._events.running(plan.workflow_id, plan.key, plan.leases)
        self._supervise(plan, started)

    def _acquire(self, plan: LaunchPlan) -> list[tuple[str, str]] | None:
        """Every rank's lease id and job network address (all or none)."""
        leases: list[tuple[str, str]] = []
        request = plan.request
        try:
            for rank, node in enumerate(plan.nodes):
                lease = self._nodes.client(node).acquire_lease(
                    request.cores, affinity=request.affinity, memory_bytes=request.memory_bytes,
                    devices=dict(request.devices), exclusive=request.exclusive,
                    holder=plan.containers[rank], ttl_seconds=LEASE_TTL, reserve_address=True,
                )
                leases.append((lease.id, lease.address))
        except AgentError as exc:
            self._release(_with_leases(plan, [lease_id for lease_id, _ in leases]))
            if isinstance(exc, AgentResourceExhaustedError):
                self._events.requeue(plan.workflow_id, plan.key, str(exc))
            else:
                self._events.finished(plan.workflow_id, plan.key,
                                      Outcome(TaskState.FAILED, 0, str(exc)))
            return None
        return leases

    def _pull(self, plan: LaunchPlan, node: str, client: AgentClient) -> bool:
        """Pull the image on ``node`` once, reporting progress and the digest.

        Later starts skip it: starting a container resolves and pulls the image
        itself if it must (the agent caches what a tag points at briefly).
        """
        if (node, plan.image) in self._pulled:
            return True
        self._events.pulling(plan.workflow_id, plan.image)
        digest = ""
        try:
            for progress in client.pull_image(plan.image, plan.credentials):
                digest = progress.digest or digest
        except AgentError as exc:
            self._events.image_failed(plan.workflow_id, plan.image, str(exc))
            return False
        self._pulled.add((node, plan.image))
        self._events.pulled(plan.workflow_id, plan.image, digest)
        return True

    # --- after a restart -------------------------------------------------------------

    def adopt(self, plan: LaunchPlan) -> None:
        """Take over an attempt a previous orchestrator started (blocks until it ends).

        The leases come from the containers (a one-node start leases and starts in
        one call, so a lease without its container cannot be left behind). If no
        rank's container exists, nothing ran: any leases recorded go back and the
        task is queued again without counting the attempt.
        """
        leases: list[str] = []
        for rank, node in enumerate(plan.nodes):
            try:
                leases.append(self._nodes.client(node).get_container(
                    plan.containers[rank]).lease_id)
            except AgentNotFoundError:
                continue
            except AgentError as exc:
                self._events.finished(plan.workflow_id, plan.key,
                                      Outcome(TaskState.FAILED, 0, f"node {node}: {exc}"))
                return
        if not leases:
            self._release(plan)
            self._events.requeue(plan.workflow_id, plan.key, "restarted before it began")
            return
        if len(leases) < len(plan.nodes):
            self._abandon(plan)
            self._events.finished(plan.workflow_id, plan.key,
                                  Outcome(TaskState.FAILED, 0, "some ranks never started"))
            return
        plan = _with_leases(plan, leases)
        self._events.running(plan.workflow_id, plan.key, plan.leases)
        self._supervise(plan)

    def conclude(self, plan: LaunchPlan, outcome: Outcome) -> None:
        """Finish an attempt a previous orchestrator saw end with ``outcome`` but did not
        see through: remove what is left of its containers, then report the outcome."""
        self._abandon(plan)
        self._events.finished(plan.workflow_id, plan.key, outcome)

    # --- running and ending ------------------------------------------------------------

    def cancel(self, plan: LaunchPlan) -> None:
        """Ask every rank's container to stop (SIGTERM, then SIGKILL after the grace)."""
        for rank, node in enumerate(plan.nodes):
            with contextlib.suppress(AgentError):
                self._nodes.client(node).cancel_container(plan.containers[rank])

    def _supervise(self, plan: LaunchPlan, started: Sequence[ContainerStatus] = ()) -> None:
        """Wait for every rank, collect the logs, clean up, report the outcome.

        ``started``: each rank's status as its start answered; a rank that had
        already ended then (a short job) is not waited for again.
        """
        outcomes: list[Outcome | None] = [None] * len(plan.nodes)
        written: list[tuple[int, int]] = [(1, 1)] * len(plan.nodes)  # unknown: fetch both
        first: list[ContainerStatus | None] = [*started] or [None] * len(plan.nodes)
        threads = [
            threading.Thread(target=self._wait_rank,
                             args=(plan, rank, outcomes, written, first[rank]), daemon=True)
            for rank in range(1, len(plan.nodes))
        ]
        for thread in threads:
            thread.start()
        self._wait_rank(plan, 0, outcomes, written, first[0])
        for thread in threads:
            thread.join()
        self._collect_logs(plan, written)
        failed = [o for o in outcomes if o is not None and o.state != TaskState.SUCCEEDED]
        final = failed[0] if failed else Outcome(TaskState.SUCCEEDED)
        if len(plan.nodes) > 1 and failed:
            rank = outcomes.index(failed[0])
            final = Outcome(final.state, final.exit_code, f"rank {rank}: {final.error}")
        self._events.ended(plan.workflow_id, plan.key, final)  # on record before they go
        self._abandon(plan)  # containers gone and leases free: the next task may start
        self._events.finished(plan.workflow_id, plan.key, final)

    def _wait_rank(self, plan: LaunchPlan, rank: int, outcomes: list[Outcome | None],
                   written: list[tuple[int, int]], status: ContainerStatus | None) -> None:
        client = self._nodes.client(plan.nodes[rank])
        container = plan.containers[rank]
        try:
            if status is None or status.state not in ENDED:
                status = client.wait_container(container, WAIT_SLICE)
            while status.state not in ENDED:  # a long job: keep its lease alive meanwhile
                with contextlib.suppress(AgentError):
                    client.renew_lease(plan.leases[rank], LEASE_TTL)
                status = client.wait_container(container, WAIT_SLICE)
        except AgentError as exc:
            outcomes[rank] = Outcome(TaskState.FAILED, 0, f"node {plan.nodes[rank]}: {exc}")
            return
        outcome = describe_end(status, plan.timeout_seconds)
        outcomes[rank] = outcome
        written[rank] = (status.stdout_bytes, status.stderr_bytes)
        if outcome.state != TaskState.SUCCEEDED and len(plan.nodes) > 1:
            self.cancel(plan)  # one rank failed: the others cannot finish alone

    def _collect_logs(self, plan: LaunchPlan, written: list[tuple[int, int]]) -> None:
        """Copy each rank's output here (streams a rank wrote nothing to are skipped)."""
        for index, (stream, path) in enumerate(zip(STREAMS, plan.log_paths, strict=True)):
            if not any(sizes[index] for sizes in written):
                path.unlink(missing_ok=True)  # an earlier attempt's; missing reads as empty
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as out:
                for rank, node in enumerate(plan.nodes):
                    if not written[rank][index]:
                        continue
                    with contextlib.suppress(AgentError):
                        for chunk in self._nodes.client(node).stream_logs(
                                plan.containers[rank], stream):
                            out.write(chunk)

    def _abandon(self, plan: LaunchPlan) -> None:
        """Remove the attempt's containers, each with its lease (best effort)."""
        for rank, node in enumerate(plan.nodes):
            try:
                self._nodes.client(node).remove_container(plan.containers[rank],
                                                          release_lease=True)
            except AgentNotFoundError:  # it never started: its lease may still be held
                if rank < len(plan.leases):
                    with contextlib.suppress(AgentError):
                        self._nodes.client(node).release_lease(plan.leases[rank])
            except AgentError:
                continue

    def _release(self, plan: LaunchPlan) -> None:
        for rank, lease in enumerate(plan.leases):
            with contextlib.suppress(AgentError):
                self._nodes.client(plan.nodes[rank]).release_lease(lease)


def _with_addresses(plan: LaunchPlan, addresses: Sequence[str]) -> LaunchPlan:
    """``plan`` with each rank's address, and ``FUZZ_NODES`` naming them when all have one.

    The ranks run in network namespaces of their own: the node names are of no
    use to them, their addresses are what MPI must be given.
    """
    if not addresses or not all(addresses):
        return replace(plan, addresses=tuple(addresses))
    nodes = f"FUZZ_NODES={','.join(addresses)}"
    env = tuple(tuple(nodes if entry.startswith("FUZZ_NODES=") else entry for entry in rank)
                for rank in plan.env)
    return replace(plan, addresses=tuple(addresses), env=env)


def _with_leases(plan: LaunchPlan, leases: Sequence[str]) -> LaunchPlan:
    return replace(plan, leases=tuple(leases))
