"""How the state conformance kit loads the backend under test: as installed, or in-process."""

from __future__ import annotations

from fuzz.plugin.loader import PluginSet, load_plugins


def plugins_with_state_backend(kind: str, plugin: object | None) -> PluginSet:
    """The installed plugins, plus ``plugin`` (a module or object with a
    ``fuzz_register_state_backends`` hook) in-process when none registers ``kind``."""
    found = load_plugins()
    if plugin is None or found.state_backends.get(kind) is not None:
        return found  # open_backend says what is missing, when it is
    return load_plugins(extra=[(f"conformance:{kind}", plugin)])
