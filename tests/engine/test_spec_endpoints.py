"""The cluster spec's orchestrator.endpoints block: defaults, and exact problem lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.spec.cluster import EndpointsSpec
from fuzz.spec.problems import SpecError
from tests.support.specblocks import load_orchestrator_block


def _load(tmp_path: Path, block: str) -> EndpointsSpec:
    return load_orchestrator_block(tmp_path, "endpoints", block).endpoints


def test_the_defaults_and_a_full_block(tmp_path: Path) -> None:
    defaults = _load(tmp_path, "    {}")
    assert (defaults.listen, defaults.url, defaults.domain, defaults.cert) == (
        None, None, None, None)
    assert defaults.session_seconds() == 12 * 3600
    full = _load(tmp_path, "    listen: 0.0.0.0:8443\n    url: https://fuzz.example\n"
                 "    domain: apps.example\n    cert: c.pem\n    key: c.key\n"
                 "    session_ttl: 30m")
    assert (full.listen, full.domain, full.session_seconds()) == (
        "0.0.0.0:8443", "apps.example", 1800)


@pytest.mark.parametrize(("block", "problem"), [
    ("    cert: c.pem", "orchestrator.endpoints: give cert and key together (or neither: "
                       "the cluster CA's)"),
    ("    url: fuzz.example", "orchestrator.endpoints: url 'fuzz.example': write it as "
                             "https://HOST[:PORT]"),
    ("    domian: x", "orchestrator.endpoints.domian: unknown key 'domian' "
                     "(did you mean 'domain'?)"),
])
def test_bad_blocks_are_one_line_each(tmp_path: Path, block: str, problem: str) -> None:
    with pytest.raises(SpecError) as info:
        _load(tmp_path, block)
    where, _, said = str(info.value).partition(": ")
    assert said == problem
    assert where.startswith("fuzz.yaml:6:") or where.startswith("fuzz.yaml:7:"), where
