"""A small client for one node agent: health, readiness and inventory.

gRPC failures become :class:`fuzz.errors.FuzzError` subclasses with one-line
messages, so that the CLI and the providers can report them as they are.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fuzz.api import substrate_pb2, substrate_pb2_grpc
from fuzz.errors import FuzzError
from fuzz.substrate.auth import bearer_metadata

DEFAULT_TIMEOUT = 10.0
_CHANNEL_OPTIONS = (("grpc.enable_http_proxy", 0),)


class AgentError(FuzzError):
    """A call to a node agent failed."""


class AgentUnreachableError(AgentError):
    """Nothing answers at the agent's endpoint, or it did not answer in time."""


class AgentAuthError(AgentError):
    """The agent refused the client's token."""


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


class AgentClient:
    """Talk to the agent at ``endpoint`` (``host:port``), authenticating with ``token``."""

    def __init__(self, endpoint: str, token: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Open a channel; nothing is sent until the first call."""
        self.endpoint = endpoint
        self.timeout = timeout
        self._metadata = bearer_metadata(token)
        self._channel = grpc.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
        self._stub: Any = substrate_pb2_grpc.SubstrateStub(self._channel)
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)

    def inventory(self, timeout: float | None = None) -> substrate_pb2.Inventory:
        """Return the node's inventory (cores, NUMA domains, memory, GPUs, labels)."""
        wait = self.timeout if timeout is None else timeout
        try:
            reply: substrate_pb2.Inventory = self._stub.Inventory(
                substrate_pb2.InventoryRequest(), metadata=self._metadata, timeout=wait
            )
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        return reply

    def health(self, timeout: float | None = None) -> bool:
        """True when the agent answers the standard health check with SERVING."""
        try:
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service=""),
                timeout=self.timeout if timeout is None else timeout,
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the agent reports SERVING; raise AgentUnreachableError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self.health(timeout=min(left, 1.0)):
                return
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        raise AgentUnreachableError(
            f"agent at {self.endpoint} did not become ready within {timeout:g}s"
        )

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _error(self, exc: grpc.RpcError) -> AgentError:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = _one_line(exc.details() if isinstance(exc, grpc.Call) else str(exc))
        if code == grpc.StatusCode.UNAVAILABLE:
            return AgentUnreachableError(f"agent at {self.endpoint} is not reachable")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return AgentUnreachableError(f"agent at {self.endpoint} did not answer in time")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return AgentAuthError(f"agent at {self.endpoint} refused the token: {details}")
        name = code.name if code is not None else "UNKNOWN"
        return AgentError(f"agent at {self.endpoint} failed: {name}: {details}")
