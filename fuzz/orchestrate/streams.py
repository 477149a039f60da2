"""Long-lived calls: how many each user, and all users together, may hold open.

A call that streams its replies (``status --watch``, ``log --follow``, ``exec``,
``port-forward``) holds one of the server's worker threads for as long as it
lasts, and grpcio's synchronous server queues, never refuses, a call that finds
every worker busy. Without a cap one user could take every worker, and node
heartbeats (``RegisterNode``) would wait behind them until nodes were declared
gone. :class:`StreamLimiter`, a server interceptor, counts these calls per user
and in all, and refuses the next one past either limit with RESOURCE_EXHAUSTED.

Why a cap and not a server or executor of their own for the nodes: grpcio's
synchronous server runs every method on one thread pool, so a separate executor
is not available per method, and a second server on a port of its own would
have to be told to every agent and opened in every firewall. Capping user
streams at ``streams_total`` and giving the server :data:`RESERVED_WORKERS`
more workers than that keeps that many workers for short calls — heartbeats,
node enrollment, status, submissions — whatever users hold open.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from fuzz.rpc.auth import presented_token
from fuzz.spec.cluster import LimitsSpec

RESERVED_WORKERS = 64
"""Server workers that long-lived calls never hold: they answer heartbeats and short calls."""

UserOf = Callable[[str], str | None]
"""The user a bearer token belongs to, None when it is not accepted."""

LAUNCH_METHOD = "/fuzz.orchestrator.v1.Orchestrator/LaunchExec"
"""An MPI job's remote starts: one per node of the job, for as long as it runs, so they
count in ``streams_total`` only (a 128-node job needs 127), under the name ``launch``."""


def server_workers(limits: LimitsSpec) -> int:
    """The worker threads a server needs: every allowed stream, plus the reserve."""
    return limits.streams_total + RESERVED_WORKERS


class StreamLimiter(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Counts each user's open response-streaming calls; refuses the next past the limits."""

    def __init__(self, limits: LimitsSpec, user_of: UserOf) -> None:
        """Allow ``limits.streams_per_user`` per user, ``limits.streams_total`` in all."""
        self._per_user = limits.streams_per_user
        self._total = limits.streams_total
        self._user_of = user_of
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    def open_streams(self) -> int:
        """How many long-lived calls are open now."""
        with self._lock:
            return sum(self._open.values())

    def intercept_service(self, continuation: Callable[[Any], Any],
                          handler_call_details: Any) -> Any:
        """Wrap the handler of every call that streams replies; leave the others alone."""
        handler = continuation(handler_call_details)
        if handler is None or not handler.response_streaming:
            return handler
        token, _ = presented_token(handler_call_details.invocation_metadata or ())
        launch = handler_call_details.method == LAUNCH_METHOD
        user = "launch" if launch else self._user_of(token) or "-"
        if handler.unary_stream is not None:
            unary = handler.unary_stream

            def one_request(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                with self._held(user, context):
                    yield from unary(request, context)

            return grpc.unary_stream_rpc_method_handler(
                one_request, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        duplex = handler.stream_stream

        def many_requests(requests: Iterator[Any], context: grpc.ServicerContext
                          ) -> Iterator[Any]:
            with self._held(user, context):
                yield from duplex(requests, context)

        return grpc.stream_stream_rpc_method_handler(
            many_requests, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    @contextlib.contextmanager
    def _held(self, user: str, context: grpc.ServicerContext) -> Iterator[None]:
        """Hold a slot for one call of ``user``, or end the call with RESOURCE_EXHAUSTED.

        The slot is given back when the handler ends, not when the client goes:
        until then the call still holds its worker thread, which the count protects.
        """
        with self._lock:
            mine = self._open.get(user, 0)
            problem = None
            if mine >= self._per_user and user != "launch":
                problem = (f"{user} has {mine} long-lived calls open (watches, followed logs, "
                           "exec, port-forward), the most one user may "
                           "(orchestrator.limits.streams_per_user): end one and try again")
            elif sum(self._open.values()) >= self._total:
                problem = (f"the orchestrator has {self._total} long-lived calls open, the "
                           "most it serves at once (orchestrator.limits.streams_total): "
                           "try again later")
            else:
                self._open[user] = mine + 1
        if problem is not None:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, problem)
        try:
            yield
        finally:
            with self._lock:
                left = self._open[user] - 1
                if left:
                    self._open[user] = left
                else:
                    del self._open[user]
