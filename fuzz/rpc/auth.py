"""Bearer-token authentication for fuzz's gRPC servers, reading token files, and the agent's
check that only the orchestrator calls it.

Every call must carry the metadata ``authorization: Bearer <token>``, except those
to the standard health service, which load balancers and the provider's readiness
check call without credentials. The agent accepts one shared token
(:func:`shared_token`); the orchestrator looks tokens up among its users'.

An agent serving mutual TLS also requires the client's certificate to be the
orchestrator's (:class:`OrchestratorOnlyInterceptor`): TLS lets in any certificate
of the cluster CA, which every enrolled node holds too.
"""

from __future__ import annotations

import functools
import hmac
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

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
    except FileNotFoundError as exc:
        raise TokenFileError(f"token file {path} does not exist") from exc
    except OSError as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc.strerror}") from exc
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
        raise TokenFileError(f"cannot read token file {path}: {exc}") from exc
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


_HANDLER_FACTORIES: dict[str, Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}
Behavior = Callable[[Any, grpc.ServicerContext], Any]


def same_shape(handler: grpc.RpcMethodHandler[Any, Any] | None,
                behavior: Callable[[Behavior], Behavior]) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behavior replaced by ``behavior(old)``.

    Without a handler (an unknown method) a unary one wrapping a no-op.
    """
    if handler is not None:
        for shape, factory in _HANDLER_FACTORIES.items():
            old = getattr(handler, shape, None)
            if old is not None:
                return factory(
                    behavior(old),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
    return grpc.unary_unary_rpc_method_handler(behavior(lambda request, context: None))


def _denying_handler(
    handler: grpc.RpcMethodHandler[Any, Any] | None, message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as ``handler`` that fails with UNAUTHENTICATED."""

    def deny(old: Behavior) -> Behavior:
        def denied(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        return denied

    return same_shape(handler, deny)


def _is_open(method: str, open_services: frozenset[str]) -> bool:
    """Whether ``method`` (``/package.Service/Method``) is one the open services name."""
    return method in open_services or method.lstrip("/").partition("/")[0] in open_services


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
        if _is_open(handler_call_details.method, self._open):
            return continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        problem = check_authorization(self._check, metadata)
        if problem is None:
            return continuation(handler_call_details)
        return _denying_handler(continuation(handler_call_details), problem)


@functools.lru_cache(maxsize=64)
def _orchestrator_certificate(pem: bytes) -> bool:
    """Whether the client certificate ``pem`` is the orchestrator's (parsed once per cert)."""
    from fuzz.crypto import pki  # late: the agent's alone needs it, a CLI's start need not

    try:
        return pki.is_orchestrator(pki.load_cert(pem))
    except pki.PkiError:
        return False


def orchestrator_problem(context: grpc.ServicerContext) -> str | None:
    """None when the call's client certificate is the orchestrator's, else why not (one line).

    TLS has already checked that the cluster CA issued it; this checks its
    extended key usage (:data:`fuzz.crypto.pki.ORCHESTRATOR_USAGE`).
    """
    # grpc-stubs type the values as bytes; grpc gives a list of bytes per property
    peer = cast(Mapping[str, list[bytes]], context.auth_context())
    pems = list(peer.get("x509_pem_cert", ()))
    if pems and _orchestrator_certificate(bytes(pems[0])):
        return None
    names = [bytes(n).decode(errors="replace") for n in peer.get("x509_common_name", ())]
    presented = f"the certificate of {names[0]!r}" if names else "no certificate"
    return f"only the cluster's orchestrator may call this agent; the caller presented {presented}"


class OrchestratorOnlyInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Answer PERMISSION_DENIED to every call whose client certificate is not the orchestrator's.

    Calls to ``open_services`` (the health service: agents check each other's) pass.
    The certificate is known only inside the call, so each method's behavior is
    wrapped to look first.
    """

    def __init__(self, open_services: Iterable[str] = (HEALTH_SERVICE,)) -> None:
        """Calls to ``open_services`` (services or ``/package.Service/Method``) need no check."""
        self._open = frozenset(open_services)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The method's handler, checking the caller's certificate before it runs."""
        handler = continuation(handler_call_details)
        if handler is None or _is_open(handler_call_details.method, self._open):
            return handler

        def checked(old: Behavior) -> Behavior:
            def check_first(request: Any, context: grpc.ServicerContext) -> Any:
                problem = orchestrator_problem(context)
                if problem is not None:
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)
                return old(request, context)
            return check_first

        return same_shape(handler, checked)
