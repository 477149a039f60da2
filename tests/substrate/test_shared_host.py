"""Which host CPUs a container of a local node is pinned to (capacity/shared_host.py)."""

from __future__ import annotations

import json
from pathlib import Path

from fuzz.substrate.capacity.shared_host import SpecCache, least_used, pinned_cpus


def _container(directory: Path, node: str, name: str, cpus: list[int],
               state: str | None) -> None:
    folder = directory / node / "containers" / name
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps({"id": name, "cpus": cpus}))
    if state is not None:
        (folder / "status.json").write_text(json.dumps({"state": state}))


def test_the_least_used_cpus_are_picked_lowest_first_on_ties() -> None:
    assert least_used(1, [0, 1, 2, 3], {}) == (0,)
    assert least_used(1, [0, 1, 2, 3], {0: 2, 1: 1}) == (2,)
    assert least_used(2, [0, 1, 2, 3], {0: 1, 2: 1}) == (1, 3)
    assert least_used(5, [0, 1], {0: 3}) == (0, 1)


def test_running_and_starting_containers_of_every_sibling_count_ended_ones_not(
        tmp_path: Path) -> None:
    _container(tmp_path, "a", "one", [0], "running")
    _container(tmp_path, "b", "two", [0, 1], None)  # being started: no status yet
    _container(tmp_path, "b", "three", [1], "exited")
    _container(tmp_path, "c", "four", [2], "failed")
    assert pinned_cpus(tmp_path) == {0: 2, 1: 1}
    assert pinned_cpus(tmp_path / "nowhere") == {}


def test_hidden_directories_are_not_containers(tmp_path: Path) -> None:
    """The monitor's spares and the agent's trash (hidden names) never count, whatever
    they hold."""
    _container(tmp_path, "a", "one", [0], "running")
    _container(tmp_path, "a", ".spare-12.3", [1], None)
    _container(tmp_path, "b", ".removed-two.0a1b", [2], "running")
    (tmp_path / "b" / "containers" / "file").write_text("not a container")
    assert pinned_cpus(tmp_path) == {0: 1}


def test_a_cache_reads_each_spec_once_and_forgets_what_is_gone(tmp_path: Path) -> None:
    """With a cache, a container's spec.json (written once) is read once, an ended one's
    status not again, and a new container at a removed one's path is read anew."""
    cache: SpecCache = {}
    _container(tmp_path, "a", "one", [0], "running")
    _container(tmp_path, "a", "two", [2], "running")
    folder = tmp_path / "a" / "containers" / "one"
    assert pinned_cpus(tmp_path, cache) == {0: 1, 2: 1}
    (folder / "spec.json").write_text(json.dumps({"id": "one", "cpus": [3]}))
    assert pinned_cpus(tmp_path, cache) == {0: 1, 2: 1}
    (folder / "status.json").write_text(json.dumps({"state": "exited"}))
    assert pinned_cpus(tmp_path, cache) == {2: 1}
    (folder / "status.json").write_text(json.dumps({"state": "running"}))
    assert pinned_cpus(tmp_path, cache) == {2: 1}  # an end is for good
    folder.rename(tmp_path / "removed")  # kept: its inode cannot be reused
    _container(tmp_path, "a", "one", [1], "running")
    assert pinned_cpus(tmp_path, cache) == {1: 1, 2: 1}
    assert len(cache) == 2


def test_a_spec_not_written_yet_is_read_again(tmp_path: Path) -> None:
    """A container being started may have an empty spec.json (the monitor's spare):
    nothing is remembered of it until its spec is there."""
    cache: SpecCache = {}
    _container(tmp_path, "a", "one", [0], None)
    spec = tmp_path / "a" / "containers" / "one" / "spec.json"
    spec.write_text("")
    assert pinned_cpus(tmp_path, cache) == {}
    spec.write_text(json.dumps({"id": "one", "cpus": [1]}))
    assert pinned_cpus(tmp_path, cache) == {1: 1}
