"""The gcp provider passes the conformance kit, through the real REST clients and the fake
Compute Engine; each error category is the fake answering as Compute Engine does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest
from fuzz_gcp import plugin
from fuzz_gcp.config import GcpConfig

from fuzz.testing.provider_conformance import ConformanceTarget, ErrorCategory, ProviderConformance
from tests.support.fakes.fixtures import GcpApi, turned

FAULTS: dict[ErrorCategory, dict[str, object]] = {
    "quota": {"cpu_quota": 0},                    # 403 quotaExceeded
    "capacity": {"zone_exhausted": True},         # operation ends ZONE_RESOURCE_POOL_EXHAUSTED
    "auth": {"token": "a-token-we-do-not-have"},  # 401 for anonymous requests
    "not-found": {"networks": set()},             # 404 notFound: the network is gone
}


class TestGcpConformance(ProviderConformance):
    """Every behaviour of the kit, against the fake Compute Engine."""

    @pytest.fixture
    def conformance_target(self, gcp_api: GcpApi) -> Iterator[ConformanceTarget]:
        ctx = gcp_api.context(cluster="conformance")
        validated = type(ctx)(ctx.kind, ctx.name, ctx.cluster,
                              GcpConfig.model_validate(ctx.config), ctx.base_dir)

        def inject(category: ErrorCategory) -> AbstractContextManager[None]:
            return turned(gcp_api.fake, **FAULTS[category])

        yield ConformanceTarget(plugin=plugin, context=validated, offering="e2-standard-2",
                                inject_error=inject, timeout=10, poll_interval=0.02)
