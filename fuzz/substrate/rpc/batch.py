"""The agent's calls that serve many containers at once: fewer calls per task.

``WatchContainers`` is one stream per orchestrator that carries every container's end
as it happens, where each task used to hold a ``WaitContainer`` open;
``RemoveContainers`` removes several containers (and releases their leases) in one
call, ``StartContainers`` starts several. They reuse the single-container code: the end
pushed is what ``WaitContainer`` answers (:func:`~fuzz.substrate.rpc.jobs.status_message`),
a removal is what ``RemoveContainer`` does (:meth:`BatchRpcs.remove_job`), a start what
``StartContainer`` does (:meth:`BatchRpcs.start_job`), its failure the status that call
would have ended with.

An end is acknowledged by removing its container: until then every new stream sends
it again first (the orchestrator restarted, a new leader took over, the stream broke),
so no end is lost between an end and the orchestrator's removal.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, cast

import grpc

from fuzz.api import substrate_pb2
from fuzz.errors import FuzzError
from fuzz.substrate.jobs import JobRunner
from fuzz.substrate.monitor.files import FINAL_STATES
from fuzz.substrate.rpc.jobs import NodeJobs, job_status_code, status_message
from fuzz.substrate.runtime.containers import ContainerNotFoundError, ContainerWaitTimeoutError

log = logging.getLogger(__name__)

STREAM_POLL = 1.0  # seconds between a stream's checks that its caller is still there
START_PARALLELISM = 16  # the starts of one StartContainers call made at once (each may pull)


class ContainerEnds:
    """The ends of a node's containers, pushed to every open watch.

    Nothing is watched until the first watch opens (an agent nobody watches, an older
    orchestrator's, pays nothing): then every unfinished container gets a waiter
    thread, as each one started later does (:meth:`started`); each end is kept until
    its container is removed (:meth:`removed`).
    """

    def __init__(self, jobs: Callable[[], JobRunner]) -> None:
        """Watch the containers of ``jobs()``."""
        self._jobs = jobs
        self._lock = threading.Lock()
        self._active = False
        self._closed = threading.Event()
        self._watched: set[str] = set()
        self._ended: dict[str, substrate_pb2.ContainerStatus] = {}
        self._watchers: list[queue.SimpleQueue[substrate_pb2.ContainerStatus]] = []

    def subscribe(self) -> tuple[list[substrate_pb2.ContainerStatus],
                                 queue.SimpleQueue[substrate_pb2.ContainerStatus]]:
        """The ends not removed yet, and the queue each later end is put on."""
        self._activate()
        inbox: queue.SimpleQueue[substrate_pb2.ContainerStatus] = queue.SimpleQueue()
        with self._lock:
            self._watchers.append(inbox)
            return list(self._ended.values()), inbox

    def unsubscribe(self, inbox: queue.SimpleQueue[substrate_pb2.ContainerStatus]) -> None:
        """Stop putting ends on ``inbox``."""
        with self._lock:
            self._watchers.remove(inbox)

    def started(self, status: substrate_pb2.ContainerStatus) -> None:
        """Watch a container that was just started, ``status`` as its start answered
        (nothing while no watch ever opened: the first one lists it). One that has ended
        already (a short job) is put on the watches at once, without a waiter."""
        with self._lock:
            if not self._active or status.id in self._watched:
                return
            self._watched.add(status.id)
            if status.state in FINAL_STATES:
                self._put(status)
                return
        self._spawn(status.id)

    def removed(self, container_id: str) -> None:
        """Forget a removed container: its end was acknowledged."""
        with self._lock:
            self._watched.discard(container_id)
            self._ended.pop(container_id, None)

    def close(self) -> None:
        """Stop every waiter (the agent stops)."""
        self._closed.set()

    def _activate(self) -> None:
        """On the first watch: the ends on record, and a waiter for every other container.

        Active first, then listed: a container whose start finishes meanwhile is either
        listed or watched by :meth:`started`, and the set keeps it to one waiter.
        """
        with self._lock:
            if self._active:
                return
            self._active = True
        for job in self._jobs().list():
            container_id = job.container.id
            with self._lock:
                if container_id in self._watched:
                    continue
                self._watched.add(container_id)
                if job.container.finished:
                    self._ended[container_id] = status_message(job)
                    continue
            self._spawn(container_id)

    def _spawn(self, container_id: str) -> None:
        threading.Thread(target=self._wait, args=(container_id,), daemon=True,
                         name=f"end-{container_id[:24]}").start()

    def _wait(self, container_id: str) -> None:
        """Wait for one container's end and put it on every watch."""
        try:
            job = self._jobs().wait(container_id, None, lambda: not self._closed.is_set())
        except (ContainerNotFoundError, ContainerWaitTimeoutError):
            return  # removed meanwhile, or the agent stops
        except FuzzError as exc:
            log.warning("cannot watch container %s: %s", container_id, exc)
            return
        status = status_message(job)
        with self._lock:
            if container_id in self._watched:  # not removed while its end was read
                self._put(status)

    def _put(self, status: substrate_pb2.ContainerStatus) -> None:
        """Keep an end and put it on every watch (under the lock)."""
        self._ended[status.id] = status
        for inbox in self._watchers:
            inbox.put(status)


class BatchRpcs(NodeJobs):
    """WatchContainers and RemoveContainers (a mixin of the Substrate servicer)."""

    def container_ends(self) -> ContainerEnds:
        """The node's container ends (provided by the servicer)."""
        raise NotImplementedError

    def remove_job(self, container_id: str, release_lease: bool) -> None:
        """Remove one finished container, and its lease if asked (provided by the servicer;
        raises what RemoveContainer's statuses are made of)."""
        raise NotImplementedError

    def start_job(self, request: substrate_pb2.StartContainerRequest,
                  context: grpc.ServicerContext) -> substrate_pb2.ContainerStatus:
        """What StartContainer answers (provided by the servicer; a failure ends the call
        through ``context.abort``)."""
        raise NotImplementedError

    def WatchContainers(
        self, request: substrate_pb2.WatchContainersRequest, context: grpc.ServicerContext
    ) -> Iterator[substrate_pb2.ContainerEvent]:
        """The ends not removed yet, ``caught_up``, then every end as it happens."""
        ends = self.container_ends()
        backlog, inbox = ends.subscribe()
        try:
            for status in backlog:
                yield substrate_pb2.ContainerEvent(ended=status)
            yield substrate_pb2.ContainerEvent(caught_up=True)
            while context.is_active():
                try:
                    status = inbox.get(timeout=STREAM_POLL)
                except queue.Empty:
                    continue
                yield substrate_pb2.ContainerEvent(ended=status)
        finally:
            ends.unsubscribe(inbox)

    def RemoveContainers(
        self, request: substrate_pb2.RemoveContainersRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.RemoveContainersResponse:
        """Remove each container in turn; each gets the status its RemoveContainer would."""
        reply = substrate_pb2.RemoveContainersResponse()
        for ref in request.containers:
            outcome = reply.outcomes.add(id=ref.id)
            try:
                self.remove_job(ref.id, ref.release_lease)
            except FuzzError as exc:
                outcome.code = job_status_code(exc).value[0]
                outcome.message = str(exc)
        return reply

    def StartContainers(
        self, request: substrate_pb2.StartContainersRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.StartContainersResponse:
        """Start each container as StartContainer would, side by side (at most
        :data:`START_PARALLELISM` at once: as many calls would be); each gets the status
        that call would have answered, or the status it would have ended with."""
        def start(one: substrate_pb2.StartContainerRequest) -> substrate_pb2.StartOutcome:
            try:
                return substrate_pb2.StartOutcome(
                    status=self.start_job(one, cast(grpc.ServicerContext, _OneStart(context))))
            except _StartAborted as aborted:
                return substrate_pb2.StartOutcome(code=aborted.code.value[0],
                                                  message=aborted.details)
            except Exception as exc:  # what gRPC answers for a handler's unexpected error
                log.exception("starting container %s", one.id)
                return substrate_pb2.StartOutcome(
                    code=grpc.StatusCode.UNKNOWN.value[0],
                    message=f"Exception calling application: {exc}")

        starts = list(request.containers)
        if len(starts) <= 1:
            return substrate_pb2.StartContainersResponse(outcomes=map(start, starts))
        with ThreadPoolExecutor(min(len(starts), START_PARALLELISM),
                                thread_name_prefix="start") as pool:
            return substrate_pb2.StartContainersResponse(outcomes=pool.map(start, starts))


class _StartAborted(Exception):
    """One start of a StartContainers call failed with ``code``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _OneStart:
    """The context one start of a StartContainers call runs in: the call's, except that
    ending it (``abort``) ends that start alone."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise _StartAborted(code, details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)
