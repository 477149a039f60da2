"""The ``azure`` provider block: where nodes go, what they boot, what they cost."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fuzz.plugin.cloudinit import BootstrapSettings

SUBNET_ID = re.compile(r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
                       r"Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+", re.IGNORECASE)


class AzureConfig(BaseModel):
    """One subscription, resource group and location of Azure virtual machines.

    Credentials come from ``DefaultAzureCredential`` (environment, workload or
    managed identity, ``az login``); ``access_token_file`` instead reads a bearer
    token from a file on every request (``az account get-access-token --query
    accessToken -o tsv > FILE``), which is also how tests authenticate.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    subscription_id: str = Field(min_length=1, description="The subscription id.")
    resource_group: str = Field(min_length=1, description="The resource group of every node.")
    location: str = Field(min_length=1, description="The region, e.g. westeurope.")
    subnet_id: str = Field(description="The ARM id of the subnet every node's NIC joins.")
    image: str = Field(
        default="Debian:debian-12:12-gen2:latest",
        description="A marketplace image URN (publisher:offer:sku:version) or an image's ARM id.",
    )
    admin_username: str = Field(default="fuzz", min_length=1, max_length=64)
    os_disk_size_gb: int | None = Field(default=None, ge=30, description="Default: the image's.")
    prices: dict[str, float] = Field(
        min_length=1, description="VM size → price per hour; only these sizes are offered."
    )
    spot: bool = Field(
        default=False, description="Create Spot VMs (a node's `spot` attribute overrides)."
    )
    spot_max_price: float = Field(
        default=-1, description="Spot price cap per hour; -1 pays up to the on-demand price."
    )
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    endpoint: str | None = Field(
        default=None, description="The Resource Manager URL (default: Azure's public cloud)."
    )
    ca_bundle: str | None = Field(
        default=None, description="A PEM file of CAs to trust for the endpoint's TLS."
    )
    access_token_file: str | None = Field(
        default=None, description="A file holding a bearer token, instead of the default chain."
    )
    operation_timeout: float = Field(
        default=900, gt=0, description="Seconds to wait for one long-running operation."
    )
    poll_interval: float = Field(
        default=5, gt=0, description="Seconds between polls of a long-running operation."
    )

    @field_validator("subnet_id")
    @classmethod
    def _check_subnet_id(cls, value: str) -> str:
        if not SUBNET_ID.fullmatch(value):
            raise ValueError(
                "use the subnet's ARM id: /subscriptions/SUB/resourceGroups/GROUP/providers/"
                "Microsoft.Network/virtualNetworks/VNET/subnets/SUBNET"
            )
        return value

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str) -> str:
        if not value.startswith("/") and len(value.split(":")) != 4:
            raise ValueError(
                "use publisher:offer:sku:version or an image's ARM id (/subscriptions/…)"
            )
        return value
