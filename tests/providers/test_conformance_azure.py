"""The azure provider passes the conformance kit, through the real azure-mgmt clients and the
fake Resource Manager; each error category is the fake answering as ARM does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest
from fuzz_azure import plugin
from fuzz_azure.config import AzureConfig

from fuzz.testing.provider_conformance import ConformanceTarget, ErrorCategory, ProviderConformance
from tests.support.fakes.fixtures import AzureApi, turned

FAULTS: dict[ErrorCategory, dict[str, object]] = {
    "quota": {"core_quota": 0},            # 409 OperationNotAllowed (cores quota)
    "capacity": {"allocation_fails": True},  # the VM operation ends AllocationFailed
    "auth": {"token": "rotated"},          # 401 InvalidAuthenticationToken
    "not-found": {"groups": set()},        # 404 ResourceGroupNotFound
}


class TestAzureConformance(ProviderConformance):
    """Every behaviour of the kit, against the fake Resource Manager."""

    @pytest.fixture
    def conformance_target(self, azure_api: AzureApi) -> Iterator[ConformanceTarget]:
        ctx = azure_api.context(cluster="conformance")
        validated = type(ctx)(ctx.kind, ctx.name, ctx.cluster,
                              AzureConfig.model_validate(ctx.config), ctx.base_dir)

        def inject(category: ErrorCategory) -> AbstractContextManager[None]:
            return turned(azure_api.fake, **FAULTS[category])

        yield ConformanceTarget(plugin=plugin, context=validated, offering="Standard_D2s_v5",
                                inject_error=inject, timeout=10, poll_interval=0.02)
