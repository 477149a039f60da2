"""The 'baremetal' provider: registers its kind and configuration schema.

Node operations (offerings, create, read, delete, bootstrap) are not implemented
yet (issue 6); until then fuzz reports that this plugin does not implement them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from fuzz.hookspecs import hookimpl

KIND = "baremetal"


class BaremetalConfig(BaseModel):
    """Configuration of a 'baremetal' provider block (keys are added as the provider grows)."""

    model_config = ConfigDict(extra="allow", frozen=True)


@hookimpl
def fuzz_provider_kinds() -> list[str]:
    """This plugin answers for the 'baremetal' kind."""
    return [KIND]


@hookimpl
def fuzz_provider_config_schema(kind: str) -> type[Any] | None:
    """The schema of a 'baremetal' provider block."""
    return BaremetalConfig if kind == KIND else None
