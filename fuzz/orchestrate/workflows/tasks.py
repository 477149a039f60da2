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
import errno
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from operator import methodcaller
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from fuzz.api.substrate_pb2 import ContainerStatus
from fuzz.clients.agent import (
    AgentClient,
    AgentError,
    AgentNotFoundError,
    AgentResourceExhaustedError,
    start_request,
)
from fuzz.orchestrate.cluster.nodes import NodeDirectory
from fuzz.orchestrate.diskspace import free_bytes
from fuzz.orchestrate.states import Readiness, TaskState
from fuzz.orchestrate.workflows.agentcalls import (
    RETRY_FIRST,
    RETRY_MAX,
    AgentCalls,
    CallsStoppedError,
    NodeLostError,
    transient,
)
from fuzz.orchestrate.workflows.endwatch import ContainerWatches, Heard, WatchUnsupportedError
from fuzz.orchestrate.workflows.mpi import (
    LAUNCH_HELPER,
    LAUNCHERS,
    WAIT_COMMAND,
    LaunchRefusedError,
    LaunchTarget,
    LaunchTokens,
    launcher_command,
    launcher_environment,
    launcher_of,
    one_machine,
    one_machine_environment,
)
from fuzz.orchestrate.workflows.multinode import (
    expand_multinode,
    multinode_environment,
    rank_hosts,
)
from fuzz.orchestrate.workflows.probes import probe_once
from fuzz.resources import MACHINE_LABEL, ResourceRequest
from fuzz.spec.fuzzfile import ReadinessProbe
from fuzz.units import format_bytes

log = logging.getLogger(__name__)

LEASE_TTL = 600.0
WAIT_SLICE = 15.0
STREAMS = ("stdout", "stderr")
START_PARALLELISM = 16  # a multinode task's ranks pulled and started at once
MPI_GRACE = 5.0  # seconds an MPI job's other ranks have to stop once one has ended
MPI_STOP_WAIT = MPI_GRACE + 10.0  # the longest wait for them before cleaning up
ENDED = ("exited", "failed")  # container states with an outcome
UNKNOWN_WRITTEN = (1, 1)  # a rank's output bytes when not known: fetch both streams


@dataclass(frozen=True)
class LaunchPlan:
    """Everything needed to run one attempt of a task."""

    workflow_id: str
    key: str
    nodes: tuple[str, ...]
    containers: tuple[str, ...]
    image: str
    credentials: tuple[str, str] | None = field(repr=False)
    request: ResourceRequest
    argv: tuple[str, ...]
    env: tuple[tuple[str, ...], ...] = field(repr=False)  # one per rank, secrets' values in
    cwd: str
    mounts: tuple[tuple[str, str, bool], ...]
    timeout_seconds: float
    uid: int
    gid: int
    log_paths: tuple[Path, Path]  # where stdout and stderr are kept
    leases: tuple[str, ...] = ()
    log_limit_bytes: int = 0  # of each of stdout and stderr, on the node; 0: unlimited
    addresses: tuple[str, ...] = ()  # each rank's job network address ("": the node's network)
    files: tuple[tuple[str, bytes], ...] = ()  # (path, content) placed in every rank's container
    implementation: str = ""  # a multinode job's multinode.implementation
    slots: int = 0  # a multinode job's processes per node
    launch_token: str = ""  # an MPI job's launch token (fuzz.orchestrate.workflows.mpi)
    machines: tuple[str, ...] = ()  # each rank's node's machine (MACHINE_LABEL; "": unknown)

    @property
    def launcher(self) -> str:
        """``openmpi`` or ``mpich`` when rank 0 runs the command under that launcher."""
        return launcher_of(self.implementation)
    expand_args: bool = False  # argv's $MULTINODE_* are replaced by each rank's values
    # the opened values of the job's env secrets (variable, value), kept for a re-plan
    secret_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    service: bool = False  # a service's task: its address is reserved, its readiness probed
    probe: ReadinessProbe | None = None  # a service's readiness probe (None: ready at once)
    service_hosts: tuple[str, ...] = ()  # /etc/hosts lines naming the workflow's services
    service_peers: tuple[str, ...] = ()  # peer entries: its services' ports, or its own
    sandbox: str = ""  # a task array's task: WORKFLOW/JOB, its node's task sandbox


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: SUCCEEDED, FAILED or CANCELED, with the exit code and why;
    ``final``: a service's that must not be restarted (its readiness probe gave up)."""

    state: TaskState
    exit_code: int = 0
    error: str = ""
    final: bool = False


_Ended = tuple[Outcome, tuple[int, int]]  # how a rank ended, and what it wrote


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

    def running(self, workflow_id: str, key: str, leases: Sequence[str],
                addresses: Sequence[str] = ()) -> None:
        """Every rank's container was started, under these leases (at these job network
        addresses, when they were reserved: a service's)."""

    def readiness(self, workflow_id: str, key: str, readiness: Readiness, error: str) -> None:
        """A service's readiness changed, or its probe failed again (``error``: why)."""

    def requeue(self, workflow_id: str, key: str, reason: str) -> None:
        """The attempt could not start for a passing reason; queue the task again."""

    def ended(self, workflow_id: str, key: str, outcome: Outcome) -> None:
        """The attempt ended with ``outcome``: record it before its containers go."""

    def finished(self, workflow_id: str, key: str, outcome: Outcome) -> None:
        """The attempt ended, and its containers are gone."""

    def resume(self, action: Callable[[LaunchPlan], None], plan: LaunchPlan) -> None:
        """Run ``action(plan)`` on a worker, as an attempt is run: the rest of an attempt
        that waited for its container's end without one."""


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
    """Runs attempts through the agents of :class:`NodeDirectory`.

    Every call rides out a restarting agent (:mod:`~fuzz.orchestrate.workflows.agentcalls`):
    an attempt whose node stays silent past the grace period ends failed with the
    reason (and is retried elsewhere if its policy allows); what it left on the node
    is removed once the node answers again.
    """

    def __init__(self, nodes: NodeDirectory, events: TaskEvents, log_headroom: int = 0) -> None:
        """Report to ``events``; a copy of a task's logs leaves ``log_headroom`` bytes free
        on its disk (the database's, when it shares that disk)."""
        self._nodes = nodes
        self._log_headroom = log_headroom
        self._calls = AgentCalls(nodes)
        self._ends = ContainerWatches(self._calls)
        self._calls.on_removal(self._ends.forget)
        self._events = events
        self._pulled: dict[tuple[str, str], str] = {}  # (node, image) -> digest, pulled here
        self._pulls: dict[tuple[str, str], threading.Lock] = {}  # (node, image): one pull at once
        self._pulls_lock = threading.Lock()
        self.launch_tokens = LaunchTokens()  # of the MPI attempts in flight

    def stop(self) -> None:
        """The orchestrator stops: attempts waiting for a silent agent give up unreported
        (:class:`CallsStoppedError`), to be re-adopted by the next orchestrator."""
        self._calls.stop()
        self._ends.stop()

    def sweep(self, orphans: tuple[str, Callable[[], set[str]]] | None = None) -> None:
        """Remove what attempts left on silent nodes that answer again, and look again
        at the nodes that refused a lease.

        With ``orphans`` (this orchestrator's container id prefix, and the containers
        of the attempts in flight) every node is first searched for containers and
        leases of this orchestrator that no attempt owns (see
        :meth:`AgentCalls.find_orphans`).
        """
        if orphans is not None:
            self._calls.find_orphans(*orphans)
        self._calls.sweep()
        for node in self._nodes.refusing():
            self._nodes.recheck(node)
        self._nodes.close_retired()

    # --- starting ------------------------------------------------------------------

    def launch(self, plan: LaunchPlan) -> None:
        """Lease, pull, start and supervise ``plan``'s containers (blocks until they end;
        a one-node job's returns once it runs, its end seen through later: :meth:`_supervise`).

        A one-node task leases and starts in one call to its agent. A multinode
        task first leases every node (all or none), then starts each rank; an MPI
        job's rank 0 (its launcher) last, once the ranks it enters are there.
        """
        try:
            launcher = plan.launcher
        except LaunchRefusedError as exc:
            self._events.finished(plan.workflow_id, plan.key,
                                  Outcome(TaskState.FAILED, 0, str(exc)))
            return
        if len(plan.nodes) > 1 or plan.service:  # a service's address is known before it runs
            acquired = self._acquire(plan)
            if acquired is None:
                return
            leases = [lease_id for lease_id, _ in acquired]
            addresses = [address for _, address in acquired]
            plan = _with_leases(plan, leases)
            plan = _with_addresses(plan, addresses) if len(plan.nodes) > 1 else \
                replace(plan, addresses=tuple(addresses))
            self._events.leased(plan.workflow_id, plan.key, leases)
            if launcher and not all(plan.addresses):
                self._release(plan)
                self._events.finished(plan.workflow_id, plan.key, Outcome(
                    TaskState.FAILED, 0, "an MPI job needs the job network: its nodes' pool "
                    "runs jobs on the host network (network: host)"))
                return
            if _gets_launch_socket(plan):
                plan = replace(plan, machines=self._machines(plan.nodes),
                               launch_token=self.launch_tokens.issue(
                                   LaunchTarget(plan.nodes, plan.containers, plan.addresses)))
        try:
            self._start_and_supervise(plan)
        finally:
            if plan.launch_token:
                self.launch_tokens.revoke(plan.launch_token)

    def _machines(self, nodes: Sequence[str]) -> tuple[str, ...]:
        """The machine each of ``nodes`` is on, as its agent reports it ("": unknown)."""
        known = {record.name: record.labels.get(MACHINE_LABEL, "")
                 for record in self._nodes.records()}
        return tuple(known.get(node, "") for node in nodes)

    def _start_and_supervise(self, plan: LaunchPlan) -> None:
        """Pull and start every rank, then supervise them.

        The ranks of a multinode task are pulled and started side by side (at most
        :data:`START_PARALLELISM` at once): a 32-node job must not pull 32 times in a
        row. An MPI job's rank 0, its launcher, starts once all the others run.
        """
        started: dict[int, ContainerStatus] = {}
        count = len(plan.nodes)
        waves = [range(1, count), [0]] if plan.launch_token else [range(count)]
        try:
            for wave in waves:
                started.update(self._start_ranks(plan, wave))
        except _PullFailedError as exc:
            self._abandon(plan)
            error = str(exc)
            said = error if plan.image in error else f"image {plan.image}: {error}"
            self._events.finished(plan.workflow_id, plan.key, Outcome(
                TaskState.FAILED, 0, f"pull failed: {said}"))
            return
        except AgentResourceExhaustedError as exc:  # a one-node start found its node full
            self._nodes.refused(plan.nodes[0])
            self._events.requeue(plan.workflow_id, plan.key, str(exc))
            return
        except (AgentError, NodeLostError) as exc:
            self._abandon(plan)
            self._events.finished(plan.workflow_id, plan.key,
                                  Outcome(TaskState.FAILED, 0, str(exc)))
            return
        statuses = [started[rank] for rank in range(count)]
        if not plan.leases:
            plan = _with_leases(plan, [status.lease_id for status in statuses])
        self._events.running(plan.workflow_id, plan.key, plan.leases, plan.addresses)
        self._supervise(plan, statuses)

    def _start_ranks(self, plan: LaunchPlan, ranks: Sequence[int]
                     ) -> dict[int, ContainerStatus]:
        """Pull and start ``ranks`` side by side; the first failure is raised once all
        have finished trying (what started is removed by the caller's abandon)."""
        def one(rank: int) -> ContainerStatus:
            error = self._pull(plan, plan.nodes[rank])
            if error is not None:
                raise _PullFailedError(error)
            return self._start(plan, rank)

        if len(ranks) <= 1:
            return {rank: one(rank) for rank in ranks}
        with ThreadPoolExecutor(min(len(ranks), START_PARALLELISM),
                                thread_name_prefix="rank-start") as pool:
            futures = {rank: pool.submit(one, rank) for rank in ranks}
        for future in futures.values():
            failure = future.exception()
            if failure is not None:
                raise failure
        return {rank: future.result() for rank, future in futures.items()}

    def _start(self, plan: LaunchPlan, rank: int) -> ContainerStatus:
        """Start rank ``rank``'s container, or find it started.

        A start whose answer was lost (the agent died meanwhile) may have started the
        container: once the agent answers again it is looked up before starting anew.
        """
        node, container = plan.nodes[rank], plan.containers[rank]
        unsure = False
        delay = RETRY_FIRST
        while True:
            if unsure:
                try:
                    found: ContainerStatus = self._calls.ride(
                        node, lambda client: client.get_container(container))
                    return found
                except AgentNotFoundError:  # it never started
                    if not plan.leases:
                        self._calls.release_held(node, container)
            args, env = _rank_command(plan, rank)
            request = start_request(
                container, plan.image, plan.leases[rank] if plan.leases else "",
                lease=None if plan.leases else plan.request, lease_ttl=LEASE_TTL,
                args=args, env=env, cwd=plan.cwd, uid=plan.uid,
                gid=plan.gid, mounts=plan.mounts, timeout_seconds=plan.timeout_seconds,
                credentials=plan.credentials, log_limit_bytes=plan.log_limit_bytes,
                peers=[*(a for other, a in enumerate(plan.addresses)
                         if other != rank and a), *plan.service_peers],
                files=plan.files,
                launch_token=plan.launch_token,
                hostname=plan.addresses[rank] if plan.launch_token else "",
                hosts=[*rank_hosts(plan.key, plan.addresses), *plan.service_hosts],
                sandbox=plan.sandbox,
            )
            try:
                status = self._calls.start(node, self._calls.client(node), request)
            except AgentError as exc:
                if not transient(exc):
                    raise
                self._calls.silence(node, exc)
                unsure = True
                self._calls.pause(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self._nodes.answered(node)
            return status

    def _acquire(self, plan: LaunchPlan) -> list[tuple[str, str]] | None:
        """Every rank's lease id and job network address (all or none)."""
        leases: list[tuple[str, str]] = []
        request = plan.request
        try:
            for rank, node in enumerate(plan.nodes):
                lease = self._calls.client(node).acquire_lease(
                    request.cores, affinity=request.affinity, memory_bytes=request.memory_bytes,
                    devices=dict(request.devices), exclusive=request.exclusive,
                    holder=plan.containers[rank], ttl_seconds=LEASE_TTL, reserve_address=True,
                    sockets=request.sockets, threads=request.threads,
                )
                leases.append((lease.id, lease.address))
        except (AgentError, NodeLostError) as exc:
            self._release(_with_leases(plan, [lease_id for lease_id, _ in leases]))
            node = plan.nodes[len(leases)]
            if isinstance(exc, AgentResourceExhaustedError):
                self._nodes.refused(node)
            elif isinstance(exc, AgentError) and transient(exc):
                with contextlib.suppress(NodeLostError):
                    self._calls.silence(node, exc)  # skipped until it answers again
            else:
                self._events.finished(plan.workflow_id, plan.key,
                                      Outcome(TaskState.FAILED, 0, str(exc)))
                return None
            self._events.requeue(plan.workflow_id, plan.key, str(exc))
            return None
        return leases

    def _pull(self, plan: LaunchPlan, node: str) -> str | None:
        """Pull the image on ``node`` once, reporting progress and the digest; why it
        failed (the image row's error, which the task's carries too), None when pulled.

        Later starts skip it: starting a container resolves and pulls the image
        itself if it must (the agent caches what a tag points at briefly). Their
        workflow's image is reported pulled all the same, at the digest seen. The
        starts that come while it is pulled wait for that pull (a round's 64 tasks on a
        new node were 64 pulls of one image), and try again if it failed.
        """
        with self._pulls_lock:
            pulling = self._pulls.setdefault((node, plan.image), threading.Lock())
        with pulling:
            return self._pull_once(plan, node)

    def _pull_once(self, plan: LaunchPlan, node: str) -> str | None:
        """:meth:`_pull`'s work, one pull of an image on a node at a time."""
        if (node, plan.image) in self._pulled:
            self._events.pulled(plan.workflow_id, plan.image, self._pulled[node, plan.image])
            return None
        self._events.pulling(plan.workflow_id, plan.image)

        def pull(client: AgentClient) -> str:
            digest = ""
            for progress in client.pull_image(plan.image, plan.credentials):
                digest = progress.digest or digest
            return digest

        try:
            digest = self._calls.ride(node, pull)
        except AgentError as exc:
            self._events.image_failed(plan.workflow_id, plan.image, str(exc))
            return str(exc)
        self._pulled[node, plan.image] = digest
        self._events.pulled(plan.workflow_id, plan.image, digest)
        return None

    # --- after a restart -------------------------------------------------------------

    def adopt(self, plan: LaunchPlan, running: bool = False) -> None:
        """Take over an attempt a previous orchestrator started (blocks until it ends, as
        :meth:`launch` does).

        The leases come from the containers (a one-node start leases and starts in
        one call, so a lease without its container cannot be left behind). If no
        rank's container exists and the attempt was ``running``, its containers
        vanished: the attempt failed (retried if its policy allows). If none exists
        and it was still starting, nothing ran: any leases recorded go back and the
        task is queued again without counting the attempt.
        """
        leases: list[str] = []
        missing: list[str] = []
        for rank, node in enumerate(plan.nodes):
            container = plan.containers[rank]
            try:
                leases.append(self._calls.ride(
                    node, methodcaller("get_container", container)).lease_id)
            except AgentNotFoundError:
                missing.append(node)
            except (AgentError, NodeLostError) as exc:
                self._abandon(plan)
                self._events.finished(plan.workflow_id, plan.key,
                                      Outcome(TaskState.FAILED, 0, _on_node(node, exc)))
                return
        if not leases and not running:
            self._release(plan)
            if len(plan.nodes) == 1 and not plan.leases:  # leased with its start, if at all
                with contextlib.suppress(AgentError, NodeLostError):
                    self._calls.release_held(plan.nodes[0], plan.containers[0])
            self._events.requeue(plan.workflow_id, plan.key, "restarted before it began")
            return
        if missing:
            self._abandon(plan)
            error = f"its container is gone from node {missing[0]}" if running else \
                "some ranks never started"
            self._events.finished(plan.workflow_id, plan.key,
                                  Outcome(TaskState.FAILED, 0, error))
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
        """Ask every rank's container to stop (SIGTERM, then SIGKILL after the grace);
        a restarting agent is asked once it is back."""
        for rank, node in enumerate(plan.nodes):
            with contextlib.suppress(AgentError, NodeLostError):
                self._calls.ride(node, methodcaller("cancel_container", plan.containers[rank]))

    def _supervise(self, plan: LaunchPlan, started: Sequence[ContainerStatus] = ()) -> None:
        """Wait for every rank, collect the logs, clean up, report the outcome.

        ``started``: each rank's status as its start answered; a rank that had
        already ended then (a short job) is not waited for again. A service's
        readiness is probed meanwhile (an MPI service's too, in its launcher's container).
        A one-node job's attempt waits without holding its thread (:meth:`_wait_unheld`).
        """
        if len(plan.nodes) == 1 and not plan.service:
            self._wait_unheld(plan, started[0] if started else None)
            return
        prober = _Prober(self, plan) if plan.service else None
        if prober is not None:
            prober.start()
        if _is_mpi(plan):
            try:
                self._supervise_mpi(plan, started)
            finally:
                if prober is not None:
                    prober.stop()
            return
        try:
            outcomes, written = self._wait_ranks(plan, started)
        finally:
            if prober is not None:
                prober.stop()
        self._see_through(plan, outcomes, written, prober.gave_up if prober is not None else "")

    def _see_through(self, plan: LaunchPlan, outcomes: Sequence[Outcome],
                     written: Sequence[tuple[int, int]], gave_up: str = "") -> None:
        """Every rank ended with ``outcomes``, having ``written`` so much: collect the
        logs, record the outcome, remove the containers, report the attempt finished
        (``gave_up``: why a service's probe failed it)."""
        try:
            self._collect_logs(plan, written)
        except BaseException:
            self._abandon(plan)
            raise
        failed = [o for o in outcomes if o.state != TaskState.SUCCEEDED]
        final = failed[0] if failed else Outcome(TaskState.SUCCEEDED)
        if len(plan.nodes) > 1 and failed:
            rank = outcomes.index(failed[0])
            final = Outcome(final.state, final.exit_code, f"rank {rank}: {final.error}")
        if gave_up:
            final = Outcome(TaskState.FAILED, final.exit_code, gave_up, final=True)
        try:
            self._events.ended(plan.workflow_id, plan.key, final)  # on record before they go
        finally:
            self._abandon(plan)  # containers gone and leases free: the next task may start
        self._events.finished(plan.workflow_id, plan.key, final)

    # --- waiting without a thread (a one-node job) --------------------------------------

    def _wait_unheld(self, plan: LaunchPlan, status: ContainerStatus | None) -> None:
        """See a one-node job's attempt through without holding a thread while it runs.

        Its end comes on its node's watch stream (:meth:`ContainerWatches.when_ended`),
        which hands the rest (:meth:`_heard`) back to a worker through
        :meth:`TaskEvents.resume`; so does a slice of :data:`WAIT_SLICE` seconds without
        it, to ask the agent (the same steps as :meth:`_wait_rank`'s). ``status``: as
        its start answered (already ended: a short job).
        """
        ended = _ended(plan, status) if status is not None else None
        if ended is not None:
            self._see_through(plan, [ended[0]], [ended[1]])
        else:
            self._listen(plan)

    def _listen(self, plan: LaunchPlan) -> None:
        """Leave a callback on the node's watch for the end of ``plan``'s container; an
        agent without the watch is waited on by this thread, as before."""
        node, container = plan.nodes[0], plan.containers[0]
        heard: Heard = partial(self._heard_later, plan)  # a new one each time: see expire
        try:
            self._ends.when_ended(node, container, WAIT_SLICE, heard)
        except WatchUnsupportedError:
            outcomes, written = self._wait_ranks(plan, ())
            self._see_through(plan, outcomes, written)

    def _heard_later(self, plan: LaunchPlan, status: ContainerStatus | None) -> None:
        """The watch's callback (on its thread, or the slices' timer): back to a worker."""
        self._events.resume(partial(self._heard, status), plan)

    def _heard(self, status: ContainerStatus | None, plan: LaunchPlan) -> None:
        """The container's end came (``status``), or a slice passed without it (None):
        ask the agent; once ended see the attempt through, else renew and listen again."""
        node, container = plan.nodes[0], plan.containers[0]
        if status is not None:
            ended = _ended(plan, status)
        else:
            ended = self._step(plan, 0, lambda: self._calls.ride(
                node, lambda client: client.get_container(container)))
        if ended is not None:
            self._see_through(plan, [ended[0]], [ended[1]])
            return
        self._renew(plan, 0)  # a long job: keep its lease alive meanwhile
        self._listen(plan)

    def _step(self, plan: LaunchPlan, rank: int, wait: Callable[[], ContainerStatus]
              ) -> _Ended | None:
        """One wait for rank ``rank``'s end (``wait``): how the rank ended, and what it
        wrote; None while it runs. Its node's answers (not found, a lost node) are ends."""
        node = plan.nodes[rank]
        try:
            status = wait()
        except AgentNotFoundError:
            return Outcome(TaskState.FAILED, 0, f"its container is gone from node {node}"), \
                UNKNOWN_WRITTEN
        except (AgentError, NodeLostError) as exc:
            return Outcome(TaskState.FAILED, 0, _on_node(node, exc)), UNKNOWN_WRITTEN
        return _ended(plan, status)

    # --- waiting with a thread a rank ---------------------------------------------------

    def _wait_ranks(self, plan: LaunchPlan, started: Sequence[ContainerStatus]
                    ) -> tuple[list[Outcome], list[tuple[int, int]]]:
        """Wait for every rank: how each ended, and what each wrote (what is left on the
        nodes is removed by the caller); CallsStoppedError when the orchestrator stops."""
        outcomes: list[Outcome | None] = [None] * len(plan.nodes)
        written: list[tuple[int, int]] = [UNKNOWN_WRITTEN] * len(plan.nodes)
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
        ended = [outcome for outcome in outcomes if outcome is not None]
        if len(ended) < len(outcomes):
            raise CallsStoppedError("the orchestrator is stopping")
        return ended, written

    def probe(self, plan: LaunchPlan) -> str | None:
        """Try ``plan``'s readiness probe once in its rank 0 container: why it failed, None
        when it passed."""
        assert plan.probe is not None
        try:
            return probe_once(self._calls.client(plan.nodes[0]), plan.containers[0], plan.probe)
        except (AgentError, NodeLostError) as exc:
            return str(exc)

    def report_readiness(self, plan: LaunchPlan, readiness: Readiness, error: str) -> None:
        """Tell the runner how ``plan``'s service stands."""
        self._events.readiness(plan.workflow_id, plan.key, readiness, error)

    def _supervise_mpi(self, plan: LaunchPlan, started: Sequence[ContainerStatus]) -> None:
        """Supervise an MPI job: one program, whose end is its launcher's (rank 0's).

        The first rank to end decides: rank 0's end is the job's outcome; any other
        rank's end (its container gone, its node silent, killed) fails the job, for
        MPI cannot go on without it. Either way the other ranks are stopped at once,
        nobody waits out a silent node's grace period, and what a silent node holds
        is left to the sweep (removed once it answers again).
        """
        count = len(plan.nodes)
        outcomes: list[Outcome | None] = [None] * count
        written: list[tuple[int, int]] = [(0, 0)] * count
        first: list[ContainerStatus | None] = [*started] or [None] * count
        decided: list[int] = []
        lock = threading.Lock()

        def watch(rank: int) -> None:
            try:
                outcomes[rank], written[rank] = self._watch_rank(plan, rank, first[rank])
            except CallsStoppedError:
                return
            with lock:
                deciding = not decided
                decided.append(rank)
            if deciding:
                self._stop_ranks(plan, skip=rank)

        threads = [threading.Thread(target=watch, args=(rank,), daemon=True)
                   for rank in range(1, count)]
        for thread in threads:
            thread.start()
        watch(0)
        for thread in threads:
            thread.join(MPI_STOP_WAIT)
        if not decided:
            raise CallsStoppedError("the orchestrator is stopping")
        final = _mpi_outcome(decided[0], outcomes[decided[0]])
        try:
            self._collect_logs(plan, written)
            self._events.ended(plan.workflow_id, plan.key, final)  # on record before they go
        finally:
            self._abandon(plan, patient=False)
        self._events.finished(plan.workflow_id, plan.key, final)

    def _watch_rank(self, plan: LaunchPlan, rank: int, status: ContainerStatus | None
                    ) -> tuple[Outcome, tuple[int, int]]:
        """How an MPI job's rank ``rank`` ended, and what it wrote; a node that stops
        answering ends it at once (no riding out)."""
        node, container = plan.nodes[rank], plan.containers[rank]
        try:
            while status is None or status.state not in ENDED:
                if status is not None:
                    self._renew(plan, rank)
                status = self._calls.client(node).wait_container(container, WAIT_SLICE)
        except AgentNotFoundError:
            return Outcome(TaskState.FAILED, 0, f"its container is gone from node {node}"), (0, 0)
        except AgentError as exc:
            self._calls.pause(0)  # CallsStoppedError when the orchestrator stops
            if transient(exc):
                with contextlib.suppress(NodeLostError):
                    self._calls.silence(node, exc)
                return Outcome(TaskState.FAILED, 0,
                               f"node {node} stopped answering ({exc})"), (0, 0)
            return Outcome(TaskState.FAILED, 0, _on_node(node, exc)), (0, 0)
        except NodeLostError as exc:
            return Outcome(TaskState.FAILED, 0, str(exc)), (0, 0)
        return (describe_end(status, plan.timeout_seconds),
                (status.stdout_bytes, status.stderr_bytes))

    def _stop_ranks(self, plan: LaunchPlan, skip: int) -> None:
        """Ask every rank's container but ``skip``'s to stop, once each (no riding out)."""
        for rank, node in enumerate(plan.nodes):
            if rank != skip:
                with contextlib.suppress(AgentError, NodeLostError):
                    self._calls.client(node).cancel_container(plan.containers[rank], MPI_GRACE)

    def _wait_rank(self, plan: LaunchPlan, rank: int, outcomes: list[Outcome | None],
                   written: list[tuple[int, int]], status: ContainerStatus | None) -> None:
        node, container = plan.nodes[rank], plan.containers[rank]
        ended = _ended(plan, status) if status is not None else None
        waited = False
        try:
            while ended is None:
                if waited:  # a long job: keep its lease alive meanwhile
                    self._renew(plan, rank)
                ended = self._step(plan, rank, lambda: self._await_end(node, container))
                waited = True
        except CallsStoppedError:
            return  # no outcome: _supervise gives up too
        outcomes[rank], written[rank] = ended
        if ended[0].state != TaskState.SUCCEEDED and len(plan.nodes) > 1:
            self.cancel(plan)  # one rank failed: the others cannot finish alone

    def _await_end(self, node: str, container: str) -> ContainerStatus:
        """``container``'s status once it ended, or after :data:`WAIT_SLICE` seconds.

        The end comes on the node's watch stream (:mod:`.endwatch`); a slice without
        one asks the agent (a long job, a broken stream, a vanished container: NOT_FOUND,
        a silent node ridden out). An agent without the stream is waited on as before.
        """
        try:
            ended = self._ends.wait(node, container, WAIT_SLICE)
        except WatchUnsupportedError:
            status: ContainerStatus = self._calls.ride(
                node, lambda client: client.wait_container(container, WAIT_SLICE))
            return status
        if ended is not None:
            return ended
        status = self._calls.ride(node, lambda client: client.get_container(container))
        return status

    def _renew(self, plan: LaunchPlan, rank: int) -> None:
        """Renew rank ``rank``'s lease (a silent agent is waited for by the next wait)."""
        with contextlib.suppress(AgentError, NodeLostError):
            self._calls.client(plan.nodes[rank]).renew_lease(plan.leases[rank], LEASE_TTL)

    def _collect_logs(self, plan: LaunchPlan, written: Sequence[tuple[int, int]]) -> None:
        """Copy each rank's output here, rank 0's to ``plan.log_paths`` and each other
        rank's beside it (:func:`rank_log_path`); streams a rank wrote nothing to are skipped.

        The copy is a convenience, never the task's outcome: when the log directory's
        disk is full (or unwritable) what was copied is kept, one line says what was
        lost, and the attempt ends as its containers did.
        """
        def collect(rank: int) -> None:
            for index, (stream, first) in enumerate(zip(STREAMS, plan.log_paths, strict=True)):
                path = rank_log_path(first, rank)
                try:
                    if not written[rank][index]:
                        path.unlink(missing_ok=True)  # an earlier attempt's; missing: empty
                        continue
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with open(path, "wb") as out:
                        self._copy_log(plan, rank, stream, out)
                except OSError as exc:
                    log.warning("the %s of task %s of %s is incomplete in %s: %s", stream,
                                plan.key, plan.workflow_id, path, exc.strerror or exc)

        _per_rank(plan, collect)

    def _copy_log(self, plan: LaunchPlan, rank: int, stream: str, out: BinaryIO) -> None:
        """Write rank ``rank``'s ``stream`` to ``out``; a copy cut short by a restarting
        agent goes on from where it stopped."""

        def copy(client: AgentClient) -> None:
            for chunk in client.stream_logs(plan.containers[rank], stream, offset=out.tell()):
                self._leave_headroom(out, len(chunk))
                out.write(chunk)

        with contextlib.suppress(AgentError, NodeLostError):
            self._calls.ride(plan.nodes[rank], copy)

    def _leave_headroom(self, out: BinaryIO, size: int) -> None:
        """OSError(ENOSPC) when writing ``size`` more bytes to ``out`` would leave less than
        the headroom free on its disk: a job's output must not take the room kept for the
        database to record how the job ended."""
        if not self._log_headroom:
            return
        out.flush()
        if free_bytes(Path(out.name)) - size < self._log_headroom:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (below the "
                          f"{format_bytes(self._log_headroom)} kept for the database, "
                          "orchestrator.disk.reserve)")

    def _abandon(self, plan: LaunchPlan, patient: bool = True) -> None:
        """Remove the attempt's containers, each with its lease.

        What a lost node still holds is removed once it answers again; not
        ``patient``: so is what any node fails to remove at the first try. The ranks of a
        multinode task are removed side by side (:func:`_per_rank`).
        """
        def remove(rank: int) -> None:
            node, container = plan.nodes[rank], plan.containers[rank]
            lease = plan.leases[rank] if rank < len(plan.leases) else ""
            if not patient:
                try:
                    self._calls.remove(node, self._calls.client(node), container)
                except AgentNotFoundError:
                    if lease:
                        self._calls.leave(node, "", lease)
                except (AgentError, NodeLostError):
                    self._calls.leave(node, container, lease)
                return
            try:
                self._calls.ride(
                    node, lambda client: self._calls.remove(node, client, container))
            except AgentNotFoundError:  # it never started: its lease may still be held
                if lease:
                    with contextlib.suppress(AgentError, NodeLostError):
                        self._calls.ride(node, methodcaller("release_lease", lease))
            except NodeLostError:
                self._calls.leave(node, container, lease)
            except AgentError:
                return

        _per_rank(plan, remove)

    def _release(self, plan: LaunchPlan) -> None:
        for rank, lease in enumerate(plan.leases):
            node = plan.nodes[rank]
            try:
                self._calls.ride(node, methodcaller("release_lease", lease))
            except NodeLostError:
                self._calls.leave(node, "", lease)
            except AgentError:
                continue


def _ended(plan: LaunchPlan, status: ContainerStatus) -> _Ended | None:
    """How a rank whose container is at ``status`` ended, and what it wrote; None while it
    runs."""
    if status.state not in ENDED:
        return None
    return (describe_end(status, plan.timeout_seconds),
            (status.stdout_bytes, status.stderr_bytes))


def _gets_launch_socket(plan: LaunchPlan) -> bool:
    """Whether ``plan``'s containers get the launch helper and socket: an MPI job's, whose
    launcher needs them, and a ``generic`` one's, whose own launcher may (as
    ``MULTINODE_SSH_WRAPPER``); only on the job network, where each rank has an address."""
    return (len(plan.nodes) > 1 and plan.implementation in (*LAUNCHERS, "generic")
            and bool(plan.addresses) and all(plan.addresses))


def _is_mpi(plan: LaunchPlan) -> bool:
    """Whether ``plan`` is one MPI program over several nodes (rank 0 launches)."""
    try:
        return bool(plan.launcher) and len(plan.nodes) > 1
    except LaunchRefusedError:
        return False


def _mpi_outcome(rank: int, outcome: Outcome | None) -> Outcome:
    """An MPI job's outcome, decided by ``rank``, the first of its ranks to end."""
    if outcome is None:
        outcome = Outcome(TaskState.FAILED, 0, "no outcome")
    if outcome.state == TaskState.CANCELED:  # only fuzz cancels a rank: the job was cancelled
        return outcome
    if rank == 0:
        return outcome if outcome.state == TaskState.SUCCEEDED else Outcome(
            outcome.state, outcome.exit_code, f"rank 0 (the launcher): {outcome.error}")
    error = outcome.error if outcome.state != TaskState.SUCCEEDED else "it ended"
    return Outcome(TaskState.FAILED, outcome.exit_code,
                   f"rank {rank} ended before the launcher, so the MPI job cannot go on: {error}")


def _rank_command(plan: LaunchPlan, rank: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Rank ``rank``'s command and environment.

    An MPI job's rank 0 runs the command under its launcher, the other ranks wait
    to be entered; a job of one node runs the launcher over its own slots alone.
    Every other job's ranks all run the command as it is.
    """
    try:
        launcher = plan.launcher
    except LaunchRefusedError:
        launcher = ""
    argv = expand_multinode(plan.argv, plan.env[rank]) if plan.expand_args else plan.argv
    if not launcher:
        return argv, plan.env[rank]
    if rank > 0:
        return WAIT_COMMAND, plan.env[rank]
    addresses = plan.addresses if plan.launch_token else ()
    slots = plan.slots or 1
    one_host = bool(addresses) and one_machine(launcher, plan.machines)
    environment = launcher_environment(launcher)
    if one_host:
        environment.update(one_machine_environment(addresses, slots))
    extra = tuple(f"{key}={value}" for key, value in environment.items())
    return (launcher_command(launcher, argv, addresses, slots, one_host),
            (*plan.env[rank], *extra))


def rank_log_path(path: Path, rank: int) -> Path:
    """Where rank ``rank``'s copy of a multinode task's log is kept, given rank 0's ``path``
    (``KEY.stdout``): ``KEY.node1.stdout`` for rank 1, and so on."""
    return path if rank == 0 else path.with_suffix(f".node{rank}{path.suffix}")


class _Prober:
    """Probes a service's readiness while its container runs (see docs/fuzzfile.md,
    "Services"): after ``initial-delay-seconds``, every ``period-seconds``, until it has
    passed ``success-threshold`` times in a row (READY, and probing ends) or failed
    ``failure-threshold`` times in a row (``gave_up`` says why, and its containers are
    stopped: the service fails, not restarted). Without a probe it is READY at once."""

    def __init__(self, executor: TaskExecutor, plan: LaunchPlan) -> None:
        """Probe ``plan``'s service through ``executor`` (once started)."""
        self._executor = executor
        self._plan = plan
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"probe-{plan.key}")
        self.gave_up = ""

    def start(self) -> None:
        """Begin probing (in a thread of its own)."""
        self._thread.start()

    def stop(self) -> None:
        """The container ended: stop probing."""
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        plan, probe = self._plan, self._plan.probe
        if probe is None:
            self._executor.report_readiness(plan, Readiness.READY, "")
            return
        if self._stopped.wait(probe.initial_delay_seconds):
            return
        passed = failed = 0
        while not self._stopped.is_set():
            error = self._executor.probe(plan)
            if self._stopped.is_set():
                return
            if error is None:
                passed, failed = passed + 1, 0
                if passed >= probe.success_threshold:
                    self._executor.report_readiness(plan, Readiness.READY, "")
                    return
            else:
                passed, failed = 0, failed + 1
                self._executor.report_readiness(plan, Readiness.STARTING, error)
                if failed >= probe.failure_threshold:
                    self.gave_up = (f"readiness probe failed {failed} times in a row "
                                    f"(failure-threshold): {error}")
                    self._executor.cancel(plan)
                    return
            self._stopped.wait(probe.period_seconds)


class _PullFailedError(Exception):
    """A rank's image could not be pulled (already reported through TaskEvents)."""


def _on_node(node: str, exc: Exception) -> str:
    """Why an attempt failed on ``node``: a lost node's reason names it already."""
    return str(exc) if isinstance(exc, NodeLostError) else f"node {node}: {exc}"


def _with_addresses(plan: LaunchPlan, addresses: Sequence[str]) -> LaunchPlan:
    """``plan`` with each rank's address, and ``FUZZ_NODES`` and the ``MULTINODE_*`` host
    variables naming them when all have one.

    The ranks run in network namespaces of their own: the node names are of no
    use to them, their addresses are what MPI must be given.
    """
    if not addresses or not all(addresses):
        return replace(plan, addresses=tuple(addresses))
    env = []
    for rank, entries in enumerate(plan.env):
        current = dict(entry.partition("=")[::2] for entry in entries)
        slots = int(current.get("MULTINODE_TOTAL_SLOTS", "0")) // len(addresses)
        wrapper = LAUNCH_HELPER if plan.implementation in (*LAUNCHERS, "generic") else ""
        current.update(FUZZ_NODES=",".join(addresses),
                       **multinode_environment(addresses, slots, rank, wrapper))
        env.append(tuple(f"{key}={value}" for key, value in current.items()))
    return replace(plan, addresses=tuple(addresses), env=tuple(env))


def _with_leases(plan: LaunchPlan, leases: Sequence[str]) -> LaunchPlan:
    return replace(plan, leases=tuple(leases))


def _per_rank(plan: LaunchPlan, work: Callable[[int], None]) -> None:
    """Do ``work`` for every rank of ``plan``: side by side for a multinode task (at most
    :data:`START_PARALLELISM` at once), so that an 8-node job's logs and cleanup are not
    16 and 8 agent calls in a row. The first failure is raised once all have finished."""
    count = len(plan.nodes)
    if count <= 1:
        for rank in range(count):
            work(rank)
        return
    with ThreadPoolExecutor(min(count, START_PARALLELISM), thread_name_prefix="rank") as pool:
        futures = [pool.submit(work, rank) for rank in range(count)]
    for future in futures:
        future.result()
