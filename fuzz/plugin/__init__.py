"""The vendor API: everything a provider or state backend plugin needs, from one import.

::

    from fuzz.plugin import ProviderPlugin, ProviderContext, Offering, hookimpl

    class MyCloudProvider(ProviderPlugin):
        kind = "mycloud"
        config_schema = MyCloudConfig
        ...

    @hookimpl
    def fuzz_register_providers(register):
        register(MyCloudProvider())

See docs/providers.md. The submodules: :mod:`~fuzz.plugin.hookspecs` (the
registration hooks), :mod:`~fuzz.plugin.provider` and :mod:`~fuzz.plugin.state`
(the contracts), :mod:`~fuzz.plugin.kit` (base classes and helpers),
:mod:`~fuzz.plugin.cloudinit` (cloud-init user-data that starts the agent),
:mod:`~fuzz.plugin.backend_config` (state block validation) and
:mod:`~fuzz.plugin.loader` (how fuzz finds plugins; not needed by a vendor).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fuzz.errors import ConfigError, LockError, StateError
    from fuzz.plugin.backend_config import BackendConfig, lock_mismatch, parse_config
    from fuzz.plugin.cloudinit import BootstrapSettings, cloud_init_script
    from fuzz.plugin.hookspecs import RegisterProvider, RegisterStateBackend, hookimpl
    from fuzz.plugin.kit import (
        CloudInitProvider,
        NodeOperations,
        ProviderPlugin,
        StateBackendPlugin,
        priced_offering,
        validated_config,
    )
    from fuzz.plugin.provider import (
        TAG_ADDRESS,
        TAG_CLIENT_TOKEN,
        TAG_CLUSTER,
        AuthenticationError,
        CapacityUnavailableError,
        JoinInfo,
        NodeNotFoundError,
        NodeObservation,
        NodeRequest,
        NodeState,
        Offering,
        Provider,
        ProviderContext,
        ProviderError,
        QuotaExceededError,
    )
    from fuzz.plugin.state import LockInfo, StateBackend, StateVersion, VersionedBackend

# Loaded on first use (PEP 562): the node agent imports fuzz.plugin.provider for one
# dataclass and must not pay for pydantic and pluggy, which the kit and the state-block
# validation bring in.
_WHERE = {
    "AuthenticationError": "fuzz.plugin.provider",
    "BackendConfig": "fuzz.plugin.backend_config",
    "BootstrapSettings": "fuzz.plugin.cloudinit",
    "CapacityUnavailableError": "fuzz.plugin.provider",
    "CloudInitProvider": "fuzz.plugin.kit",
    "ConfigError": "fuzz.errors",
    "JoinInfo": "fuzz.plugin.provider",
    "LockError": "fuzz.errors",
    "LockInfo": "fuzz.plugin.state",
    "NodeNotFoundError": "fuzz.plugin.provider",
    "NodeObservation": "fuzz.plugin.provider",
    "NodeOperations": "fuzz.plugin.kit",
    "NodeRequest": "fuzz.plugin.provider",
    "NodeState": "fuzz.plugin.provider",
    "Offering": "fuzz.plugin.provider",
    "Provider": "fuzz.plugin.provider",
    "ProviderContext": "fuzz.plugin.provider",
    "ProviderError": "fuzz.plugin.provider",
    "ProviderPlugin": "fuzz.plugin.kit",
    "QuotaExceededError": "fuzz.plugin.provider",
    "RegisterProvider": "fuzz.plugin.hookspecs",
    "RegisterStateBackend": "fuzz.plugin.hookspecs",
    "StateBackend": "fuzz.plugin.state",
    "StateBackendPlugin": "fuzz.plugin.kit",
    "StateError": "fuzz.errors",
    "StateVersion": "fuzz.plugin.state",
    "TAG_ADDRESS": "fuzz.plugin.provider",
    "TAG_CLIENT_TOKEN": "fuzz.plugin.provider",
    "TAG_CLUSTER": "fuzz.plugin.provider",
    "VersionedBackend": "fuzz.plugin.state",
    "cloud_init_script": "fuzz.plugin.cloudinit",
    "hookimpl": "fuzz.plugin.hookspecs",
    "lock_mismatch": "fuzz.plugin.backend_config",
    "parse_config": "fuzz.plugin.backend_config",
    "priced_offering": "fuzz.plugin.kit",
    "validated_config": "fuzz.plugin.kit",
}


def __getattr__(name: str) -> Any:
    """The vendor API's ``name``, imported from its submodule the first time it is asked for."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fuzz.plugin' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "TAG_ADDRESS",
    "TAG_CLIENT_TOKEN",
    "TAG_CLUSTER",
    "AuthenticationError",
    "BackendConfig",
    "BootstrapSettings",
    "CapacityUnavailableError",
    "CloudInitProvider",
    "ConfigError",
    "JoinInfo",
    "LockError",
    "LockInfo",
    "NodeNotFoundError",
    "NodeObservation",
    "NodeOperations",
    "NodeRequest",
    "NodeState",
    "Offering",
    "Provider",
    "ProviderContext",
    "ProviderError",
    "ProviderPlugin",
    "QuotaExceededError",
    "RegisterProvider",
    "RegisterStateBackend",
    "StateBackend",
    "StateBackendPlugin",
    "StateError",
    "StateVersion",
    "VersionedBackend",
    "cloud_init_script",
    "hookimpl",
    "lock_mismatch",
    "parse_config",
    "priced_offering",
    "validated_config",
]
