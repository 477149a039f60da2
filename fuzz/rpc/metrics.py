"""RPC latency for Prometheus: a gRPC server interceptor timing every call by method.

Each server process (the orchestrator, every agent) keeps its series in a registry of
its own (:func:`new_registry`), never prometheus_client's global one, so that tests
running several servers in one process do not mix their numbers.

Only methods the server registered are labelled (a call to an unknown method never
reaches a handler), so a caller cannot make up label values; the method names are
fuzz's own API, never users' data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Histogram

RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
               30.0, 60.0)

_Behavior = Callable[[Any, grpc.ServicerContext], Any]


def new_registry() -> CollectorRegistry:
    """A registry for one server process's series."""
    return CollectorRegistry(auto_describe=True)


def _code_of(context: grpc.ServicerContext, failed: bool) -> str:
    """The status code the call ended with, as gRPC names it (``OK``, ``NOT_FOUND``...)."""
    code = context.code()  # type: ignore[attr-defined]  # grpc-stubs lacks code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "UNKNOWN" if failed else "OK"


class RpcLatency(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Times each call, from the handler's start until its reply (or last streamed
    message) is produced, into ``fuzz_rpc_duration_seconds{method,code}``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register the histogram in ``registry``."""
        self._seconds = Histogram(
            "fuzz_rpc_duration_seconds", "gRPC calls served, by method and status code",
            ["method", "code"], registry=registry, buckets=RPC_BUCKETS)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the method's handler in a timer (unknown methods pass untouched)."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary),
                handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream),
                handler.request_deserializer, handler.response_serializer)
        if handler.stream_stream is None:
            return handler
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(method, handler.stream_stream),
            handler.request_deserializer, handler.response_serializer)

    def _observe(self, method: str, context: grpc.ServicerContext, began: float,
                 failed: bool, code: str = "") -> None:
        self._seconds.labels(method, code or _code_of(context, failed)).observe(
            time.monotonic() - began)

    def _unary(self, method: str, behavior: _Behavior) -> _Behavior:
        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            began, failed = time.monotonic(), True
            try:
                reply = behavior(request, context)
                failed = False
                return reply
            finally:
                self._observe(method, context, began, failed)
        return timed

    def _streaming(self, method: str, behavior: _Behavior) -> _Behavior:
        def timed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            began, failed, code = time.monotonic(), True, ""
            try:
                yield from behavior(request, context)
                failed = False
            except GeneratorExit:  # the client went away before the stream ended
                code = grpc.StatusCode.CANCELLED.name
                raise
            finally:
                self._observe(method, context, began, failed, code)
        return timed
