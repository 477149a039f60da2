"""The base of fuzz's gRPC clients: one channel, the bearer token, health, one-line errors.

A subclass creates its stub from ``self._channel`` and turns a failed call into
its own :class:`~fuzz.errors.FuzzError` in :meth:`GrpcClient._error`; every call
then goes through :meth:`GrpcClient._call` or :meth:`GrpcClient._stream`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fuzz.errors import FuzzError
from fuzz.substrate.auth import bearer_metadata

DEFAULT_TIMEOUT = 10.0
_CHANNEL_OPTIONS = (("grpc.enable_http_proxy", 0),)
_Reply = TypeVar("_Reply")


def one_line(text: str | None) -> str:
    """``text`` with every run of white space (newlines too) made one space."""
    return " ".join((text or "").split())


def status_of(exc: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    """The status code and one-line details of a failed call."""
    if isinstance(exc, grpc.Call):
        return exc.code(), one_line(exc.details())
    return None, one_line(str(exc))


class DuplexCall(Generic[_Reply]):
    """A bidirectional stream under way: iterate its replies; :meth:`cancel` ends it early."""

    def __init__(self, call: Any, error: Callable[[grpc.RpcError], FuzzError]) -> None:
        """Wrap the gRPC ``call``; ``error`` says what a failure means."""
        self._call = call
        self._error = error

    def __iter__(self) -> Iterator[_Reply]:
        """The replies as they come; a failed call raises its FuzzError."""
        try:
            yield from self._call
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def cancel(self) -> None:
        """End the call from this side (the server sees CANCELLED)."""
        self._call.cancel()


class GrpcClient:
    """A channel to ``endpoint`` whose calls carry ``token``."""

    def __init__(
        self, endpoint: str, token: str, timeout: float = DEFAULT_TIMEOUT,
        ca_pem: bytes | None = None,
    ) -> None:
        """Open a channel (TLS verified against ``ca_pem`` when given); nothing is sent yet."""
        self.endpoint = endpoint
        self.timeout = timeout
        self._metadata = bearer_metadata(token)
        if ca_pem is None:
            self._channel = grpc.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
            self._channel = grpc.secure_channel(endpoint, credentials, options=_CHANNEL_OPTIONS)
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)

    def _error(self, exc: grpc.RpcError) -> FuzzError:
        """The FuzzError that says what a failed call means (subclasses refine it)."""
        code, details = status_of(exc)
        name = code.name if code is not None else "UNKNOWN"
        return FuzzError(f"{self.endpoint} failed: {name}: {details}")

    def health(self, timeout: float | None = None) -> bool:
        """True when the server answers the standard health check with SERVING."""
        try:
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service=""),
                timeout=self.timeout if timeout is None else timeout,
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def ready_within(self, timeout: float) -> bool:
        """Wait until the server reports SERVING; False if it did not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.health(timeout=min(left, 1.0)):
                return True
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))

    def _stream(self, method: Callable[..., Iterator[_Reply]], request: Any,
                timeout: float | None) -> Iterator[_Reply]:
        """Iterate a server stream with the token; gRPC failures become FuzzErrors."""
        try:
            yield from method(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def _duplex(self, method: Callable[..., Any], requests: Iterator[Any]) -> DuplexCall[Any]:
        """Open a bidirectional stream fed by ``requests`` (no deadline: it lasts as long
        as the conversation)."""
        return DuplexCall(method(requests, metadata=self._metadata), self._error)

    def _call(self, method: Callable[..., _Reply], request: Any, timeout: float | None) -> _Reply:
        """Call ``method`` with the token; gRPC failures become FuzzErrors."""
        wait = self.timeout if timeout is None else timeout
        try:
            return method(request, metadata=self._metadata, timeout=wait)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
