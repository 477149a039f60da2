"""The workspace a CLI command acts on: the spec, the plugins, the state store."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from fuzz.cli.staterecord import record_state_block, recorded_state_block, same_backend
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.errors import StateError
from fuzz.lifecycle.gateway import ProviderGateway, provider_contexts
from fuzz.lifecycle.statestore import StateStore, open_store
from fuzz.orchestrate.connect import orchestrator_client
from fuzz.plugin.loader import PluginSet, load_plugins
from fuzz.plugin.provider import ProviderContext
from fuzz.plugin.state import LockInfo
from fuzz.spec.loader import LoadedSpec, validate_state_block


@dataclass
class Workspace:
    """Lazily loads what a command needs, so a command that needs less fails less."""

    spec_path: Path
    load_spec: Callable[[], LoadedSpec]
    """Parses the spec at ``spec_path`` (the app's, so that it is parsed once)."""

    @cached_property
    def loaded(self) -> LoadedSpec:
        """The parsed and validated cluster spec."""
        return self.load_spec()

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

    def check_state_block(self) -> None:
        """Validate the ``state:`` block with its plugin's schema (errors with file:line)."""
        name = self.loaded.spec.state.backend
        schema = self.plugins.require_state_backend(name).impl.config_schema
        if schema is not None:
            validate_state_block(self.loaded, schema)

    def open_spec_store(self) -> StateStore:
        """A store for the spec's ``state:`` block, whatever backend was used before."""
        self.check_state_block()
        return open_store(self.loaded.spec.state, self.loaded.base_dir, self.plugins)

    def open_recorded_store(self) -> StateStore | None:
        """A store for the ``state:`` block last used with this spec, if there is a record."""
        recorded = recorded_state_block(self.spec_path)
        if recorded is None:
            return None
        return open_store(recorded, self.loaded.base_dir, self.plugins)

    def record_state_block(self) -> None:
        """Record the spec's ``state:`` block as the one in use (``fuzz init``)."""
        record_state_block(self.spec_path, self.loaded.spec.state)

    @cached_property
    def store(self) -> StateStore:
        """The state store of the spec's ``state:`` block.

        Refuses (StateError) when the block names another backend than the one last
        used here; see :mod:`fuzz.cli.staterecord`.
        """
        spec = self.loaded.spec.state
        recorded = recorded_state_block(self.spec_path)
        store = self.open_spec_store()
        if recorded is not None and not same_backend(recorded, spec):
            before = open_store(recorded, self.loaded.base_dir, self.plugins).describe()
            if before != store.describe():
                raise StateError(
                    f"the state: block changed since fuzz init (from {before} to "
                    f"{store.describe()}): run fuzz init --migrate-state to move the state, "
                    "or fuzz init --reconfigure to use the new backend as it is"
                )
        with contextlib.suppress(OSError):  # a read-only checkout still works, unprotected
            self.record_state_block()
        return store

    @contextmanager
    def locked(self, operation: str, timeout: float) -> Iterator[LockInfo]:
        """Hold the state lock for ``operation``, waiting up to ``timeout`` seconds."""
        with self.store.lock(operation, timeout) as info:
            yield info
