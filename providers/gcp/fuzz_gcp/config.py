"""The ``gcp`` provider block: where nodes go, what they boot, what they cost."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fuzz.plugin.cloudinit import BootstrapSettings


class GcpConfig(BaseModel):
    """One project and zone of Compute Engine.

    Credentials come from Application Default Credentials (``gcloud auth
    application-default login``, ``GOOGLE_APPLICATION_CREDENTIALS``, or the metadata
    server); ``anonymous`` sends none, for emulators and tests. Nodes get no
    service account.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(min_length=1, description="The Google Cloud project id.")
    zone: str = Field(min_length=1, description="The zone nodes are created in.")
    network: str = Field(default="global/networks/default", description="The VPC network.")
    subnetwork: str | None = Field(
        default=None, description="The subnetwork (regions/REGION/subnetworks/NAME)."
    )
    image: str = Field(
        default="projects/debian-cloud/global/images/family/debian-12",
        description="The boot image (or image family) of every node.",
    )
    disk_size_gb: int = Field(default=20, ge=10, description="Boot disk size in GB.")
    prices: dict[str, float] = Field(
        min_length=1,
        description="Machine type → price per hour; only these types are offered.",
    )
    spot: bool = Field(
        default=False, description="Create Spot VMs (a node's `spot` attribute overrides)."
    )
    metadata_key: Literal["startup-script", "user-data"] = Field(
        default="startup-script",
        description="The metadata key carrying the bootstrap script: startup-script for "
        "images with the guest agent, user-data for cloud-init images.",
    )
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    endpoint: str | None = Field(
        default=None, description="The Compute API endpoint (default: Google's)."
    )
    anonymous: bool = Field(default=False, description="Send no credentials (emulators, tests).")
    operation_timeout: float = Field(
        default=600, gt=0, description="Seconds to wait for an insert to finish."
    )

    @property
    def region(self) -> str:
        """The zone's region: ``us-central1`` for ``us-central1-a``."""
        return self.zone.rsplit("-", 1)[0]
