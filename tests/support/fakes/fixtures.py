"""Pytest fixtures that serve the fake cloud APIs on 127.0.0.1 (import them in test modules)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fuzz.plugin.provider import (
    TAG_ADDRESS,
    TAG_CLIENT_TOKEN,
    TAG_CLUSTER,
    JoinInfo,
    NodeRequest,
    ProviderContext,
)
from tests.support.fakes.azure_arm import AzureArmFake
from tests.support.fakes.gcp_compute import GcpComputeFake
from tests.support.fakes.httpserver import ApiServer
from tests.support.fakes.tls import self_signed

GCP_PRICES = {"e2-standard-2": 0.07, "n2-standard-4": 0.19, "t2a-standard-4": 0.15,
              "a2-highgpu-1g": 3.67}


@dataclass
class GcpApi:
    """A running fake Compute Engine and provider contexts pointed at it."""

    fake: GcpComputeFake
    server: ApiServer

    def context(self, cluster: str = "demo", name: str = "gcp", **config: Any) -> ProviderContext:
        """A provider block of ``cluster`` using the fake (anonymously), with ``config`` on top.

        The config stays a mapping, as in a hand-made context; the plugin validates it.
        """
        settings = {"project": self.fake.project, "zone": self.fake.zone, "prices": GCP_PRICES,
                    "endpoint": self.server.url, "anonymous": True, **config}
        return ProviderContext("gcp", name, cluster, settings, Path("."))


@pytest.fixture
def gcp_api() -> Iterator[GcpApi]:
    """A fake Compute Engine whose operations take 50 ms."""
    fake = GcpComputeFake(op_seconds=0.05)
    with ApiServer(fake) as server:
        yield GcpApi(fake, server)


AZURE_PRICES = {"Standard_D2s_v5": 0.096, "Standard_D4s_v5": 0.192, "Standard_D4ps_v5": 0.154,
                "Standard_NC6s_v3": 3.06}


@dataclass
class AzureApi:
    """A running fake Resource Manager (HTTPS) and provider contexts pointed at it."""

    fake: AzureArmFake
    server: ApiServer
    ca_bundle: Path
    token_file: Path

    def context(self, cluster: str = "demo", name: str = "azure",
                **config: Any) -> ProviderContext:
        """A provider block of ``cluster`` using the fake with its token, ``config`` on top."""
        settings = {"subscription_id": self.fake.subscription, "resource_group": "fuzz-rg",
                    "location": self.fake.location,
                    "subnet_id": self.fake.subnet_id("fuzz-vnet", "nodes"),
                    "prices": AZURE_PRICES, "endpoint": self.server.url,
                    "ca_bundle": str(self.ca_bundle), "access_token_file": str(self.token_file),
                    "poll_interval": 0.02, **config}
        return ProviderContext("azure", name, cluster, settings, Path("."))


@pytest.fixture
def azure_api(tmp_path: Path) -> Iterator[AzureApi]:
    """A fake Resource Manager over TLS (a self-signed CA) whose operations take 50 ms."""
    cert, key = self_signed(tmp_path / "tls", "arm")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    fake = AzureArmFake(op_seconds=0.05)
    token_file = tmp_path / "arm-token"
    token_file.write_text(fake.token + "\n")
    with ApiServer(fake, tls) as server:
        fake.base_url = server.url
        yield AzureApi(fake, server, cert, token_file)


def node_request(
    token: str,
    address: str = "pool.cpu.node[0]",
    offering: str | None = "e2-standard-2",
    cluster: str = "demo",
    **attributes: Any,
) -> NodeRequest:
    """A create request as the engine makes it: fuzz tags, a join token, a bootstrap script."""
    return NodeRequest(
        address=address, pool=address.split(".")[1], client_token=token, offering=offering,
        labels={"role": "compute"}, attributes=attributes,
        tags={TAG_CLUSTER: cluster, TAG_ADDRESS: address, TAG_CLIENT_TOKEN: token},
        join=JoinInfo("join-secret"), bootstrap="#!/bin/sh\necho join-secret\n",
    )


@contextmanager
def turned(fake: object, **knobs: object) -> Iterator[None]:
    """Set a fake's knobs (attributes) for the duration of the block, then restore them."""
    before = {name: getattr(fake, name) for name in knobs}
    for name, value in knobs.items():
        setattr(fake, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(fake, name, value)
