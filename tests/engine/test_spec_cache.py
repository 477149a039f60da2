"""``orchestrator.cache`` in the cluster spec: its defaults, 0 (off), and bad values named
at their line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.spec.cluster import CacheSpec
from fuzz.spec.loader import load_cluster_spec
from fuzz.spec.problems import SpecError

SPEC = "version: 1\ncluster: c\norchestrator:\n  cache:\n{body}"


def _load(tmp_path: Path, body: str) -> CacheSpec:
    path = tmp_path / "fuzz.yaml"
    path.write_text(SPEC.format(body=body))
    block = load_cluster_spec(path, "fuzz.yaml").spec.orchestrator
    assert block is not None
    return block.cache


def test_the_cache_is_on_with_a_quota_by_default_and_0_turns_it_off(tmp_path: Path) -> None:
    default = _load(tmp_path, "    placement: link\n")
    assert (default.bytes, default.placement) == (50 * 1024**3, "link")
    off = _load(tmp_path, "    bytes: 0\n    placement: copy\n")
    assert (off.bytes, off.placement) == (0, "copy")


def test_bad_values_are_named_at_their_place(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(SPEC.format(body="    bytes: -5\n    placement: hardlink\n"))
    with pytest.raises(SpecError) as info:
        load_cluster_spec(path, "fuzz.yaml")
    assert [str(problem) for problem in info.value.problems] == [
        "fuzz.yaml:5:12: orchestrator.cache.bytes: invalid size -5: must not be negative",
        "fuzz.yaml:6:16: orchestrator.cache.placement: must be 'link' or 'copy'",
    ]
