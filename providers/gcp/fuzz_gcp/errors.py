"""Compute Engine failures as fuzz's typed provider errors, each in one line.

Errors arrive two ways: as an HTTP error of the call itself (a
``google.api_core`` exception carrying the JSON error's ``errors[].reason``), or
inside a finished operation (``operation.error.errors[].code``), which is how an
insert reports an exhausted zone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import compute_v1

from fuzz.plugin.provider import (
    AuthenticationError,
    CapacityUnavailableError,
    NodeNotFoundError,
    ProviderError,
    QuotaExceededError,
)

QUOTA_REASONS = frozenset({"quotaExceeded", "rateLimitExceeded"})
OPERATION_ERRORS: dict[str, type[ProviderError]] = {
    "QUOTA_EXCEEDED": QuotaExceededError,
    "ZONE_RESOURCE_POOL_EXHAUSTED": CapacityUnavailableError,
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": CapacityUnavailableError,
}
HINTS: dict[type[ProviderError], str] = {
    QuotaExceededError: "raise the quota or lower the pool's max",
    CapacityUnavailableError: "try another zone or machine type, or later",
    AuthenticationError: "check the credentials (gcloud auth application-default login) "
    "and their roles on the project",
    NodeNotFoundError: "check project, zone, network, subnetwork and image in the provider block",
}


def _reasons(exc: api_exceptions.GoogleAPICallError) -> set[str]:
    return {str(e.get("reason")) for e in exc.errors if isinstance(e, dict)}


def _typed(kind: type[ProviderError], doing: str, detail: str) -> ProviderError:
    hint = HINTS.get(kind)
    return kind(f"gcp: {doing}: {detail.strip()}" + (f" ({hint})" if hint else ""))


def api_error(exc: api_exceptions.GoogleAPICallError, doing: str) -> ProviderError:
    """The typed error for an HTTP error answered by the Compute API."""
    reasons = _reasons(exc)
    detail = exc.message or str(exc)
    if reasons & QUOTA_REASONS:
        return _typed(QuotaExceededError, doing, detail)
    if exc.code in (401, 403):
        return _typed(AuthenticationError, doing, detail)
    if exc.code == 404 and "notFound" in reasons:
        return _typed(NodeNotFoundError, doing, detail)
    if exc.code == 404:
        return ProviderError(f"gcp: {doing}: the endpoint does not serve this Compute API path "
                             f"(HTTP 404: {detail[:200]})")
    return _typed(ProviderError, doing, f"HTTP {exc.code}: {detail}")


def operation_error(operation: compute_v1.Operation, doing: str) -> ProviderError:
    """The typed error for a finished operation that failed."""
    errors = list(operation.error.errors)
    kind = next((OPERATION_ERRORS[e.code] for e in errors if e.code in OPERATION_ERRORS),
                ProviderError)
    detail = "; ".join(f"{e.code}: {e.message}" for e in errors) or operation.http_error_message
    return _typed(kind, doing, detail)


def is_gone(exc: api_exceptions.GoogleAPICallError) -> bool:
    """True when the error says the resource itself does not exist (404 notFound)."""
    return exc.code == 404 and "notFound" in _reasons(exc)


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """Raise fuzz's typed errors for what the SDK raises while ``doing`` something."""
    try:
        yield
    except api_exceptions.GoogleAPICallError as exc:
        raise api_error(exc, doing) from exc
    except auth_exceptions.GoogleAuthError as exc:  # none found, or refused and not renewable
        raise _typed(AuthenticationError, doing, f"credentials missing or refused: {exc}") from exc
    except api_exceptions.RetryError as exc:
        raise ProviderError(f"gcp: {doing}: gave up retrying: {exc.cause or exc}") from exc
    except OSError as exc:  # requests' connection errors are OSErrors
        raise ProviderError(f"gcp: {doing}: cannot reach the Compute API: {exc}") from exc
