"""The base of fuzz's gRPC clients: one channel, the bearer token, health, one-line errors.

A subclass creates its stub from ``self._channel`` and turns a failed call into
its own :class:`~fuzz.errors.FuzzError` in :meth:`GrpcClient._error`; every call
then goes through :meth:`GrpcClient._call` or :meth:`GrpcClient._stream`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fuzz.errors import FuzzError
from fuzz.rpc.auth import bearer_metadata

DEFAULT_TIMEOUT = 10.0
REPLICA_PROBE_TIMEOUT = 2.0  # seconds one replica's health check may take
_CHANNEL_OPTIONS = (("grpc.enable_http_proxy", 0),)
_Reply = TypeVar("_Reply")


STANDBY_ANSWER = "this fuzz server is a standby replica"  # how a standby's refusals begin


def standby_refusal(details: str) -> bool:
    """Whether ``details`` are a standby replica's refusal (it names the leader, or says
    to try again)."""
    return details.startswith(STANDBY_ANSWER)


def one_line(text: str | None) -> str:
    """``text`` with every run of white space (newlines too) made one space."""
    return " ".join((text or "").split())


def tls_failure(details: str) -> str | None:
    """What went wrong in a failed TLS handshake, if ``details`` report one."""
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return "its certificate was not issued by the CA this client trusts"
    if "certificate" in details.lower() or "handshake" in details.lower():
        return "the TLS handshake failed"
    return None


def dns_failure(details: str) -> str | None:
    """What the resolver said, if ``details`` report a host name it could not resolve."""
    if "errors resolving" not in details and "DNS resolution failed" not in details:
        return None
    return details.rstrip("]").rsplit(": ", 1)[-1]


def connection_refused(details: str) -> bool:
    """Whether ``details`` report that nothing listens at the address."""
    return "Connection refused" in details


def not_grpc(details: str) -> bool:
    """Whether ``details`` report a server that answered, but not in HTTP/2 (gRPC)."""
    return "Failed parsing HTTP/2" in details or "http1.x server" in details


def not_tls(details: str) -> bool:
    """Whether ``details`` report a TLS handshake answered by something that is not TLS."""
    return "WRONG_VERSION_NUMBER" in details


def status_of(exc: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    """The status code and one-line details of a failed call."""
    if isinstance(exc, grpc.Call):
        return exc.code(), one_line(exc.details())
    return None, one_line(str(exc))


@dataclass(frozen=True)
class ClientTls:
    """How a client speaks TLS: the CA it trusts, its own certificate, the name it expects.

    ``cert_pem`` and ``key_pem`` (together) authenticate the client to a server that
    asks for a certificate (mutual TLS). ``server_name``, when set, is the name the
    server's certificate must carry instead of the host dialled (a node's agent is
    verified as that node, whatever its address).
    """

    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials."""
        return grpc.ssl_channel_credentials(root_certificates=self.ca_pem,
                                            private_key=self.key_pem,
                                            certificate_chain=self.cert_pem)

    def options(self) -> tuple[tuple[str, str], ...]:
        """Channel options: the expected server name, when it is not the host dialled."""
        if self.server_name is None:
            return ()
        return (("grpc.ssl_target_name_override", self.server_name),)

    def for_server(self, server_name: str) -> ClientTls:
        """The same credentials, expecting ``server_name``."""
        return ClientTls(self.ca_pem, self.cert_pem, self.key_pem, server_name)


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
            raise self._error(exc) from exc

    def cancel(self) -> None:
        """End the call from this side (the server sees CANCELLED)."""
        self._call.cancel()


def live_replica(endpoints: str, tls: ClientTls | None,
                 timeout: float = REPLICA_PROBE_TIMEOUT) -> str:
    """Of ``endpoints`` (``HOST:PORT[,HOST:PORT…]``, an orchestrator's replicas), the
    first whose health check answers SERVING: the leader (a standby replica answers
    NOT_SERVING); the first of them when none does, so that calls report its failure."""
    addresses = [address.strip() for address in endpoints.split(",") if address.strip()]
    if len(addresses) <= 1:
        return endpoints
    for address in addresses:
        with GrpcClient(address, "", tls=tls) as probe:
            if probe.health(timeout=timeout):
                return address
    return addresses[0]


def open_channel(endpoint: str, tls: ClientTls | None,
                 options: tuple[tuple[str, Any], ...] = ()) -> grpc.Channel:
    """A channel to ``endpoint``: TLS as ``tls`` says (plain text without), never through
    an HTTP proxy, with the extra channel ``options``."""
    if tls is None:
        return grpc.insecure_channel(endpoint, options=_CHANNEL_OPTIONS + options)
    return grpc.secure_channel(endpoint, tls.credentials(),
                               options=_CHANNEL_OPTIONS + options + tls.options())


class GrpcClient:
    """A channel to ``endpoint`` whose calls carry ``token``; of several replicas'
    comma-separated endpoints, to the live leader's (:func:`live_replica`)."""

    def __init__(
        self, endpoint: str, token: str, timeout: float = DEFAULT_TIMEOUT,
        tls: ClientTls | None = None, metadata: tuple[tuple[str, str], ...] = (),
        options: tuple[tuple[str, Any], ...] = (),
    ) -> None:
        """Open a channel (TLS as ``tls`` says, plain text without; with the extra channel
        ``options``); nothing is sent yet, but health checks to choose one of several
        replicas. Every call carries the token and ``metadata``."""
        endpoint = live_replica(endpoint, tls)
        self.endpoint = endpoint
        self.timeout = timeout
        self.plain_text = tls is None
        self._metadata = bearer_metadata(token) + metadata
        self._channel = open_channel(endpoint, tls, options)
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)
        self._closed = False

    def _error(self, exc: grpc.RpcError) -> FuzzError:
        """The FuzzError that says what a failed call means (subclasses refine it)."""
        code, details = status_of(exc)
        name = code.name if code is not None else "UNKNOWN"
        return FuzzError(f"{self.endpoint} failed: {name}: {details}")

    def _closed_error(self) -> FuzzError:
        """What a call on this client after :meth:`close` raises (subclasses refine it)."""
        return FuzzError(f"the client of {self.endpoint} was closed")

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
            raise self._error(exc) from exc
        except ValueError as exc:  # gRPC's "Cannot invoke RPC on closed channel!"
            if not self._closed:
                raise
            raise self._closed_error() from exc

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
            raise self._error(exc) from exc
        except ValueError as exc:  # gRPC's "Cannot invoke RPC on closed channel!"
            if not self._closed:
                raise
            raise self._closed_error() from exc

    def close(self) -> None:
        """Close the channel; calls made on it later raise :meth:`_closed_error`'s error."""
        self._closed = True
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
