"""The machine classes of the provider block (``offerings:``), as fuzz offerings."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fuzz.plugin.provider import Offering
from fuzz.units import parse_size


class OfferingSpec(BaseModel):
    """A class of machines: what each has and what an hour of it costs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cores: int = Field(gt=0)
    memory: str = Field(description="e.g. 512GiB")
    gpus: int = Field(default=0, ge=0)
    gpu_model: str | None = None
    architecture: str = "x86_64"
    price_per_hour: float = Field(default=0.0, ge=0)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        parse_size(value)  # its ValueError names the accepted forms
        return value


def offering_list(offerings: Mapping[str, OfferingSpec]) -> list[Offering]:
    """The machine classes as fuzz reports them, sorted by name."""
    return [
        Offering(name, spec.cores, parse_size(spec.memory), spec.gpus, spec.gpu_model,
                 spec.architecture, spec.price_per_hour)
        for name, spec in sorted(offerings.items())
    ]
