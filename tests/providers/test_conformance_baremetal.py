"""The Warewulf provider passes the conformance kit, through the fake wwctl and the fake API.

Each create really boots: the fake's ``power on`` runs the bootstrap script the
provider rendered into the node's overlay, which starts a real agent on the
machine's port; the provider reports the node ``running`` once that agent answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from fuzz_baremetal import plugin
from fuzz_baremetal.nodes import TAG_PROVIDER

from fuzz.plugin.provider import TAG_CLUSTER, ProviderContext
from fuzz.testing.provider_conformance import ConformanceTarget, ErrorCategory, ProviderConformance
from tests.support.fakes.warewulf_api import FakeWarewulfApi
from tests.support.fakes.warewulf_site import API_USER, IMAGE, WarewulfSite

CLUSTER = "conformance"
MAX_NODES = 2


@contextmanager
def _nodes_in_the_way(site: WarewulfSite, fuzz_tagged: bool) -> Iterator[None]:
    """Warewulf nodes on machines: this block's (filling max_nodes) or someone else's (all)."""
    taken = site.machines[:MAX_NODES] if fuzz_tagged else site.machines
    tags = {TAG_CLUSTER: CLUSTER, TAG_PROVIDER: "metal"} if fuzz_tagged else {}
    for machine in taken:
        site.ww.add(machine.name, {"profiles": ["default"], "tags": tags})
    try:
        yield
    finally:
        for machine in taken:
            site.ww.delete(machine.name)


@contextmanager
def _image_deleted(site: WarewulfSite) -> Iterator[None]:
    image = site.root / "images" / IMAGE
    image.rename(image.with_name("deleted"))
    try:
        yield
    finally:
        image.with_name("deleted").rename(image)


@contextmanager
def _password_rotated(api: FakeWarewulfApi) -> Iterator[None]:
    old, api.password = api.password, "rotated"
    try:
        yield
    finally:
        api.password = old


@contextmanager
def _wwctl_denied(site: WarewulfSite) -> Iterator[None]:
    site.ww.deny(True)  # as for a caller who may not read nodes.conf
    try:
        yield
    finally:
        site.ww.deny(False)


def _fault(site: WarewulfSite, api: FakeWarewulfApi | None, category: ErrorCategory
           ) -> AbstractContextManager[None]:
    if category == "quota":
        return _nodes_in_the_way(site, fuzz_tagged=True)
    if category == "capacity":
        return _nodes_in_the_way(site, fuzz_tagged=False)
    if category == "not-found":
        return _image_deleted(site)
    return _password_rotated(api) if api is not None else _wwctl_denied(site)


def _target(site: WarewulfSite, tmp_path: Path, api: FakeWarewulfApi | None
            ) -> ConformanceTarget:
    settings = {}
    if api is not None:
        password_file = tmp_path / "api-password"
        password_file.write_text(api.password)
        settings = {"api": "rest", "api_url": api.url, "api_user": API_USER,
                    "api_password_file": str(password_file)}
    config = site.config(max_nodes=MAX_NODES, **settings)
    ctx = ProviderContext("baremetal", "metal", CLUSTER, config, tmp_path)
    return ConformanceTarget(
        plugin=plugin, context=ctx, offering="c2",
        inject_error=lambda category: _fault(site, api, category),
        timeout=30, poll_interval=0.2,
    )


class TestWwctlConformance(ProviderConformance):
    """The wwctl back end."""

    @pytest.fixture
    def conformance_target(self, warewulf_site: WarewulfSite, tmp_path: Path) -> ConformanceTarget:
        """The provider block, driving the fake wwctl on PATH."""
        return _target(warewulf_site, tmp_path, None)


class TestRestConformance(ProviderConformance):
    """The REST API back end."""

    @pytest.fixture
    def conformance_target(self, warewulf_site: WarewulfSite, warewulf_api: FakeWarewulfApi,
                           tmp_path: Path) -> ConformanceTarget:
        """The provider block, driving the fake warewulfd API."""
        return _target(warewulf_site, tmp_path, warewulf_api)
