"""The ends of the containers on each node, pushed by its agent on one stream.

A task used to hold a ``WaitContainer`` call open on its node until its container
ended: one call per task, each a thread in the agent's gRPC server. Now one
``WatchContainers`` stream per node carries every end (:class:`ContainerWatches`),
opened on the first wait for one of the node's containers and opened again, through
the node's current client, whenever it breaks (the agent restarted or moved). A new
stream first sends every end not yet acknowledged (by removing the container), so an
end that happened while no stream was open is not lost; a waiter whose slice passes
without an end asks the agent for the container's state as before.

An attempt may also wait without a thread (:meth:`ContainerWatches.when_ended`): the
end, or a slice without one (one timer thread for all, :class:`.Deadlines`), calls it
back; so a runner's few workers serve thousands of running attempts.

An agent that does not know the call (UNIMPLEMENTED: an older agent) is remembered:
its tasks wait as before (:class:`WatchUnsupportedError`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

from fuzz.api.substrate_pb2 import ContainerEvent, ContainerStatus
from fuzz.clients.agent import AgentError
from fuzz.errors import FuzzError
from fuzz.orchestrate.workflows.agentcalls import (
    RETRY_FIRST,
    RETRY_MAX,
    AgentCalls,
    CallsStoppedError,
    NodeLostError,
)
from fuzz.orchestrate.workflows.deadlines import Deadlines
from fuzz.rpc.client import DuplexCall

log = logging.getLogger(__name__)

Heard = Callable[[ContainerStatus | None], None]  # a container's end; None: none came (yet)


class WatchUnsupportedError(FuzzError):
    """The node's agent has no WatchContainers: wait for its containers one call each."""


class _NodeWatch:
    """One node's stream and the ends it brought, until their containers are removed.

    Each waiter has an event of its own, set by its container's end (or by the watch's
    end): a node runs many tasks at once, and one condition for all would wake every
    waiter of the node at each end. A waiter without a thread leaves a callback instead,
    called once: with the end, or with None when the watch breaks off or its slice passes.
    """

    def __init__(self, node: str, calls: AgentCalls) -> None:
        self.node = node
        self._calls = calls
        self._call: DuplexCall[ContainerEvent] | None = None
        self._lock = threading.Lock()
        self._ended: dict[str, ContainerStatus] = {}
        self._waiting: dict[str, threading.Event] = {}
        self._callbacks: dict[str, Heard] = {}
        self.unsupported = False
        self.closed = False
        self._thread = threading.Thread(target=self._follow, daemon=True,
                                         name=f"watch-{node}"[:15])

    def start(self) -> None:
        """Open the stream (in a thread of its own)."""
        self._thread.start()

    def _follow(self) -> None:
        """Read the stream; open it again after a pause whenever it ends or breaks."""
        delay = RETRY_FIRST
        try:
            while True:
                call = self._calls.client(self.node).watch_containers()
                with self._lock:
                    if self.closed:
                        call.cancel()
                        return
                    self._call = call
                try:
                    for event in call:
                        if event.caught_up:
                            delay = RETRY_FIRST
                        else:
                            self._ended_now(event.ended)
                except AgentError as exc:
                    if exc.code == grpc.StatusCode.UNIMPLEMENTED:
                        self._end(unsupported=True)
                        return
                    log.debug("the container watch of node %s broke: %s", self.node, exc)
                finally:
                    call.cancel()
                self._calls.pause(delay)
                delay = min(delay * 2, RETRY_MAX)
        except (NodeLostError, CallsStoppedError, AgentError):
            pass  # the node is gone (a later wait opens a new watch), or we stop
        finally:
            self._end()

    def _ended_now(self, status: ContainerStatus) -> None:
        """Keep a container's end and wake its waiter."""
        with self._lock:
            self._ended[status.id] = status
            waiter = self._waiting.get(status.id)
            callback = self._callbacks.pop(status.id, None)
        if waiter is not None:
            waiter.set()
        if callback is not None:
            callback(status)

    def _end(self, unsupported: bool = False, call_back: bool = True) -> None:
        """The watch is over: wake every waiter (and call back each, unless told not to)."""
        with self._lock:
            self.closed = True
            self.unsupported = self.unsupported or unsupported
            waiters = list(self._waiting.values())
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
            call = self._call
        for waiter in waiters:
            waiter.set()
        for callback in callbacks if call_back else ():
            callback(None)
        if call is not None:
            call.cancel()

    def close(self) -> None:
        """End the stream (the orchestrator stops): the waiters without a thread are
        dropped, their attempts given up unreported (the next orchestrator adopts them)."""
        self._end(call_back=False)

    def when_ended(self, container: str, callback: Heard) -> bool:
        """Call ``callback`` with ``container``'s end once pushed, or with None when the
        watch ends first; at once (False) if either happened already, else True."""
        with self._lock:
            found = self._found(container)
            waiting = found is None and not self.closed
            if waiting:
                self._callbacks[container] = callback
        if not waiting:
            callback(found)
        return waiting

    def expire(self, container: str, callback: Heard) -> None:
        """``callback``'s slice passed: call it with None unless it was called already."""
        with self._lock:
            due = self._callbacks.get(container) is callback
            if due:
                del self._callbacks[container]
        if due:
            callback(None)

    def wait(self, container: str, timeout: float) -> ContainerStatus | None:
        """``container``'s end once pushed (within ``timeout``), None meanwhile."""
        with self._lock:
            found = self._found(container)
            if found is not None or self.closed:
                return found
            waiter = self._waiting[container] = threading.Event()
        waiter.wait(timeout)
        with self._lock:
            if self._waiting.get(container) is waiter:
                del self._waiting[container]
            return self._found(container)

    def _found(self, container: str) -> ContainerStatus | None:
        """``container``'s end if it came (under the lock)."""
        if self.unsupported:
            raise WatchUnsupportedError(f"node {self.node}'s agent cannot watch")
        return self._ended.get(container)

    def forget(self, container: str) -> None:
        """Drop ``container``'s end (it was removed)."""
        with self._lock:
            self._ended.pop(container, None)


class ContainerWatches:
    """A :class:`_NodeWatch` per node whose containers are waited for."""

    def __init__(self, calls: AgentCalls) -> None:
        """Watch the nodes that ``calls`` reaches."""
        self._calls = calls
        self._lock = threading.Lock()
        self._watches: dict[str, _NodeWatch] = {}
        self._unsupported: set[str] = set()
        self._slices = Deadlines("watch-slices")
        self._stopped = False

    def wait(self, node: str, container: str, timeout: float) -> ContainerStatus | None:
        """``container``'s end on ``node`` once its agent pushes it (within ``timeout``);
        None if it did not come (ask the agent); WatchUnsupportedError for an older agent."""
        watch = self._watch(node)
        try:
            return watch.wait(container, timeout)
        except WatchUnsupportedError:
            self._cannot_watch(node, watch)
            raise

    def when_ended(self, node: str, container: str, timeout: float, callback: Heard) -> None:
        """Call ``callback`` once, without a thread waiting: with ``container``'s end on
        ``node`` once its agent pushes it, or with None after ``timeout`` seconds without
        it (or when the watch breaks off: ask the agent). WatchUnsupportedError for an
        older agent; CallsStoppedError once stopped."""
        if self._stopped:
            raise CallsStoppedError("the orchestrator is stopping")
        watch = self._watch(node)
        try:
            waiting = watch.when_ended(container, callback)
        except WatchUnsupportedError:
            self._cannot_watch(node, watch)
            raise
        if waiting:
            self._slices.add(timeout, lambda: watch.expire(container, callback))

    def _cannot_watch(self, node: str, watch: _NodeWatch) -> None:
        """``node``'s agent has no watch: remember it, and drop its watch."""
        with self._lock:
            self._unsupported.add(node)
            if self._watches.get(node) is watch:
                del self._watches[node]

    def forget(self, node: str, container: str) -> None:
        """Drop the end of ``container`` (removed from ``node``)."""
        with self._lock:
            watch = self._watches.get(node)
        if watch is not None:
            watch.forget(container)

    def stop(self) -> None:
        """End every stream (the orchestrator stops); the waiters without a thread are
        dropped."""
        with self._lock:
            self._stopped = True
            watches = list(self._watches.values())
            self._watches.clear()
        self._slices.stop()
        for watch in watches:
            watch.close()

    def _watch(self, node: str) -> _NodeWatch:
        with self._lock:
            if node in self._unsupported:
                raise WatchUnsupportedError(f"node {node}'s agent cannot watch")
            watch = self._watches.get(node)
            if watch is not None and watch.unsupported:
                self._unsupported.add(node)
                raise WatchUnsupportedError(f"node {node}'s agent cannot watch")
            if watch is not None and not watch.closed:
                return watch
            watch = self._watches[node] = _NodeWatch(node, self._calls)
        watch.start()
        return watch
