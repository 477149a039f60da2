"""The cluster spec's orchestrator.metrics block: defaults, and exact problem lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.spec.cluster import MetricsSpec
from fuzz.spec.problems import SpecError
from tests.support.specblocks import load_orchestrator_block


def _load(tmp_path: Path, block: str) -> MetricsSpec:
    return load_orchestrator_block(tmp_path, "metrics", block).metrics


def test_on_by_default_on_loopback_and_a_port_of_its_own(tmp_path: Path) -> None:
    defaults = _load(tmp_path, "    {}")
    assert (defaults.enabled, defaults.listen) == (True, "127.0.0.1:0")
    chosen = _load(tmp_path, "    listen: 0.0.0.0:9464")
    assert chosen.listen == "0.0.0.0:9464"
    assert _load(tmp_path, "    enabled: false").enabled is False


@pytest.mark.parametrize(("block", "problem"), [
    ("    listen: nope", "orchestrator.metrics.listen: 'nope': expected HOST:PORT, e.g. "
                        "127.0.0.1:9464"),
    ("    listen: 127.0.0.1:99999", "orchestrator.metrics.listen: '127.0.0.1:99999': expected "
                                   "HOST:PORT, e.g. 127.0.0.1:9464"),
    ("    port: 9464", "orchestrator.metrics.port: unknown key 'port'"),
])
def test_bad_blocks_are_one_line_each(tmp_path: Path, block: str, problem: str) -> None:
    with pytest.raises(SpecError) as info:
        _load(tmp_path, block)
    where, _, said = str(info.value).partition(": ")
    assert said.startswith(problem), said
    assert where.startswith("fuzz.yaml:7:"), where
