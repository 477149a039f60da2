"""Discover plugins, call their registration hooks, and keep what they register by kind.

Plugins come from the ``fuzz.providers`` and ``fuzz.state`` entry points, plus the
core's own :mod:`fuzz.default_plugins` (the local provider and the local state
backend, there without any installed distribution). Each plugin's
``fuzz_register_providers`` and ``fuzz_register_state_backends`` are called with a
``register`` that files the implementation under its kind, with the plugin that
registered it. pluggy's own ``load_setuptools_entrypoints`` stops at the first
plugin that fails to import; fuzz records each failure with its distribution so
that a broken plugin only breaks the commands that need it. A kind registered
twice is refused at once, with one line naming both distributions.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from typing import Any, Generic, TypeVar

import pluggy

from fuzz.errors import PluginError
from fuzz.plugin import hookspecs
from fuzz.plugin.kit import StateBackendPlugin
from fuzz.plugin.provider import Provider

PROVIDER_GROUP = "fuzz.providers"
STATE_GROUP = "fuzz.state"
DEFAULT_PLUGINS = (  # (group, name, module), as if the core published them as entry points
    (PROVIDER_GROUP, "local", "fuzz.default_plugins.local_provider"),
    (STATE_GROUP, "local", "fuzz.default_plugins.local_state"),
)
CORE_DISTRIBUTION = "fuzz"

T = TypeVar("T")


@dataclass(frozen=True)
class PluginInfo:
    """One plugin: where it was found, the distribution that published it, what it registered.

    ``registered_as`` is its name in the plugin manager; ``kinds`` the provider kinds
    and state backends it registered; ``error`` why it failed to import or register.
    """

    group: str
    name: str
    value: str
    distribution: str
    version: str
    kinds: tuple[str, ...] = ()
    error: str | None = None
    registered_as: str = ""

    def origin(self) -> str:
        """``distribution version (value)``, as messages name a plugin."""
        return f"{self.distribution} {self.version} ({self.value})"


@dataclass(frozen=True)
class Registration(Generic[T]):
    """One registered kind: its implementation and the plugin that registered it."""

    impl: T
    plugin: PluginInfo


class Registry(Generic[T]):
    """Implementations keyed by kind; a kind is registered once."""

    def __init__(self, what: str) -> None:
        """An empty registry of ``what`` (``provider``, ``state backend``) implementations."""
        self.what = what
        self.entries: dict[str, Registration[T]] = {}

    def add(self, kind: str, impl: T, plugin: PluginInfo) -> None:
        """File ``impl`` under ``kind``; a PluginError when another plugin holds that kind."""
        if not kind:
            raise PluginError(f"{plugin.origin()} registered a {self.what} without a kind")
        held = self.entries.get(kind)
        if held is not None:
            raise PluginError(
                f"{self.what} kind '{kind}' is registered twice: by {held.plugin.origin()} "
                f"and by {plugin.origin()}; uninstall one of the two distributions"
            )
        self.entries[kind] = Registration(impl, plugin)

    def get(self, kind: str) -> Registration[T] | None:
        """The registration of ``kind``, or None."""
        return self.entries.get(kind)


@dataclass
class PluginSet:
    """The plugins found, and the registries of what they registered."""

    manager: pluggy.PluginManager
    plugins: list[PluginInfo] = field(default_factory=list)
    providers: Registry[Provider] = field(default_factory=lambda: Registry("provider"))
    state_backends: Registry[StateBackendPlugin] = field(
        default_factory=lambda: Registry("state backend")
    )

    def provider_kinds(self) -> dict[str, PluginInfo]:
        """Map each provider kind to the plugin that registered it."""
        return {kind: r.plugin for kind, r in self.providers.entries.items()}

    def state_backend_kinds(self) -> dict[str, PluginInfo]:
        """Map each state backend to the plugin that registered it."""
        return {kind: r.plugin for kind, r in self.state_backends.entries.items()}

    def failures(self) -> list[PluginInfo]:
        """Plugins whose import or registration failed."""
        return [p for p in self.plugins if p.error]

    def require_provider(self, kind: str) -> Registration[Provider]:
        """The provider of ``kind``, or a PluginError saying what to install."""
        return self._require(kind, self.providers, PROVIDER_GROUP)

    def require_state_backend(self, kind: str) -> Registration[StateBackendPlugin]:
        """The state backend ``kind``, or a PluginError saying what to install."""
        return self._require(kind, self.state_backends, STATE_GROUP)

    def _require(self, kind: str, registry: Registry[T], group: str) -> Registration[T]:
        found = registry.get(kind)
        if found is not None:
            return found
        broken = [p for p in self.failures() if p.group == group and p.name == kind]
        if broken:
            raise PluginError(
                f"{registry.what} plugin '{kind}' from distribution {broken[0].distribution} "
                f"{broken[0].version} failed to load: {broken[0].error}"
            )
        available = ", ".join(sorted(registry.entries)) or "none"
        hint = (f"; install the distribution that provides it, e.g. pip install "
                f"fuzz-provider-{kind}" if group == PROVIDER_GROUP else "")
        raise PluginError(
            f"no {registry.what} plugin for '{kind}' is installed (installed: {available}){hint}"
        )


def _distribution(ep: EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "unknown", "?"
    return dist.metadata["Name"] or "unknown", dist.version


def _core_version() -> str:
    try:
        return version(CORE_DISTRIBUTION)
    except PackageNotFoundError:  # a source checkout that was never installed
        return "?"


def _call_registration(
    manager: pluggy.PluginManager, found: PluginSet, info: PluginInfo
) -> PluginInfo:
    """Call the plugin's two registration hooks and file what it registers; return its info."""
    providers: list[Provider] = []
    backends: list[StateBackendPlugin] = []
    registers: dict[str, Callable[[Any], None]] = {
        "fuzz_register_providers": providers.append,
        "fuzz_register_state_backends": backends.append,
    }
    for hook_name, register in registers.items():
        caller: pluggy.HookCaller = getattr(manager.hook, hook_name)
        for impl in caller.get_hookimpls():
            if impl.plugin_name == info.registered_as:
                impl.function(register=register)
    info = replace(info, kinds=tuple(p.kind for p in providers) + tuple(b.kind for b in backends))
    for provider in providers:
        found.providers.add(provider.kind, provider, info)
    for backend in backends:
        found.state_backends.add(backend.kind, backend, info)
    return info


def _add(manager: pluggy.PluginManager, found: PluginSet, info: PluginInfo,
         load: Callable[[], object]) -> None:
    """Register one plugin and its kinds; an import or hook failure is recorded, not raised.

    A duplicate kind (PluginError) is raised: which plugin to use is for the user to say.
    """
    try:
        if manager.get_plugin(info.registered_as) is None:
            manager.register(load(), name=info.registered_as)
        found.plugins.append(_call_registration(manager, found, info))
    except PluginError:
        raise
    except Exception as exc:  # any import or registration failure is reported, not raised
        found.plugins.append(replace(info, error=f"{type(exc).__name__}: {exc}"))


def _as_is(plugin: object) -> object:
    return plugin


def load_plugins(extra: Iterable[tuple[str, object]] = ()) -> PluginSet:
    """Load the default plugins and every entry point into one manager and its registries.

    ``extra`` registers additional in-process plugins as (name, module-or-object)
    pairs; tests and vendors' conformance runs use it.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    found = PluginSet(manager)
    core = _core_version()
    for group, name, module in DEFAULT_PLUGINS:
        info = PluginInfo(group, name, module, CORE_DISTRIBUTION, core, registered_as=module)
        _add(manager, found, info, functools.partial(importlib.import_module, module))
    for group in (PROVIDER_GROUP, STATE_GROUP):
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            dist_name, dist_version = _distribution(ep)
            info = PluginInfo(group, ep.name, ep.value, dist_name, dist_version,
                              registered_as=f"{group}:{ep.name}")
            _add(manager, found, info, ep.load)
    for name, plugin in extra:
        info = PluginInfo("in-process", name, name, "in-process", "-", registered_as=name)
        _add(manager, found, info, functools.partial(_as_is, plugin))
    return found
