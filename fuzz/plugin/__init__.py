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
