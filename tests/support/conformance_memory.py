"""An in-memory provider, sound or with one chosen flaw, run through the conformance kit.

Not collected by ``make test`` on its own (no ``test_`` prefix):
``tests/providers/test_conformance_kit.py`` runs this module in a pytest subprocess and checks
that the kit passes the sound provider and fails each flawed one where it should.
The provider registers in-process (no entry point), and its bootstrap payload is the
real cloud-init script, so the kit's in-process and script paths are both used.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from fuzz.plugin.cloudinit import BootstrapSettings, cloud_init_script
from fuzz.plugin.kit import ProviderPlugin
from fuzz.plugin.provider import (
    JoinInfo,
    NodeNotFoundError,
    NodeObservation,
    NodeRequest,
    Offering,
    ProviderContext,
    ProviderError,
)
from fuzz.testing.provider_conformance import (
    ERROR_TYPES,
    ConformanceTarget,
    ErrorCategory,
    ProviderConformance,
)

PENDING_FOR = 0.2  # seconds a new node reads "pending", so that the kit has to wait


class MemoryConfig(BaseModel):
    """The memory provider block (nothing to configure)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class _Node:
    observation: NodeObservation
    cluster: str
    born: float


class MemoryProvider(ProviderPlugin):
    """Nodes in a dict; ``flaws`` switch off one rule of the provider contract each."""

    kind = "memory"
    config_schema = MemoryConfig

    def __init__(self, flaws: frozenset[str] = frozenset()) -> None:
        """A provider with no nodes and the given flaws."""
        self.flaws = flaws
        self.nodes: dict[str, _Node] = {}
        self.fail_next: ErrorCategory | None = None
        self._ids = itertools.count(1)

    def offerings(self, ctx: ProviderContext) -> list[Offering] | None:
        """One small offering."""
        return [Offering("mem-1", cores=1, memory_bytes=2**30, price_per_hour=0.01)]

    def bootstrap_payload(
        self, ctx: ProviderContext, node: NodeRequest, join: JoinInfo
    ) -> str | None:
        """The real cloud-init script (its agent listens on any free port)."""
        if "payload-without-token" in self.flaws:
            join = replace(join, token="not-the-join-token")
        return cloud_init_script(node, join, BootstrapSettings(port=0))

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation | None:
        """A pending node, or the existing one of the same token; or the injected failure."""
        if self.fail_next is not None:
            category, self.fail_next = self.fail_next, None
            error = ProviderError if "untyped-errors" in self.flaws else ERROR_TYPES[category]
            raise error(f"memory provider: injected {category} failure for {node.address}")
        if "duplicate-creates" not in self.flaws:
            for held in self.nodes.values():
                if held.observation.client_token == node.client_token:
                    return self._observe(held)
        provider_id = f"mem-{next(self._ids)}"
        observation = NodeObservation(provider_id, node.address, node.client_token, "pending")
        self.nodes[provider_id] = _Node(observation, ctx.cluster, time.monotonic())
        return observation

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation] | None:
        """The cluster's nodes: pending for PENDING_FOR seconds, then running."""
        return [self._observe(n) for n in self.nodes.values()
                if n.cluster == ctx.cluster or "ignores-cluster" in self.flaws]

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool | None:
        """Forget the node."""
        if self.nodes.pop(node.provider_id, None) is None and "strict-delete" in self.flaws:
            raise NodeNotFoundError(f"memory provider: no node {node.provider_id}")
        return True

    def _observe(self, node: _Node) -> NodeObservation:
        running = time.monotonic() - node.born >= PENDING_FOR
        return replace(node.observation, state="running" if running else "pending")


@contextmanager
def _fail_next(provider: MemoryProvider, category: ErrorCategory) -> Iterator[None]:
    provider.fail_next = category
    try:
        yield
    finally:
        provider.fail_next = None


def _target(tmp_path: Path, flaws: frozenset[str] = frozenset(), **fields: object
            ) -> ConformanceTarget:
    provider = MemoryProvider(flaws)
    ctx = ProviderContext("memory", "memory", "kitcheck", MemoryConfig(), tmp_path)
    target = ConformanceTarget(provider, ctx, "mem-1", lambda c: _fail_next(provider, c),
                               timeout=5, poll_interval=0.05)
    return replace(target, **fields)


class TestSound(ProviderConformance):
    @pytest.fixture
    def conformance_target(self, tmp_path: Path) -> ConformanceTarget:
        """The memory provider for this case."""
        return _target(tmp_path)


class TestDuplicateCreates(ProviderConformance):
    @pytest.fixture
    def conformance_target(self, tmp_path: Path) -> ConformanceTarget:
        """The memory provider for this case."""
        return _target(tmp_path, frozenset({"duplicate-creates"}))


class TestIgnoresCluster(ProviderConformance):
    @pytest.fixture
    def conformance_target(self, tmp_path: Path) -> ConformanceTarget:
        """The memory provider for this case."""
        return _target(tmp_path, frozenset({"ignores-cluster"}))


class TestStrictDelete(ProviderConformance):
    @pytest.fixture
    def conformance_target(self, tmp_path: Path) -> ConformanceTarget:
        """The memory provider for this case."""
        return _target(tmp_path, frozenset({"strict-delete"}))


class TestUntypedErrors(ProviderConformance):
    @pytest.fixture
    def conformance_target(self, tmp_path: Path) -> ConformanceTarget:
        """The memory provider for this case."""
        return _target(tmp_path, frozenset({"untyped-errors"}))


class TestPayloadWithoutToken(ProviderConformance):
    @pytest.fixture
    def conformance_target(self, tmp_path: Path) -> ConformanceTarget:
        """The memory provider for this case."""
        return _target(tmp_path, frozenset({"payload-without-token"}))


class TestUnexplainedExemption(ProviderConformance):
    @pytest.fixture
    def conformance_target(self, tmp_path: Path) -> ConformanceTarget:
        """The memory provider for this case."""
        return _target(tmp_path, error_categories=frozenset({"quota", "capacity", "auth"}))
