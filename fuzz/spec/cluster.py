"""The cluster spec (``fuzz.yaml``): state backend, provider blocks and node pools."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """A model that rejects unknown keys, so typos are reported instead of ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StateSpec(BaseModel):
    """Where recorded state lives: ``backend`` names a state plugin, other keys are its own."""

    model_config = ConfigDict(extra="allow", frozen=True)

    backend: str = "local"

    def backend_config(self) -> dict[str, Any]:
        """The keys of this block that belong to the backend plugin."""
        return dict(self.model_extra or {})


class ProviderSpec(BaseModel):
    """A provider block: ``kind`` picks the plugin (default: the block's name), the rest is its config."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str | None = None

    def provider_config(self) -> dict[str, Any]:
        """The keys of this block that the provider plugin validates."""
        return dict(self.model_extra or {})


class StaticNodeSpec(BaseModel):
    """A machine listed by name in a static pool; other keys go to the provider."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str

    def provider_attributes(self) -> dict[str, Any]:
        """The keys of this entry that the provider reads (MAC, IPMI address, image …)."""
        return dict(self.model_extra or {})


class PoolSpec(StrictModel):
    """A node pool: elastic (offerings, min/max) or static (a list of named nodes)."""

    provider: str
    offerings: list[str] = Field(default_factory=list)
    min: int = 0
    max: int | None = None
    idle_ttl: str = "10m"
    labels: dict[str, str] = Field(default_factory=dict)
    nodes: list[StaticNodeSpec] | None = None


class ClusterSpec(StrictModel):
    """The whole ``fuzz.yaml``."""

    version: int
    cluster: str
    state: StateSpec = Field(default_factory=StateSpec)
    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    pools: dict[str, PoolSpec] = Field(default_factory=dict)

    def provider_kind(self, provider_name: str) -> str:
        """The plugin kind of a provider block (its ``kind``, or its name)."""
        block = self.providers.get(provider_name)
        return (block.kind if block and block.kind else None) or provider_name
