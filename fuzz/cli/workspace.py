"""The workspace a CLI command acts on: the spec, the plugins, the state store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from fuzz.plugins import PluginSet, load_plugins
from fuzz.provider_api import ProviderContext
from fuzz.provisioning import ProviderGateway, provider_contexts
from fuzz.spec.loader import LoadedSpec, load_cluster_spec, validate_state_block
from fuzz.state_api import LockInfo
from fuzz.statestore import StateStore, open_store


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
        """The engine's node operations through the provider plugins."""
        return ProviderGateway(self.plugins, self.contexts)

    def check_state_block(self) -> None:
        """Validate the ``state:`` block with its plugin's schema (errors with file:line)."""
        name = self.loaded.spec.state.backend
        self.plugins.require_state_backend(name)
        schema = self.plugins.manager.hook.fuzz_state_config_schema(name=name)
        if schema is not None:
            validate_state_block(self.loaded, schema)

    @cached_property
    def store(self) -> StateStore:
        """The state store of the spec's ``state:`` block."""
        self.check_state_block()
        return open_store(self.loaded.spec.state, self.loaded.base_dir, self.plugins)

    @contextmanager
    def locked(self, operation: str, timeout: float) -> Iterator[LockInfo]:
        """Hold the state lock for ``operation``, waiting up to ``timeout`` seconds."""
        with self.store.lock(operation, timeout) as info:
            yield info
