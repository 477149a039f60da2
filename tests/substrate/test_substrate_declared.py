"""A declared inventory: a large node described in YAML, mapped onto the real CPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.errors import ConfigError
from fuzz.substrate.capacity.declared import (
    DeclaredInventoryError,
    parse_declared_inventory,
    read_declared_inventory,
)
from fuzz.substrate.capacity.inventory import CpuInfo, read_online_cpus
from tests.support.declared import GiB, declared_node_yaml

NODE_YAML = declared_node_yaml("{site: test, rack: 7}")
SOURCE = "inventory file node.yaml"


def _parse(text: str, host_cpus: tuple[int, ...] = (0, 1, 2)) -> object:
    return parse_declared_inventory(text, SOURCE, host_cpus, 8 * GiB, "host", "x86_64")


def test_a_declared_node_is_numbered_socket_by_socket_and_mapped_round_robin() -> None:
    machine = parse_declared_inventory(NODE_YAML, SOURCE, (4, 5, 6), 8 * GiB, "h", "x86_64")
    assert machine.declared
    assert (machine.cores, machine.sockets, machine.memory_bytes) == (32, 2, 64 * GiB)
    assert [d.cpu_ids for d in machine.numa] == [
        tuple(range(n * 8, n * 8 + 8)) for n in range(4)
    ]
    assert [d.memory_bytes for d in machine.numa] == [16 * GiB] * 4
    assert machine.cpus[0] == CpuInfo(0, socket=0, core=0, numa_node=0, host_cpu=4)
    assert machine.cpus[9] == CpuInfo(9, socket=0, core=9, numa_node=1, host_cpu=4)
    assert machine.cpus[17] == CpuInfo(17, socket=1, core=1, numa_node=2, host_cpu=6)
    assert [c.host_cpu for c in machine.cpus[:4]] == [4, 5, 6, 4]
    assert [(g.index, g.model, g.memory_bytes, g.numa_node) for g in machine.gpus] == [
        (0, "A100", 40 * GiB, 0),
        (1, "A100", 40 * GiB, 2),
    ]
    assert dict(machine.labels) == {"site": "test", "rack": "7"}
    assert (machine.hostname, machine.architecture) == ("h", "x86_64")


def test_defaults_and_memory_split() -> None:
    machine = parse_declared_inventory(
        "cores_per_numa: 3\nnuma_per_socket: 2\nmemory: 10\n", SOURCE, (0,), GiB, "h", "a"
    )
    assert (machine.cores, machine.sockets, len(machine.numa), machine.gpus) == (6, 1, 2, ())
    assert [d.memory_bytes for d in machine.numa] == [5, 5]
    assert {c.host_cpu for c in machine.cpus} == {0}
    no_memory = parse_declared_inventory("cores_per_numa: 1\n", SOURCE, (0,), GiB, "h", "a")
    assert no_memory.memory_bytes == GiB  # the machine's own when none is declared


def test_a_real_cpu_is_its_own_host_cpu() -> None:
    assert CpuInfo(3, 0, 3, 0).host_cpu == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cores: 4\n", "unknown key 'cores': expected one of sockets, numa_per_socket,"),
        ("sockets: two\ncores_per_numa: 2\n", "sockets: must be a positive integer, got 'two'"),
        ("sockets: 2\n", "cores_per_numa: is required (a positive integer)"),
        ("cores_per_numa: 0\n", "cores_per_numa: must be a positive integer, got 0"),
        ("cores_per_numa: 2\nmemory: lots\n", "memory: invalid size 'lots'"),
        ("cores_per_numa: 2\ngpus: [{numa: 1}]\n", "gpus[0].numa: must be a NUMA domain 0..0"),
        ("cores_per_numa: 2\ngpus: [{vram: 1}]\n", "gpus[0]: unknown key 'vram'"),
        ("cores_per_numa: 2\ngpus: 2\n", "gpus: must be a list"),
        ("cores_per_numa: 2\nlabels: {a: [1]}\n", "labels.a: must be a string, got [1]"),
        ("cores_per_numa: 5000\n", "cores_per_numa: 5000 CPUs declared; at most 4096"),
        ("- 1\n", "expected a mapping with keys sockets,"),
        ("sockets: [1\n", "not valid YAML: "),
    ],
)
def test_invalid_files_are_one_line_errors_naming_file_and_key(text: str, message: str) -> None:
    with pytest.raises(DeclaredInventoryError) as caught:
        _parse(text)
    text_of_error = str(caught.value)
    assert isinstance(caught.value, ConfigError)
    assert text_of_error.startswith(f"{SOURCE}: ")
    assert message in text_of_error
    assert "\n" not in text_of_error


def test_read_declared_inventory_maps_onto_this_machine(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(NODE_YAML)
    machine = read_declared_inventory(path)
    online = read_online_cpus()
    assert [c.host_cpu for c in machine.cpus] == [online[i % len(online)] for i in range(32)]
    with pytest.raises(DeclaredInventoryError, match=r"^inventory file .*nope\.yaml does not"):
        read_declared_inventory(tmp_path / "nope.yaml")
