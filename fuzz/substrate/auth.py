"""Bearer-token authentication for fuzz's gRPC servers, and reading token files.

Every call must carry the metadata ``authorization: Bearer <token>``, except those
to the standard health service, which load balancers and the provider's readiness
check call without credentials. The agent accepts one shared token
(:func:`shared_token`); the orchestrator looks tokens up among its users'.
"""

from __future__ import annotations

import hmac
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from fuzz.errors import ConfigError

HEALTH_SERVICE = "grpc.health.v1.Health"
METADATA_KEY = "authorization"
SCHEME = "bearer"


class TokenFileError(ConfigError):
    """The token file is missing, empty, or readable by others."""


def read_token_file(path: Path) -> str:
    """Return the token stored in ``path`` with surrounding whitespace stripped.

    Refuses a missing file, an empty one, and one that group or others may access
    (the token grants full control of the agent).
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise TokenFileError(f"token file {path} does not exist") from None
    except OSError as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TokenFileError(f"token file {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise TokenFileError(
            f"token file {path} is accessible by group or others (mode {mode:04o}); "
            f"run: chmod 600 {path}"
        )
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc}") from None
    if not token:
        raise TokenFileError(f"token file {path} is empty")
    return token


TokenCheck = Callable[[str], str | None]
"""Says whether a presented bearer token is accepted: None, or why not (one line)."""


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that authenticates a client with ``token``."""
    return ((METADATA_KEY, f"Bearer {token}"),)


def presented_token(metadata: Iterable[tuple[str, Any]]) -> tuple[str, str | None]:
    """The bearer token ``metadata`` carries, or ``("", why there is none)``."""
    values = [value for key, value in metadata if key.lower() == METADATA_KEY]
    if not values:
        return "", "missing 'authorization: Bearer <token>' metadata"
    value = values[0]
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    scheme, _, presented = text.strip().partition(" ")
    if scheme.lower() != SCHEME or not presented.strip():
        return "", "authorization metadata must be 'Bearer <token>'"
    return presented.strip(), None


def shared_token(expected: str) -> TokenCheck:
    """A check accepting exactly ``expected`` (compared in constant time)."""

    def check(presented: str) -> str | None:
        if hmac.compare_digest(presented.encode(), expected.encode()):
            return None
        return "invalid bearer token"

    return check


def check_authorization(check: TokenCheck, metadata: Iterable[tuple[str, Any]]) -> str | None:
    """Return None when ``metadata`` carries a bearer token ``check`` accepts, else why not."""
    token, problem = presented_token(metadata)
    return problem if problem is not None else check(token)


def _denying_handler(
    handler: grpc.RpcMethodHandler[Any, Any] | None, message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as ``handler`` that fails with UNAUTHENTICATED."""

    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    factories: dict[str, Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
        "unary_unary": grpc.unary_unary_rpc_method_handler,
        "unary_stream": grpc.unary_stream_rpc_method_handler,
        "stream_unary": grpc.stream_unary_rpc_method_handler,
        "stream_stream": grpc.stream_stream_rpc_method_handler,
    }
    if handler is not None:
        for shape, factory in factories.items():
            if getattr(handler, shape, None) is not None:
                return factory(
                    deny,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
    return grpc.unary_unary_rpc_method_handler(deny)


class BearerTokenInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Reject every call without the right bearer token, except the open services."""

    def __init__(self, check: TokenCheck, open_services: Iterable[str] = (HEALTH_SERVICE,)
                 ) -> None:
        """Accept the tokens ``check`` accepts; calls to ``open_services`` need none.

        An entry is a service (``grpc.health.v1.Health``) or one method of it
        (``/package.Service/Method``).
        """
        self._check = check
        self._open = frozenset(open_services)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Pass authenticated calls on; answer the others with UNAUTHENTICATED."""
        method: str = handler_call_details.method
        service = method.lstrip("/").partition("/")[0]
        if service in self._open or method in self._open:
            return continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        problem = check_authorization(self._check, metadata)
        if problem is None:
            return continuation(handler_call_details)
        return _denying_handler(continuation(handler_call_details), problem)
