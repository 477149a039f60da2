"""The workspace a CLI command acts on: the spec, the plugins, the state store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from fuzz.orchestrate.client import OrchestratorClient
from fuzz.orchestrate.connect import orchestrator_client
from fuzz.plugins import PluginSet, load_plugins
from fuzz.provider_api import ProviderContext
from fuzz.provisioning import ProviderGateway, provider_contexts
from fuzz.spec.loader import LoadedSpec, load_cluster_spec
from fuzz.state_api import LockInfo
from fuzz.statestore import StateStore, open_backend


@dataclass
class Workspace:
    """Lazily loads what a command needs, so a command that needs less fails less."""

    spec_path: Path

    @cached_property
    def loaded(self) -> LoadedSpec:
        """The parsed and validated cluster spec."""
        return load_cluster_spec(self.spec_path, display_name=str(self.spec_path))

    @cached_property
    def plugins(self) -> PluginSet:
        """Every installed provider and state plugin."""
        return load_plugins()

    @cached_property
    def contexts(self) -> dict[str, ProviderContext]:
        """Each provider block, validated by its plugin."""
        return provider_contexts(self.loaded, self.plugins)

    @cached_property
    def gateway(self) -> ProviderGateway:
        """The engine's node operations through the provider plugins.

        With an ``orchestrator:`` block, new nodes get their join tokens from it.
        """
        if self.loaded.spec.orchestrator is None:
            return ProviderGateway(self.plugins, self.contexts)
        return ProviderGateway(self.plugins, self.contexts, self.orchestrator.issue_join_token)

    @cached_property
    def orchestrator(self) -> OrchestratorClient:
        """A client for the cluster's orchestrator (from the spec's ``orchestrator:`` block)."""
        return orchestrator_client(self.loaded)

    @cached_property
    def store(self) -> StateStore:
        """The state store of the spec's ``state:`` block."""
        state = self.loaded.spec.state
        backend = open_backend(state.backend, state.backend_config(), self.loaded.base_dir,
                               self.plugins)
        return StateStore(backend)

    @contextmanager
    def locked(self, operation: str, timeout: float) -> Iterator[LockInfo]:
        """Hold the state lock for ``operation``, waiting up to ``timeout`` seconds."""
        with self.store.lock(operation, timeout) as info:
            yield info
