"""The vendor API's hooks: a plugin registers the provider kinds and state backends it brings.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`,
published through an entry point::

    [project.entry-points."fuzz.providers"]
    mycloud = "fuzz_mycloud"

    [project.entry-points."fuzz.state"]
    mystore = "fuzz_mystore.backend"

Each hook is called once per plugin with a ``register`` callable; the plugin calls
it once for every kind it brings (one plugin may bring several)::

    @hookimpl
    def fuzz_register_providers(register):
        register(MyCloudProvider())          # a fuzz.plugin.Provider with kind "mycloud"

The loader files what is registered in a registry keyed by kind, so fuzz calls the
one implementation of a kind directly and no implementation checks which kind it
was asked for. A kind registered twice (by two distributions) stops the loading
with one line naming both. Failures in the operations themselves are reported by
raising the typed errors of :mod:`fuzz.plugin.provider` (quota, capacity, auth,
not found).

``fuzz.testing.provider_conformance`` runs the same behavioural suite against any provider;
run it against yours before publishing.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from fuzz.plugin.kit import StateBackendPlugin
from fuzz.plugin.provider import Provider

PROJECT = "fuzz"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

RegisterProvider = Callable[[Provider], None]
RegisterStateBackend = Callable[[StateBackendPlugin], None]


@hookspec
def fuzz_register_providers(register: RegisterProvider) -> None:
    """Call ``register(provider)`` once for each provider kind this plugin brings.

    ``provider`` satisfies :class:`fuzz.plugin.provider.Provider`; subclassing
    :class:`fuzz.plugin.kit.ProviderPlugin` (or ``CloudInitProvider``) is the easy way.
    Its ``kind`` is the key a cluster spec's provider block names.
    """


@hookspec
def fuzz_register_state_backends(register: RegisterStateBackend) -> None:
    """Call ``register(backend)`` once for each state backend this plugin brings.

    ``backend`` is a :class:`fuzz.plugin.kit.StateBackendPlugin`: its ``kind`` (the
    ``backend:`` of a spec's ``state:`` block), its config schema and how to open it.
    """
