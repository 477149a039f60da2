"""The Azure management clients of a provider block."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.credentials import TokenCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient

from fuzz.plugin.provider import ProviderContext
from fuzz_azure.config import AzureConfig
from fuzz_azure.credential import FileTokenCredential


@dataclass(frozen=True)
class Azure:
    """The compute and network clients of one subscription, endpoint and credential."""

    compute: ComputeManagementClient
    network: NetworkManagementClient


def _resolve(base_dir: Path, path: str | None) -> str | None:
    return None if path is None else str((base_dir / Path(path).expanduser()).absolute())


@functools.lru_cache(maxsize=16)
def _clients(subscription: str, endpoint: str | None, ca_bundle: str | None,
             token_file: str | None, poll_interval: float) -> Azure:
    credential: TokenCredential
    if token_file is not None:
        credential = FileTokenCredential(Path(token_file))
    else:
        from azure.identity import DefaultAzureCredential  # slow to import; only when used

        credential = DefaultAzureCredential()
    options: dict[str, Any] = {"polling_interval": poll_interval}
    if endpoint is not None:
        options["base_url"] = endpoint
    if ca_bundle is not None:
        options["connection_verify"] = ca_bundle
    return Azure(
        compute=ComputeManagementClient(credential, subscription, **options),
        network=NetworkManagementClient(credential, subscription, **options),
    )


def clients(config: AzureConfig, ctx: ProviderContext) -> Azure:
    """The clients for ``config``, made once per process; relative paths are the spec's."""
    return _clients(config.subscription_id, config.endpoint,
                    _resolve(ctx.base_dir, config.ca_bundle),
                    _resolve(ctx.base_dir, config.access_token_file), config.poll_interval)
