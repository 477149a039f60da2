"""The ``aws`` provider block, and the price table its offerings are priced from.

::

    providers:
      aws:
        region: eu-west-1
        ami: ami-0123456789abcdef0      # with fuzz installed, or set bootstrap.install
        subnet_id: subnet-0123456789abcdef0
        security_group_ids: [sg-0123456789abcdef0]  # open the agent port to the orchestrator
        instance_profile: fuzz-node      # name or ARN; optional
        prices: {c7i.large: 0.0893, c7i.4xlarge: 0.714}
        price_file: prices.yaml              # more prices: instance type -> price per hour
        spot: false

Credentials come from boto3's standard chain (environment, ``profile`` in
``~/.aws``, SSO, the instance or task role); the block never holds secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fuzz.plugin.cloudinit import BootstrapSettings
from fuzz.plugin.provider import ProviderError

AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")
SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")


def _matching(pattern: re.Pattern[str], what: str, value: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r} (expected {pattern.pattern[1:-1]})")
    return value


class AwsConfig(BaseModel):
    """The ``aws`` provider block: where instances go, what they run, and what they cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = Field(description="The EC2 region, e.g. eu-west-1.")
    endpoint_url: str | None = Field(
        default=None, description="Another EC2 endpoint (a VPC endpoint, or a test server).")
    profile: str | None = Field(
        default=None, description="A named profile of ~/.aws; default: boto3's standard chain.")
    ami: str = Field(description="The image every instance boots.")
    subnet_id: str | None = Field(default=None, description="Default: the default VPC's.")
    security_group_ids: tuple[str, ...] = Field(
        default=(), description="Default: the VPC's default group.")
    instance_profile: str | None = Field(
        default=None, description="An IAM instance profile, by name or ARN.")
    prices: dict[str, float] = Field(
        default_factory=dict, description="Instance type -> price per hour (over price_file).")
    price_file: str | None = Field(
        default=None, description="A YAML or JSON file: instance type -> price per hour.")
    spot: bool = Field(default=False, description="Ask for spot instances.")
    spot_max_price: float | None = Field(
        default=None, gt=0, description="The most to pay per hour for a spot instance.")
    max_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts per EC2 call (botocore standard retries).")
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)

    @field_validator("ami")
    @classmethod
    def _ami(cls, value: str) -> str:
        return _matching(AMI, "AMI id", value)

    @field_validator("subnet_id")
    @classmethod
    def _subnet(cls, value: str | None) -> str | None:
        return None if value is None else _matching(SUBNET, "subnet id", value)

    @field_validator("security_group_ids")
    @classmethod
    def _groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_matching(SECURITY_GROUP, "security group id", group) for group in value)

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: dict[str, float]) -> dict[str, float]:
        for name, price in value.items():
            _check_price(name, price)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AwsConfig:
        if self.spot_max_price is not None and not self.spot:
            raise ValueError("spot_max_price: only with spot: true")
        if self.bootstrap.port == 0:
            raise ValueError("bootstrap.port: must be a fixed port, so that fuzz can reach "
                             "the agent at the instance's private address")
        return self

    def price_table(self, base_dir: Path) -> dict[str, float]:
        """Instance type -> price per hour: ``price_file`` (relative to ``base_dir``, the
        spec's directory), overridden by ``prices``."""
        table = _read_price_file(self.price_file, base_dir) if self.price_file else {}
        return {**table, **self.prices}


def _check_price(name: str, price: Any) -> float:
    if isinstance(price, bool) or not isinstance(price, int | float) or not price >= 0:
        raise ValueError(f"price of {name}: {price!r} is not a price per hour (a number >= 0)")
    return float(price)


def _read_price_file(name: str, base_dir: Path) -> dict[str, float]:
    path = Path(name).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ProviderError(f"aws: cannot read price_file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ProviderError(f"aws: price_file {path} is not YAML or JSON: "
                            f"{' '.join(str(exc).split())}") from exc
    if not isinstance(data, Mapping):
        raise ProviderError(f"aws: price_file {path} must map instance types to prices per "
                            f"hour, e.g. 'c7i.large: 0.0893'")
    try:
        return {str(key): _check_price(str(key), value) for key, value in data.items()}
    except ValueError as exc:
        raise ProviderError(f"aws: price_file {path}: {exc}") from None
