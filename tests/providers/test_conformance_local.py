"""The built-in ``local`` provider passes the provider conformance kit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fuzz.default_plugins import local_provider as local
from fuzz.plugin.provider import (
    TAG_ADDRESS,
    TAG_CLIENT_TOKEN,
    TAG_CLUSTER,
    JoinInfo,
    NodeRequest,
    ProviderContext,
)
from fuzz.testing.provider_conformance import ConformanceTarget, ErrorCategory, ProviderConformance
from tests.support.cliutil import kill_agents

MAX_NODES = 2


def _filler(ctx: ProviderContext, index: int) -> NodeRequest:
    address = f"pool.filler.node[{index}]"
    token = f"filler{index:026x}"
    join = JoinInfo(token=f"filler-join-{index}")
    node = NodeRequest(address, "filler", token, "local", {}, {},
                       {TAG_CLUSTER: ctx.cluster, TAG_ADDRESS: address, TAG_CLIENT_TOKEN: token},
                       join)
    return node


@contextmanager
def _quota_full(ctx: ProviderContext, category: ErrorCategory) -> Iterator[None]:
    """Fill the block's max_nodes with real nodes, so that the next create exceeds it."""
    assert category == "quota", f"the local target does not inject {category}"
    fillers = [_filler(ctx, i) for i in range(MAX_NODES)]
    created = [local.plugin.create_node(ctx, node) for node in fillers]
    try:
        yield
    finally:
        for observation in created:
            if observation is not None:
                local.plugin.delete_node(ctx, observation)


class TestLocalConformance(ProviderConformance):
    """Every behaviour of the kit, against agent processes on this machine."""

    @pytest.fixture
    def conformance_target(self, tmp_path: Path) -> Iterator[ConformanceTarget]:
        config = local.LocalConfig(
            workdir=str(tmp_path / "nodes"), start_timeout=20, stop_timeout=5,
            max_nodes=MAX_NODES,
        )
        ctx = ProviderContext("local", "local", "conformance", config, tmp_path)
        try:
            yield ConformanceTarget(
                plugin=local.plugin,
                context=ctx,
                offering="local",
                inject_error=lambda category: _quota_full(ctx, category),
                error_categories=frozenset({"quota"}),
                error_exemptions={
                    "capacity": "nodes are agent processes on this machine; there is no pool "
                    "of capacity to run out of (max_nodes is the quota)",
                    "auth": "no credentials are involved: agents run as the calling user",
                    "not-found": "a create names nothing that could be missing "
                    "(no image, network or machine)",
                },
                timeout=20,
            )
        finally:
            kill_agents(tmp_path)
