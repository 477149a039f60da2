"""The Compute Engine clients of a provider block, and waiting for zone operations."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from fuzz.plugin.provider import ProviderError
from fuzz_gcp.config import GcpConfig
from fuzz_gcp.errors import operation_error, translated


@dataclass(frozen=True)
class Compute:
    """The three REST clients the provider uses, sharing one endpoint and credentials."""

    instances: compute_v1.InstancesClient
    operations: compute_v1.ZoneOperationsClient
    machine_types: compute_v1.MachineTypesClient


@functools.lru_cache(maxsize=16)
def _clients(endpoint: str | None, anonymous: bool) -> Compute:
    options: dict[str, Any] = {"client_options": {"api_endpoint": endpoint}} if endpoint else {}
    if anonymous:
        options["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]
    return Compute(
        instances=compute_v1.InstancesClient(transport="rest", **options),
        operations=compute_v1.ZoneOperationsClient(transport="rest", **options),
        machine_types=compute_v1.MachineTypesClient(transport="rest", **options),
    )


def clients(config: GcpConfig) -> Compute:
    """The clients for ``config``'s endpoint and credentials, made once per process.

    Without ``anonymous`` the clients look up Application Default Credentials.
    """
    with translated("connecting to Compute Engine"):
        return _clients(config.endpoint, config.anonymous)


def wait_done(
    compute: Compute, config: GcpConfig, operation: compute_v1.Operation, doing: str
) -> compute_v1.Operation:
    """Wait (``zoneOperations.wait``) until ``operation`` is DONE; raise its error if it failed.

    The provider waits itself because the SDK's ``ExtendedOperation.result()`` polls
    through a client of its own that ignores a custom endpoint.
    """
    deadline = time.monotonic() + config.operation_timeout
    while operation.status != compute_v1.Operation.Status.DONE:
        if time.monotonic() > deadline:
            raise ProviderError(
                f"gcp: {doing}: operation {operation.name} did not finish within "
                f"{config.operation_timeout:g}s; the next apply picks the node up if it appears"
            )
        with translated(doing):
            operation = compute.operations.wait(
                project=config.project, zone=config.zone, operation=operation.name
            )
    if operation.error.errors:
        raise operation_error(operation, doing)
    return operation
