"""Azure Resource Manager failures as fuzz's typed provider errors, each in one line.

ARM puts a ``code`` in every error body, both in a call's own error response and
in a long-running operation that ended ``Failed``; the code decides the type.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from fuzz.plugin.provider import (
    AuthenticationError,
    CapacityUnavailableError,
    NodeNotFoundError,
    ProviderError,
    QuotaExceededError,
)

CAPACITY_CODES = frozenset({
    "SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed",
    "OverconstrainedAllocationRequest", "OverconstrainedZonalAllocationRequest",
})
AUTH_CODES = frozenset({
    "AuthenticationFailed", "InvalidAuthenticationToken", "InvalidAuthenticationTokenTenant",
    "ExpiredAuthenticationToken", "AuthorizationFailed", "LinkedAuthorizationFailed",
})
NOT_FOUND_CODES = frozenset({
    "ResourceNotFound", "ResourceGroupNotFound", "NotFound", "SubscriptionNotFound",
})
GONE_CODES = frozenset({"ResourceNotFound", "ResourceGroupNotFound", "NotFound"})
HINTS: dict[type[ProviderError], str] = {
    QuotaExceededError: "raise the quota or lower the pool's max",
    CapacityUnavailableError: "try another size or location, or later",
    AuthenticationError: "check the credential (az login, or the access_token_file) and its "
    "role on the resource group",
    NodeNotFoundError: "check subscription_id, resource_group and subnet_id in the provider block",
}


def error_code(exc: HttpResponseError) -> str:
    """The ARM error code of a failed call or operation ('' when the body has none)."""
    return str(getattr(exc.error, "code", "") or "")


def _kind(code: str, message: str, status: int | None) -> type[ProviderError]:
    if code == "QuotaExceeded" or (code == "OperationNotAllowed" and "quota" in message.lower()):
        return QuotaExceededError
    if code in CAPACITY_CODES:
        return CapacityUnavailableError
    if code in AUTH_CODES or status in (401, 403):
        return AuthenticationError
    if code in NOT_FOUND_CODES:
        return NodeNotFoundError
    return ProviderError


def api_error(exc: HttpResponseError, doing: str) -> ProviderError:
    """The typed error for an ARM error response or a failed long-running operation."""
    code = error_code(exc)
    message = str(getattr(exc.error, "message", "") or exc.reason or exc.message)
    kind = _kind(code, message, exc.status_code)
    hint = HINTS.get(kind)
    detail = " ".join(f"{code + ': ' if code else ''}{message}".split())
    return kind(f"azure: {doing}: {detail}" + (f" ({hint})" if hint else ""))


def is_gone(exc: HttpResponseError) -> bool:
    """True when ARM says the resource (or its whole group) does not exist."""
    return exc.status_code == 404 and error_code(exc) in GONE_CODES


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """Raise fuzz's typed errors for what the SDK raises while ``doing`` something."""
    try:
        yield
    except ClientAuthenticationError as exc:
        if exc.response is not None:
            raise api_error(exc, doing) from exc
        first_line = str(exc.message).strip().splitlines()[0] if exc.message else str(exc)
        raise AuthenticationError(f"azure: {doing}: no usable credential: {first_line} "
                                  f"({HINTS[AuthenticationError]})") from exc
    except HttpResponseError as exc:
        raise api_error(exc, doing) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise ProviderError(f"azure: {doing}: cannot reach Resource Manager: "
                            f"{str(exc.message).splitlines()[0]}") from exc


class OperationTimeoutError(ProviderError):
    """A long-running operation outlasted ``operation_timeout``; its resources stay for later."""
