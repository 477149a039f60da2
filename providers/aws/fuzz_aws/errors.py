"""EC2 failures as the typed, one-line errors of :mod:`fuzz.plugin.provider`.

botocore raises ``ClientError`` with the EC2 error code for what AWS refused, and
other ``BotoCoreError``s for what never reached it (no credentials, no network).
:func:`ec2_errors` turns both into a :class:`~fuzz.plugin.provider.ProviderError`
subclass whose message names the operation, the code and what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from fuzz.plugin.provider import (
    AuthenticationError,
    CapacityUnavailableError,
    NodeNotFoundError,
    ProviderError,
    QuotaExceededError,
)

QUOTA = frozenset({"InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded"})
CAPACITY = frozenset({"InsufficientInstanceCapacity", "InsufficientHostCapacity",
                      "InsufficientCapacity", "UnfulfillableCapacity"})
AUTH = frozenset({"AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId",
                  "AccessDenied", "SignatureDoesNotMatch", "ExpiredToken", "RequestExpired",
                  "OptInRequired"})
NOT_FOUND_SUFFIX = ".NotFound"


def error_code(exc: ClientError) -> str:
    """The EC2 error code of a refused call (``InsufficientInstanceCapacity`` …)."""
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def is_not_found(exc: ClientError) -> bool:
    """Whether AWS refused because something named does not exist."""
    return error_code(exc).endswith(NOT_FOUND_SUFFIX)


def translate(exc: ClientError, doing: str) -> ProviderError:
    """The typed error for ``exc``; ``doing`` says what failed (``aws 'x': start m5.large``)."""
    code = error_code(exc)
    message = " ".join(str(exc.response.get("Error", {}).get("Message", "")).split())
    said = f"{code}: {message}" if message else code
    if code in QUOTA:
        return QuotaExceededError(
            f"{doing}: the account's EC2 quota does not allow it ({said}); raise the quota "
            f"in Service Quotas or lower the pool's max")
    if code in CAPACITY:
        return CapacityUnavailableError(
            f"{doing}: EC2 has no capacity for it now ({said}); wait, or allow another "
            f"instance type or subnet")
    if code in AUTH:
        return AuthenticationError(
            f"{doing}: AWS refused the credentials or their permissions ({said}); check the "
            f"profile, the AWS_* environment or the instance role")
    if code.endswith(NOT_FOUND_SUFFIX):
        return NodeNotFoundError(f"{doing}: {said}")
    return ProviderError(f"{doing}: {said}")


@contextmanager
def ec2_errors(doing: str) -> Iterator[None]:
    """Raise what fails inside as a typed ProviderError naming ``doing``."""
    try:
        yield
    except ClientError as exc:
        raise translate(exc, doing) from exc
    except (NoCredentialsError, PartialCredentialsError, ProfileNotFound) as exc:
        raise AuthenticationError(
            f"{doing}: no usable AWS credentials ({exc}); set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY, a profile, or an instance role") from exc
    except ConnectionError as exc:
        raise ProviderError(f"{doing}: cannot reach EC2 ({exc})") from exc
    except BotoCoreError as exc:
        raise ProviderError(f"{doing}: {' '.join(str(exc).split())}") from exc
