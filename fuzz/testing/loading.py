"""How the conformance kits load the plugin under test: as installed, or in-process."""

from __future__ import annotations

import pytest

from fuzz.plugins import PROVIDER_GROUP, PluginSet, load_plugins


def plugins_with(group: str, key: str, plugin: object | None) -> PluginSet:
    """The installed plugins, plus ``plugin`` in-process when no entry point claims ``key``.

    ``group`` is the entry-point group (providers or state backends) and ``key`` the
    kind or backend name under test. When an installed entry point claims ``key``,
    it must be ``plugin`` itself (when given), or the test fails: the kit would
    otherwise test another object than the one its target names.
    """
    found = load_plugins()
    claimed = found.provider_kinds() if group == PROVIDER_GROUP else found.state_backends()
    info = claimed.get(key)
    if info is None:
        if plugin is None:
            return found  # open_backend / require_provider say what is missing
        return load_plugins(extra=[(f"conformance:{key}", plugin)])
    registered = found.manager.get_plugin(f"{group}:{info.name}")
    if plugin is not None and registered is not plugin:
        pytest.fail(
            f"{key!r} is published by entry point {info.name} = {info.value} "
            f"({info.distribution}), which is not the target's plugin object"
        )
    return found
