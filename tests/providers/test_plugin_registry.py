"""Registration: plugins register provider kinds and state backends into registries by kind.

The plugins here are real: in-process objects with hook implementations, and an
installed distribution (a ``dist-info`` with entry points on ``sys.path``) that the
loader discovers as it discovers any vendor's.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fuzz.errors import PluginError
from fuzz.lifecycle.gateway import ProviderGateway
from fuzz.lifecycle.statestore import open_backend
from fuzz.plugin import (
    Offering,
    ProviderContext,
    ProviderPlugin,
    RegisterProvider,
    RegisterStateBackend,
    StateBackend,
    StateBackendPlugin,
    hookimpl,
)
from fuzz.plugin.loader import load_plugins

CORE = f"fuzz {importlib.metadata.version('fuzz')}"


class AlphaProvider(ProviderPlugin):
    """Offers one node type, ``a-1``."""

    kind = "alpha"

    def offerings(self, ctx: ProviderContext) -> list[Offering] | None:
        """One offering, named after this kind."""
        return [Offering("a-1", cores=1, memory_bytes=2**30)]


class BetaProvider(ProviderPlugin):
    """Offers one node type, ``b-1``."""

    kind = "beta"

    def offerings(self, ctx: ProviderContext) -> list[Offering] | None:
        """One offering, named after this kind."""
        return [Offering("b-1", cores=2, memory_bytes=2**31)]


class TwoKinds:
    """One plugin that brings two provider kinds."""

    @hookimpl
    def fuzz_register_providers(self, register: RegisterProvider) -> None:
        """Register alpha and beta."""
        register(AlphaProvider())
        register(BetaProvider())


def _context(kind: str, tmp_path: Path) -> ProviderContext:
    return ProviderContext(kind, f"{kind}-block", "c", None, tmp_path)


def test_a_plugin_registers_two_provider_kinds(tmp_path: Path) -> None:
    found = load_plugins(extra=[("two-kinds", TwoKinds())])
    kinds = found.provider_kinds()
    assert kinds["alpha"] is kinds["beta"]
    assert kinds["alpha"].name == "two-kinds" and kinds["alpha"].kinds == ("alpha", "beta")
    assert "local" in kinds  # the core's default plugin is there too
    contexts = {name: _context(name, tmp_path) for name in ("alpha", "beta")}
    gateway = ProviderGateway(found, contexts)
    assert [o.name for o in gateway.offerings("alpha")] == ["a-1"]
    assert [o.name for o in gateway.offerings("beta")] == ["b-1"]


def test_an_operation_left_out_is_named(tmp_path: Path) -> None:
    gateway = ProviderGateway(load_plugins(extra=[("two-kinds", TwoKinds())]), {})
    with pytest.raises(PluginError) as raised:
        gateway.read_nodes(_context("alpha", tmp_path))
    assert str(raised.value) == (
        "provider plugin 'alpha' (in-process -) does not implement read_nodes yet"
    )


class MemoryBackend:
    """A state backend that keeps the document in memory (enough to be opened)."""

    shared = False

    def __init__(self, config: Mapping[str, Any], base_dir: Path) -> None:
        self.config = dict(config)
        self.base_dir = base_dir


class MemoryState:
    """A plugin that brings the ``memory`` state backend."""

    @hookimpl
    def fuzz_register_state_backends(self, register: RegisterStateBackend) -> None:
        """Register the memory backend."""
        register(StateBackendPlugin("memory", None, self.open))

    @staticmethod
    def open(config: Mapping[str, Any], base_dir: Path) -> StateBackend:
        """A memory backend for the block."""
        backend: Any = MemoryBackend(config, base_dir)
        return backend  # open_backend's callers only need what this test looks at


def test_a_plugin_registers_a_state_backend(tmp_path: Path) -> None:
    found = load_plugins(extra=[("memory-state", MemoryState())])
    assert found.state_backend_kinds()["memory"].name == "memory-state"
    backend = open_backend("memory", {"size": 3}, tmp_path, found)
    assert isinstance(backend, MemoryBackend)
    assert (backend.config, backend.base_dir) == ({"size": 3}, tmp_path)


def test_the_local_provider_and_state_backend_come_with_the_core() -> None:
    found = load_plugins()
    provider = found.require_provider("local").plugin
    state = found.require_state_backend("local").plugin
    assert provider.distribution == "fuzz"
    assert provider.value == "fuzz.default_plugins.local_provider"
    assert (state.distribution, state.value) == ("fuzz", "fuzz.default_plugins.local_state")
    assert {"s3", "postgres"} <= set(found.state_backend_kinds())  # fuzz-state's extras


def test_a_duplicate_state_backend_is_refused(tmp_path: Path) -> None:
    class LocalAgain:
        @hookimpl
        def fuzz_register_state_backends(self, register: RegisterStateBackend) -> None:
            register(StateBackendPlugin("local", None, MemoryState.open))

    with pytest.raises(PluginError) as raised:
        load_plugins(extra=[("local-again", LocalAgain())])
    assert str(raised.value) == (
        f"state backend kind 'local' is registered twice: by {CORE} "
        "(fuzz.default_plugins.local_state) and by in-process - (local-again); "
        "uninstall one of the two distributions"
    )


def test_a_failing_registration_breaks_only_its_plugin(tmp_path: Path) -> None:
    class Broken:
        @hookimpl
        def fuzz_register_providers(self, register: RegisterProvider) -> None:
            raise RuntimeError("the SDK is missing")

    found = load_plugins(extra=[("broken", Broken()), ("two-kinds", TwoKinds())])
    (failure,) = found.failures()
    assert (failure.name, failure.error) == ("broken", "RuntimeError: the SDK is missing")
    assert {"alpha", "beta", "local"} <= set(found.provider_kinds())


def _install_duplicate_local(site: Path) -> None:
    """An installed distribution ``fuzz-dup-local`` whose plugin registers kind ``local``."""
    (site / "fuzz_dup_local.py").write_text(textwrap.dedent('''
        from fuzz.plugin import ProviderPlugin, RegisterProvider, hookimpl

        class Local(ProviderPlugin):
            kind = "local"

        @hookimpl
        def fuzz_register_providers(register: RegisterProvider) -> None:
            register(Local())
    '''))
    info = site / "fuzz_dup_local-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fuzz-dup-local\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text('[fuzz.providers]\nlocal = fuzz_dup_local\n')


DUPLICATE_LOCAL = (
    f"provider kind 'local' is registered twice: by {CORE} "
    "(fuzz.default_plugins.local_provider) and by fuzz-dup-local 1.0 (fuzz_dup_local); "
    "uninstall one of the two distributions"
)


def test_a_duplicate_kind_from_an_installed_distribution_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_duplicate_local(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fuzz_dup_local", raising=False)
    with pytest.raises(PluginError) as raised:
        load_plugins()
    assert str(raised.value) == DUPLICATE_LOCAL


def test_the_cli_says_the_duplicate_in_one_line(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install_duplicate_local(site)
    spec = tmp_path / "cluster.yaml"
    spec.write_text("version: 1\ncluster: dup\nproviders:\n  local: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "fuzz", "--no-color", "-f", str(spec), "validate"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == [f"Error: {DUPLICATE_LOCAL}"]
