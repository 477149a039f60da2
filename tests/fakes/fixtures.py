"""Pytest fixtures that serve the fake cloud APIs on 127.0.0.1 (import them in test modules)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakes.gcp_compute import GcpComputeFake
from fakes.httpserver import ApiServer
from fuzz.provider_api import (
    TAG_ADDRESS,
    TAG_CLIENT_TOKEN,
    TAG_CLUSTER,
    JoinInfo,
    NodeRequest,
    ProviderContext,
)

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
