"""The ``baremetal`` provider block and the machine inventory it provisions from.

A machine is described once, either in the provider block's ``machines`` list
(the inventory an elastic pool draws free machines from) or as an entry of a
static pool's ``nodes:`` (the node's attributes), with the same keys::

    providers:
      metal:
        kind: baremetal
        image: rocky-9              # a Warewulf image (wwctl image list)
        offerings:
          c64: {cores: 64, memory: 512GiB, price_per_hour: 0}
        machines:
          - {name: n01, mac: "aa:bb:cc:00:00:01", ipmi_address: 10.1.0.1, ip: 10.0.0.1}
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fuzz.plugin.cloudinit import BootstrapSettings
from fuzz.plugin.provider import ProviderContext, ProviderError
from fuzz_baremetal.offerings import OfferingSpec

NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Machine(_Strict):
    """One physical machine Warewulf can boot."""

    name: str = Field(description="The Warewulf node name (and host name).")
    mac: str = Field(description="The MAC address it PXE-boots from.")
    ipmi_address: str = Field(description="Its BMC's address, for wwctl power.")
    ip: str | None = Field(default=None, description="Its address; default: its name (DNS).")
    image: str | None = Field(default=None, description="Its Warewulf image; default: image.")
    offering: str | None = Field(default=None, description="Its offering; default: the only one.")
    agent_port: int | None = Field(default=None, ge=1, le=65535,
                                   description="The agent's port; default: bootstrap.port.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NODE_NAME.fullmatch(value):
            raise ValueError(f"invalid node name {value!r}: letters, digits, '_', '.', '-'")
        return value

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str) -> str:
        if not MAC.fullmatch(value):
            raise ValueError(f"invalid MAC address {value!r}: expected aa:bb:cc:dd:ee:ff")
        return value.lower()

    @field_validator("ipmi_address", "ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)  # its ValueError names the bad address
        return value


class BaremetalConfig(_Strict):
    """The ``baremetal`` provider block: which Warewulf to drive and which machines it has."""

    api: Literal["wwctl", "rest"] = Field(
        default="wwctl", description="wwctl subprocesses, or warewulfd's REST API (4.6.1+)."
    )
    wwctl: str = Field(default="wwctl", description="The wwctl command (api: wwctl).")
    api_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:9873 (rest).")
    api_user: str | None = Field(default=None, description="An auth.conf user (api: rest).")
    api_password_file: str | None = Field(
        default=None, description="A file holding that user's password (api: rest)."
    )
    profile: str = Field(default="default", description="The Warewulf profile of added nodes.")
    network: str = Field(default="default", description="The network device name (netname).")
    image: str | None = Field(default=None, description="The image of machines without one.")
    overlay: str = Field(default="fuzz", description="The system overlay that starts the agent.")
    offerings: dict[str, OfferingSpec]
    machines: list[Machine] = Field(default_factory=list, description="The inventory.")
    max_nodes: int | None = Field(default=None, ge=1, description="A quota on held nodes.")
    join_timeout: float = Field(default=900, gt=0, description="Seconds to wait for the agent.")
    command_timeout: float = Field(default=120, gt=0, description="Seconds per wwctl/API call.")
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)

    @model_validator(mode="after")
    def _consistent(self) -> BaremetalConfig:
        if not self.offerings:
            raise ValueError("offerings: declare at least one machine class")
        names = [m.name for m in self.machines]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"machines: duplicate names {', '.join(duplicates)}")
        for machine in self.machines:
            self.offering_of(machine)
        if self.api == "rest" and not self.api_url:
            raise ValueError("api_url: required with api: rest")
        return self

    def offering_of(self, machine: Machine) -> str:
        """The offering a machine belongs to (ValueError when it names none or a wrong one)."""
        if machine.offering is None:
            if len(self.offerings) != 1:
                raise ValueError(f"machine {machine.name}: name its offering "
                                 f"({', '.join(sorted(self.offerings))})")
            return next(iter(self.offerings))
        if machine.offering not in self.offerings:
            raise ValueError(f"machine {machine.name}: unknown offering {machine.offering!r}")
        return machine.offering

    def image_of(self, machine: Machine) -> str:
        """The Warewulf image a machine boots."""
        image = machine.image or self.image
        if image is None:
            raise ProviderError(f"baremetal machine {machine.name}: no image (set image: in "
                                f"the provider block or on the machine)")
        return image

    def listen_of(self, machine: Machine) -> str:
        """The ``HOST:PORT`` the machine's agent binds."""
        return f"{self.bootstrap.listen_host}:{machine.agent_port or self.bootstrap.port}"

    def endpoint_of(self, machine: Machine) -> str:
        """Where fuzz reaches the machine's agent."""
        return f"{machine.ip or machine.name}:{machine.agent_port or self.bootstrap.port}"

    def password(self, base_dir: Path) -> str | None:
        """The REST API password from ``api_password_file`` (relative to the spec's dir)."""
        if self.api_password_file is None:
            return None
        path = Path(self.api_password_file).expanduser()
        path = path if path.is_absolute() else base_dir / path
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ProviderError(f"baremetal: cannot read api_password_file {path}: "
                                f"{exc.strerror}") from exc


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                     for e in exc.errors())


def config_of(ctx: ProviderContext) -> BaremetalConfig:
    """The block's validated config (already a model when it came through fuzz's loader)."""
    if isinstance(ctx.config, BaremetalConfig):
        return ctx.config
    try:
        return BaremetalConfig.model_validate(ctx.config)
    except ValidationError as exc:
        raise ProviderError(f"baremetal provider '{ctx.name}': {_problems(exc)}") from None


def machine_from_attributes(name: str, attributes: Mapping[str, Any]) -> Machine:
    """The machine a static pool entry describes (its node attributes)."""
    try:
        return Machine.model_validate(dict(attributes))
    except ValidationError as exc:
        raise ProviderError(f"baremetal node {name}: {_problems(exc)}") from None
