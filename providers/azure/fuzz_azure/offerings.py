"""Azure VM sizes (resource SKUs of the location) as fuzz offerings, priced from the block."""

from __future__ import annotations

from azure.mgmt.compute import models as cm

from fuzz.errors import ConfigError
from fuzz.plugin.provider import Offering
from fuzz_azure.client import Azure
from fuzz_azure.config import AzureConfig
from fuzz_azure.errors import translated

ARCHITECTURES = {"x64": "x86_64", "arm64": "aarch64"}


def _capabilities(sku: cm.ResourceSku) -> dict[str, str]:
    return {c.name: c.value for c in sku.capabilities or [] if c.name and c.value is not None}


def _restricted(sku: cm.ResourceSku, location: str) -> bool:
    """Whether the subscription may not use the size in the location at all."""
    return any(r.type == "Location"
               and location.lower() in [v.lower() for v in r.values_property or []]
               for r in sku.restrictions or [])


def offering(sku: cm.ResourceSku, price: float, config: AzureConfig) -> Offering:
    """One VM size as an offering: vCPUs, memory, GPUs and CPU architecture."""
    capabilities = _capabilities(sku)
    return Offering(
        name=sku.name or "",
        cores=int(float(capabilities.get("vCPUs", "0"))),
        memory_bytes=int(float(capabilities.get("MemoryGB", "0")) * 2**30),
        gpus=int(capabilities.get("GPUs", "0")),
        architecture=ARCHITECTURES.get(capabilities.get("CpuArchitectureType", "x64").lower(),
                                       "x86_64"),
        price_per_hour=price,
        region=config.location,
    )


def list_offerings(azure: Azure, config: AzureConfig, provider: str) -> list[Offering]:
    """The priced VM sizes; a priced size the location does not offer is a ConfigError."""
    with translated(f"listing VM sizes in {config.location}"):
        skus = {sku.name: sku for sku in azure.compute.resource_skus.list(
                    filter=f"location eq '{config.location}'")
                if sku.resource_type == "virtualMachines" and sku.name
                and not _restricted(sku, config.location)}
    missing = sorted(set(config.prices) - set(skus))
    if missing:
        raise ConfigError(
            f"azure provider '{provider}': prices name VM sizes that {config.location} does "
            f"not offer to this subscription: {', '.join(missing)}"
        )
    return [offering(skus[name], price, config) for name, price in sorted(config.prices.items())]
