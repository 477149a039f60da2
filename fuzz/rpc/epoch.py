"""The leadership epoch on the orchestrator's calls to agents, and the agents' check.

A leading replica of an orchestrator on PostgreSQL (:mod:`fuzz.orchestrate.leadership`)
sends its lease's epoch as call metadata on every call to an agent. An agent keeps the
newest epoch it has been called with and refuses a call of an older one
(FAILED_PRECONDITION): an old leader that woke from a pause after another took over
cannot start or remove containers, even with a call it had begun before the pause.
Calls without the metadata (a single server on SQLite, the CLI's direct access) pass.
The newest epoch lives in the agent's memory: an agent restarted meanwhile learns it
again at the new leader's next call (the old leader's own clock stops it first).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from fuzz.rpc.auth import same_shape

EPOCH_METADATA = "x-fuzz-leader-epoch"
Behavior = Callable[[Any, grpc.ServicerContext], Any]


def epoch_metadata(epoch: int) -> tuple[tuple[str, str], ...]:
    """The call metadata carrying leadership ``epoch`` (none for 0: no leadership)."""
    return ((EPOCH_METADATA, str(epoch)),) if epoch else ()


def _epoch_of(details: grpc.HandlerCallDetails) -> int:
    for key, value in details.invocation_metadata or ():
        if key == EPOCH_METADATA:
            text = value.decode() if isinstance(value, bytes) else str(value)
            return int(text) if text.isdigit() else 0
    return 0


class NewestEpoch(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Refuse calls of an older leadership epoch than the newest seen (see the module)."""

    def __init__(self) -> None:
        """No epoch seen yet."""
        self._lock = threading.Lock()
        self.newest = 0

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The method's handler, checking the call's epoch first (inside the call, so
        after the interceptors before this one have checked the caller)."""
        handler = continuation(handler_call_details)
        epoch = _epoch_of(handler_call_details)
        if handler is None or not epoch:
            return handler

        def checked(old: Behavior) -> Behavior:
            def check_first(request: Any, context: grpc.ServicerContext) -> Any:
                problem = self._stale(epoch)
                if problem is not None:
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION, problem)
                return old(request, context)
            return check_first

        return same_shape(handler, checked)

    def _stale(self, epoch: int) -> str | None:
        """None when ``epoch`` is the newest seen (now), else why its call is refused."""
        with self._lock:
            self.newest = max(self.newest, epoch)
            newest = self.newest
        if epoch == newest:
            return None
        return (f"an orchestrator of a newer leadership epoch ({newest}) has called this "
                f"agent: calls of epoch {epoch} are refused")
