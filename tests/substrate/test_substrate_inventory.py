"""The agent's view of the machine: pure parsers on sample text, readers on fake and real trees."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from fuzz.substrate.capacity.inventory import (
    GpuInfo,
    parse_cpulist,
    parse_mem_total,
    parse_nvidia_smi,
    read_gpus,
    read_inventory,
    sysfs_pci_address,
)

PROC_MEMINFO = """\
MemTotal:       16318480 kB
MemFree:         9812345 kB
MemAvailable:   12345678 kB
Buffers:          123456 kB
"""

NODE_MEMINFO = """\
Node 1 MemTotal:        8159240 kB
Node 1 MemFree:         4000000 kB
Node 1 MemUsed:         4159240 kB
"""

NVIDIA_SMI = """\
0, GPU-5a1c9c2e-1111-2222-3333-444455556666, NVIDIA H100 80GB HBM3, 81559, 00000000:1B:00.0
1, GPU-77aa9c2e-1111-2222-3333-444455556666, NVIDIA H100 80GB HBM3, 81559, 00000000:9C:00.0
"""


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0-3,8-11", [0, 1, 2, 3, 8, 9, 10, 11]),
        ("0-3,8-11\n", [0, 1, 2, 3, 8, 9, 10, 11]),
        ("5", [5]),
        ("0,2,4-5", [0, 2, 4, 5]),
        ("", []),
        ("\n", []),
    ],
)
def test_parse_cpulist(text: str, cpus: list[int]) -> None:
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize("text", ["0-", "a-b", "3-1", "0,,2"])
def test_parse_cpulist_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="cpulist"):
        parse_cpulist(text)


def test_parse_mem_total_of_proc_and_node_meminfo() -> None:
    assert parse_mem_total(PROC_MEMINFO) == 16318480 * 1024
    assert parse_mem_total(NODE_MEMINFO) == 8159240 * 1024
    with pytest.raises(ValueError, match="MemTotal"):
        parse_mem_total("MemFree: 1 kB\n")


def test_parse_nvidia_smi() -> None:
    gpus = parse_nvidia_smi(NVIDIA_SMI)
    assert gpus == [
        GpuInfo(0, "GPU-5a1c9c2e-1111-2222-3333-444455556666", "NVIDIA H100 80GB HBM3",
                81559 * 2**20, "00000000:1B:00.0"),
        GpuInfo(1, "GPU-77aa9c2e-1111-2222-3333-444455556666", "NVIDIA H100 80GB HBM3",
                81559 * 2**20, "00000000:9C:00.0"),
    ]
    assert gpus[0].numa_node == -1
    assert parse_nvidia_smi("") == []
    unknown = parse_nvidia_smi("0, GPU-x, Tesla T4, [N/A], 00000000:00:04.0\n")
    assert unknown[0].memory_bytes == 0
    with pytest.raises(ValueError, match="5 fields"):
        parse_nvidia_smi("0, GPU-x, T4\n")


def test_sysfs_pci_address() -> None:
    assert sysfs_pci_address("00000000:1B:00.0") == "0000:1b:00.0"
    assert sysfs_pci_address("0001:9C:1F.7") == "0001:9c:1f.7"
    assert sysfs_pci_address("garbage") is None


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _fake_machine(root: Path, numa: bool) -> tuple[Path, Path]:
    """Two sockets of four CPUs (8 online of 0-9), optionally as two NUMA nodes."""
    sys_root, proc_root = root / "sys", root / "proc"
    _write(proc_root / "meminfo", PROC_MEMINFO)
    cpu = sys_root / "devices/system/cpu"
    _write(cpu / "online", "0-3,6-9\n")
    for n in [0, 1, 2, 3, 6, 7, 8, 9]:
        _write(cpu / f"cpu{n}/topology/physical_package_id", f"{0 if n < 5 else 1}\n")
        _write(cpu / f"cpu{n}/topology/core_id", f"{n % 5}\n")
    if numa:
        node = sys_root / "devices/system/node"
        _write(node / "node0/cpulist", "0-4\n")
        _write(node / "node0/meminfo", NODE_MEMINFO.replace("Node 1", "Node 0"))
        _write(node / "node1/cpulist", "5-9\n")
        _write(node / "node1/meminfo", NODE_MEMINFO)
        _write(node / "online", "0-1\n")  # not a node dir: ignored
    return sys_root, proc_root


def test_read_inventory_of_a_fake_two_socket_numa_machine(tmp_path: Path) -> None:
    sys_root, proc_root = _fake_machine(tmp_path, numa=True)
    machine = read_inventory(sys_root, proc_root, gpus=False)
    assert machine.cores == 8
    assert machine.sockets == 2
    assert machine.memory_bytes == 16318480 * 1024
    assert [(d.id, d.cpu_ids, d.memory_bytes) for d in machine.numa] == [
        (0, (0, 1, 2, 3), 8159240 * 1024),
        (1, (6, 7, 8, 9), 8159240 * 1024),
    ]
    by_id = {c.id: c for c in machine.cpus}
    assert (by_id[7].socket, by_id[7].core, by_id[7].numa_node) == (1, 2, 1)
    assert machine.gpus == ()


def test_without_numa_sysfs_the_machine_is_one_domain(tmp_path: Path) -> None:
    sys_root, proc_root = _fake_machine(tmp_path, numa=False)
    machine = read_inventory(sys_root, proc_root, gpus=False)
    assert len(machine.numa) == 1
    domain = machine.numa[0]
    assert domain.id == 0
    assert domain.cpu_ids == (0, 1, 2, 3, 6, 7, 8, 9)
    assert domain.memory_bytes == machine.memory_bytes
    assert all(c.numa_node == 0 for c in machine.cpus)


def test_read_gpus_runs_nvidia_smi_and_finds_numa_nodes(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "assert '--format=csv,noheader,nounits' in sys.argv\n"
        f"sys.stdout.write({NVIDIA_SMI!r})\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    sys_root = tmp_path / "sys"
    _write(sys_root / "bus/pci/devices/0000:1b:00.0/numa_node", "0\n")
    _write(sys_root / "bus/pci/devices/0000:9c:00.0/numa_node", "1\n")
    gpus = read_gpus(str(fake), sys_root)
    assert [(g.index, g.numa_node, g.memory_bytes) for g in gpus] == [
        (0, 0, 81559 * 2**20),
        (1, 1, 81559 * 2**20),
    ]


def test_read_gpus_without_a_working_nvidia_smi(tmp_path: Path) -> None:
    assert read_gpus(str(tmp_path / "missing")) == []
    failing = tmp_path / "nvidia-smi"
    failing.write_text(f"#!{sys.executable}\nimport sys\nsys.exit(9)\n")
    failing.chmod(0o700)
    assert read_gpus(str(failing)) == []


def test_the_real_machine() -> None:
    machine = read_inventory()
    assert machine.cores == os.cpu_count()
    assert machine.sockets >= 1
    assert machine.memory_bytes > 0
    assert machine.numa
    numa_cpus = sorted(c for d in machine.numa for c in d.cpu_ids)
    assert numa_cpus == sorted(c.id for c in machine.cpus)
    assert machine.architecture == os.uname().machine
    assert machine.hostname
