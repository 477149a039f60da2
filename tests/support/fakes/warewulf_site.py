"""A fake Warewulf site for the baremetal tests: server state, the wwctl shim, machines."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fuzz_baremetal import OVERLAY_DIR
from fuzz_baremetal.config import BaremetalConfig, Machine

from fuzz.plugin.cloudinit import BootstrapSettings
from fuzz.testing.boot import stop_agents
from fuzz.testing.oci import free_port
from tests.support.fakes.fake_warewulf import FakeWarewulf
from tests.support.fakes.warewulf_api import FakeWarewulfApi

REPOSITORY = Path(__file__).parents[3]  # where ``tests.support.fakes.wwctl`` is importable
IMAGE = "rocky-9"
API_USER = "fuzz"


@dataclass
class WarewulfSite:
    """The fake server's state dir, its model, the dir holding ``wwctl``, and the machines."""

    root: Path
    ww: FakeWarewulf
    bin_dir: Path
    machines: list[Machine]

    def config(self, **settings: Any) -> BaremetalConfig:
        """A provider block for this site (wwctl unless ``api="rest"`` and its keys)."""
        fields: dict[str, Any] = {
            "image": IMAGE,
            "offerings": {"c2": {"cores": 2, "memory": "4GiB", "price_per_hour": 0.5}},
            "machines": [m.model_dump(exclude_none=True) for m in self.machines],
            "join_timeout": 30,
            "command_timeout": 30,
            "bootstrap": BootstrapSettings(listen_host="127.0.0.1", start_timeout=30),
            **settings,
        }
        return BaremetalConfig.model_validate(fields)


def machine(index: int) -> Machine:
    """Machine ``n0<index>``: its own MAC and BMC, an agent port of its own on 127.0.0.1."""
    return Machine(name=f"n{index:02d}", mac=f"02:00:00:00:00:{index:02x}",
                   ipmi_address=f"10.99.0.{index}", ip="127.0.0.1", agent_port=free_port())


def make_site(directory: Path, machines: int = 4) -> WarewulfSite:
    """Initialise a Warewulf with one image, the wwinit and fuzz overlays, and a wwctl shim."""
    root = directory / "warewulf"
    root.mkdir(parents=True)
    ww = FakeWarewulf(root)
    ww.initialise([IMAGE], {"wwinit": None, "fuzz": OVERLAY_DIR})
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "wwctl"
    shim.write_text(f"#!/bin/sh\nFAKE_WAREWULF_STATE='{root}' PYTHONPATH='{REPOSITORY}' "
                    f"exec '{sys.executable}' -m tests.support.fakes.wwctl \"$@\"\n")
    shim.chmod(0o755)
    return WarewulfSite(root, ww, bin_dir, [machine(i) for i in range(1, machines + 1)])


@pytest.fixture
def warewulf_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WarewulfSite]:
    """A fake Warewulf site with ``wwctl`` first on PATH; its machines' agents stop after."""
    made = make_site(tmp_path)
    monkeypatch.setenv("PATH", f"{made.bin_dir}{os.pathsep}{os.environ['PATH']}")
    try:
        yield made
    finally:
        stop_agents(made.root / "machines")


@pytest.fixture
def warewulf_api(warewulf_site: WarewulfSite) -> Iterator[FakeWarewulfApi]:
    """The site's REST API on 127.0.0.1, user ``fuzz`` with a fresh password."""
    api = FakeWarewulfApi(warewulf_site.ww, API_USER, os.urandom(8).hex())
    api.start()
    try:
        yield api
    finally:
        api.stop()
