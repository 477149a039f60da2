"""Discover provider and state-backend plugins through entry points, tolerating broken ones.

pluggy's own ``load_setuptools_entrypoints`` stops at the first plugin that fails
to import; fuzz instead records each failure with its distribution so that a
broken plugin only breaks the commands that need it, with a message naming it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib.metadata import EntryPoint, entry_points

import pluggy

from fuzz import hookspecs
from fuzz.errors import PluginError

PROVIDER_GROUP = "fuzz.providers"
STATE_GROUP = "fuzz.state"


@dataclass(frozen=True)
class PluginInfo:
    """One entry point and the distribution that published it."""

    group: str
    name: str
    value: str
    distribution: str
    version: str
    kinds: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class PluginSet:
    """The loaded plugin manager plus what was found, loaded and failed."""

    manager: pluggy.PluginManager
    plugins: list[PluginInfo] = field(default_factory=list)

    def provider_kinds(self) -> dict[str, PluginInfo]:
        """Map each provider kind to the plugin answering for it."""
        return {k: p for p in self.plugins if p.group == PROVIDER_GROUP for k in p.kinds}

    def state_backends(self) -> dict[str, PluginInfo]:
        """Map each state backend name to the plugin answering for it."""
        return {k: p for p in self.plugins if p.group == STATE_GROUP for k in p.kinds}

    def failures(self) -> list[PluginInfo]:
        """Plugins whose import or registration failed."""
        return [p for p in self.plugins if p.error]

    def require_provider(self, kind: str) -> PluginInfo:
        """Return the plugin for ``kind`` or raise a PluginError saying what to install."""
        return self._require(kind, self.provider_kinds(), PROVIDER_GROUP, "provider")

    def require_state_backend(self, name: str) -> PluginInfo:
        """Return the plugin for state backend ``name`` or raise a PluginError."""
        return self._require(name, self.state_backends(), STATE_GROUP, "state backend")

    def _require(
        self, key: str, known: dict[str, PluginInfo], group: str, what: str
    ) -> PluginInfo:
        if key in known:
            return known[key]
        broken = [p for p in self.failures() if p.group == group and p.name == key]
        if broken:
            p = broken[0]
            raise PluginError(
                f"{what} plugin '{key}' from distribution {p.distribution} {p.version} "
                f"failed to load: {p.error}"
            )
        available = ", ".join(sorted(known)) or "none"
        raise PluginError(
            f"no {what} plugin for '{key}' is installed (installed: {available}); "
            f"install the distribution that provides it, e.g. pip install fuzz-provider-{key}"
            if group == PROVIDER_GROUP
            else f"no {what} plugin for '{key}' is installed (installed: {available})"
        )


def _distribution(ep: EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "unknown", "?"
    return dist.metadata["Name"] or "unknown", dist.version


def _register(
    manager: pluggy.PluginManager, group: str, ep: EntryPoint, kinds_hook: str
) -> PluginInfo:
    dist_name, version = _distribution(ep)
    base = PluginInfo(group, ep.name, ep.value, dist_name, version)
    plugin_name = f"{group}:{ep.name}"
    try:
        if manager.get_plugin(plugin_name) is None:
            manager.register(ep.load(), name=plugin_name)
        plugin = manager.get_plugin(plugin_name)
        kinds_impl = getattr(plugin, kinds_hook, None)
        kinds = tuple(kinds_impl()) if kinds_impl else ()
    except Exception as exc:  # any import or registration failure is reported, not raised
        return replace(base, error=f"{type(exc).__name__}: {exc}")
    return replace(base, kinds=kinds)


def load_plugins(extra: Iterable[tuple[str, object]] = ()) -> PluginSet:
    """Load every ``fuzz.providers`` and ``fuzz.state`` entry point into one plugin manager.

    ``extra`` registers additional in-process plugins as (name, module-or-object)
    pairs; tests and vendors' conformance runs use it.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    found = PluginSet(manager)
    hooks = {PROVIDER_GROUP: "fuzz_provider_kinds", STATE_GROUP: "fuzz_state_backend_names"}
    for group, kinds_hook in hooks.items():
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            found.plugins.append(_register(manager, group, ep, kinds_hook))
    for name, plugin in extra:
        manager.register(plugin, name=name)
        for group, kinds_hook in hooks.items():
            impl = getattr(plugin, kinds_hook, None)
            if impl:
                found.plugins.append(PluginInfo(group, name, name, "in-process", "-",
                                                tuple(impl())))
    _check_unique(found)
    return found


def _check_unique(found: PluginSet) -> None:
    for group in (PROVIDER_GROUP, STATE_GROUP):
        seen: dict[str, PluginInfo] = {}
        for plugin in found.plugins:
            if plugin.group != group:
                continue
            for kind in plugin.kinds:
                if kind in seen:
                    other = seen[kind]
                    raise PluginError(
                        f"'{kind}' is claimed by two plugins: {other.distribution} "
                        f"({other.value}) and {plugin.distribution} ({plugin.value})"
                    )
                seen[kind] = plugin
