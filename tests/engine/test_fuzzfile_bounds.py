"""Bounded input: a Fuzzfile's size and its YAML aliases are limited before anything is built.

Real YAML through the real loaders; time and memory are measured (wall clock and
``tracemalloc``), with wide margins: the point is seconds and hundreds of MB before.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from fuzz.spec.cluster import LimitsSpec
from fuzz.spec.fuzzfile_loader import MAX_FUZZFILE_VALUES, load_fuzzfile, parse_fuzzfile
from fuzz.spec.problems import SpecError
from fuzz.spec.yamlsource import MAX_ALIAS_VALUES, parse_yaml
from tests.support.cliutil import run_fuzz

MiB = 1024 * 1024


def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """A "billion laughs" Fuzzfile: ``width ** levels`` values from a few hundred bytes."""
    lines = ["version: v1", 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", '
             '"lol", "lol"]']
    for level in range(1, levels):
        items = ", ".join(f"*l{level - 1}" for _ in range(width))
        lines.append(f"l{level}: &l{level} [{items}]")
    lines.append("jobs:\n  a:\n    image: {uri: docker://alpine:3.19}\n    command: [x]")
    return "\n".join(lines) + "\n"


def big_fuzzfile(size: int) -> str:
    """A valid Fuzzfile of at least ``size`` bytes (a long job script)."""
    line = "      echo padding padding padding padding\n"
    script = line * (size // len(line) + 1)
    return ("version: v1\njobs:\n  a:\n    image: {uri: docker://alpine:3.19}\n"
            f"    script: |\n{script}")


def test_an_alias_bomb_is_refused_in_a_blink_and_a_few_megabytes() -> None:
    tracemalloc.start()
    began = time.monotonic()
    with pytest.raises(SpecError) as caught:
        parse_fuzzfile(alias_bomb(), "bomb.yaml")
    took = time.monotonic() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert str(caught.value) == (
        f"bomb.yaml:5:45: aliases expand the document by more than {MAX_ALIAS_VALUES} values "
        "(an alias bomb?)")
    assert took < 1.0, f"took {took:.2f} s"
    assert peak < 20 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_anchors_aliases_and_merge_keys_used_sensibly_still_load() -> None:
    text = """\
version: v1
x-defaults: &defaults
  image: {uri: docker://alpine:3.19}
  resource: {cpu: {cores: 1}, memory: {size: 1GiB}}
x-env: &env [A=1, B=2]
jobs:
  a:
    <<: *defaults
    command: [echo, a]
    env: *env
  b:
    <<: *defaults
    command: [echo, b]
    env: *env
    requires: [a]
"""
    document = parse_yaml(text, "ok.yaml")
    assert document.problems == []
    assert document.data["jobs"]["b"]["env"] == ["A=1", "B=2"]
    assert document.data["jobs"]["a"]["image"] == {"uri": "docker://alpine:3.19"}


def test_aliases_within_the_budget_load_and_one_more_level_is_refused() -> None:
    fits = parse_yaml(alias_bomb(levels=3), "fits.yaml")  # aliases add 1220 values
    assert fits.problems == [] and len(fits.data["l2"]) == 10
    assert fits.data["l2"][9][9] == ["lol"] * 10
    over = parse_yaml(alias_bomb(levels=5), "over.yaml")  # the 8th *l2 of l3 goes over
    assert over.data is None
    assert [str(p) for p in over.problems] == [
        f"over.yaml:5:45: aliases expand the document by more than {MAX_ALIAS_VALUES} values "
        "(an alias bomb?)"]


def test_a_dense_fuzzfile_within_the_size_limit_is_refused_by_its_count_of_values() -> None:
    text = "version: v1\nx: [" + "1," * (MiB // 2 - 20) + "1]\njobs: {}\n"  # 524,000 values
    assert len(text) <= MiB
    began = time.monotonic()
    with pytest.raises(SpecError) as caught:
        parse_fuzzfile(text, "dense.yaml")
    took = time.monotonic() - began
    column = 5 + 2 * (MAX_FUZZFILE_VALUES - 5)  # 5 values before the list's: its value k is 5+k
    assert str(caught.value) == (
        f"dense.yaml:2:{column}: the document has more than {MAX_FUZZFILE_VALUES} values")
    assert took < 5.0, f"took {took:.2f} s"  # before: 28 s and 549 MB


def test_a_fuzzfile_of_many_jobs_within_the_count_loads() -> None:
    jobs = "".join(f"  j{index}:\n    image: {{uri: docker://alpine:3.19}}\n"
                   f"    command: [echo, '{index}']\n    env: [A=1, B=2]\n"
                   for index in range(500))
    loaded = parse_fuzzfile(f"version: v1\njobs:\n{jobs}", "many.yaml")
    assert len(loaded.fuzzfile.jobs) == 500


def oversize_line(file: str, size: int, limit: int) -> str:
    return (f"{file}:1:1: the Fuzzfile is {size} bytes, more than the {limit} bytes the "
            "orchestrator accepts (orchestrator.limits.fuzzfile_bytes)")


def test_a_huge_fuzzfile_is_refused_by_size_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(big_fuzzfile(20 * MiB))
    size = path.stat().st_size
    began = time.monotonic()
    with pytest.raises(SpecError) as caught:
        load_fuzzfile(path)
    assert time.monotonic() - began < 2.0
    assert str(caught.value) == oversize_line(str(path), size, MiB)


def test_the_limit_is_the_clusters_own(tmp_path: Path) -> None:
    path = tmp_path / "large.yaml"
    path.write_text(big_fuzzfile(MiB + 4096))
    with pytest.raises(SpecError) as caught:
        load_fuzzfile(path, display_name="large.yaml")
    assert str(caught.value) == oversize_line("large.yaml", path.stat().st_size, MiB)
    limits = LimitsSpec(fuzzfile_bytes="2MiB")
    assert load_fuzzfile(path, limits=limits).fuzzfile.jobs["a"].script


def test_fuzz_workflow_validate_refuses_a_bomb_and_a_huge_file_at_once(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    (tmp_path / "huge.yaml").write_text(big_fuzzfile(20 * MiB))
    size = (tmp_path / "huge.yaml").stat().st_size
    for name, line in (
            ("bomb.yaml", f"bomb.yaml:5:45: aliases expand the document by more than "
                          f"{MAX_ALIAS_VALUES} values (an alias bomb?)"),
            ("huge.yaml", oversize_line("huge.yaml", size, MiB))):
        began = time.monotonic()
        result = run_fuzz(tmp_path, "workflow", "validate", name, timeout=60)
        took = time.monotonic() - began
        assert result.code == 1, result
        assert result.err.strip() == line, result.err
        assert took < 10, f"validate {name} took {took:.1f} s"
