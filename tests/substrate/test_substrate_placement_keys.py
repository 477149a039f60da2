"""The agent's side of the placement keys on a fake 2 sockets x 4 cores x 2 threads machine
(a sysfs tree in the test's directory, numbered as Linux does: CPU n and n+8 are the two
threads of one core): what it reads, the hardware labels it publishes, and the CPUs a
lease with ``sockets`` or ``threads`` gets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fuzz.substrate.capacity.declared import parse_declared_inventory
from fuzz.substrate.capacity.inventory import (
    MachineInventory,
    hardware_labels,
    read_gpus,
    read_inventory,
)
from fuzz.substrate.capacity.leases import LeaseBook, LeaseExhausted, LeaseRequest

GiB = 1024**3


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def smt(tmp_path: Path) -> MachineInventory:
    """The fake machine: 16 logical CPUs, socket s core c thread t is CPU t*8 + s*4 + c."""
    sys_root, proc_root = tmp_path / "sys", tmp_path / "proc"
    _write(proc_root / "meminfo", "MemTotal:       16318480 kB\n")
    _write(sys_root / "devices/system/cpu/online", "0-15\n")
    for cpu in range(16):
        topology = sys_root / f"devices/system/cpu/cpu{cpu}/topology"
        _write(topology / "physical_package_id", f"{cpu % 8 // 4}\n")
        _write(topology / "core_id", f"{cpu % 4}\n")
    return read_inventory(sys_root, proc_root, gpus=False)


def _cpus(book: LeaseBook, cores: int, **kw: object) -> list[int]:
    return list(book.acquire(LeaseRequest(cores, **kw)).cpus)  # type: ignore[arg-type]


def test_the_fake_topology_reads_as_two_sockets_of_four_cores_of_two_threads(
        smt: MachineInventory) -> None:
    assert (smt.cores, smt.sockets, smt.threads_per_core) == (16, 2, 2)
    assert smt.siblings(0) == (0, 8) and smt.siblings(13) == (5, 13)


def test_threads_give_each_core_with_its_sibling_threads(smt: MachineInventory) -> None:
    book = LeaseBook(smt, None)
    assert _cpus(book, 1) == [0]  # without threads: one logical CPU per core asked
    assert _cpus(book, 2, threads=True) == [1, 2, 9, 10]  # cores 1 and 2 of socket 0, whole
    # a core whose sibling is leased is not whole: cores 0 (CPU 0 held) is skipped
    assert _cpus(book, 1, threads=True) == [3, 11]


def test_threads_count_whole_free_cores_and_say_what_is_short(smt: MachineInventory) -> None:
    book = LeaseBook(smt, None)
    _cpus(book, 1)  # CPU 0: core 0 of socket 0 is no longer whole
    with pytest.raises(LeaseExhausted, match=r"not enough whole free cores with their "
                       r"hardware threads: asked 8, free 7 \(of 8\)"):
        _cpus(book, 8, threads=True)
    assert len(_cpus(book, 7, threads=True)) == 14


def test_sockets_split_the_cores_evenly_over_exactly_that_many_sockets(
        smt: MachineInventory) -> None:
    book = LeaseBook(smt, None)
    assert _cpus(book, 4, sockets=2) == [0, 1, 4, 5]
    assert _cpus(book, 3, sockets=2, threads=True) == [2, 3, 6, 10, 11, 14]
    assert _cpus(book, 2, sockets=1) == [8, 9]  # best fit: socket 0 has just these 2 left


def test_sockets_the_node_lacks_are_refused(smt: MachineInventory) -> None:
    book = LeaseBook(smt, None)
    with pytest.raises(LeaseExhausted, match="asked for 3 sockets; this node has 2"):
        _cpus(book, 3, sockets=3)
    _cpus(book, 6, sockets=1)  # 6 of socket 0's 8
    with pytest.raises(LeaseExhausted, match=r"not enough free cores on 2 sockets: each of 2 "
                       r"sockets must give 3, the freest give 8 and 2"):
        _cpus(book, 6, sockets=2)


def test_a_declared_node_may_have_hardware_threads() -> None:
    node = parse_declared_inventory(
        "sockets: 2\ncores_per_numa: 1\nthreads_per_core: 2\n", "inventory file t",
        (0, 1), GiB, "h", "x86_64")
    assert [(c.id, c.socket, c.core, c.host_cpu) for c in node.cpus] == [
        (0, 0, 0, 0), (1, 0, 0, 1), (2, 1, 0, 0), (3, 1, 0, 1)]
    assert node.threads_per_core == 2
    book = LeaseBook(node, None)
    lease = book.acquire(LeaseRequest(1, threads=True))
    assert (lease.cpus, lease.host_cpus) == ((0, 1), (0, 1))


def test_hardware_labels_name_the_gpu_model_family_count_and_cpu_architecture() -> None:
    node = parse_declared_inventory(
        "cores_per_numa: 2\ngpus: [{model: NVIDIA H100, architecture: hopper},"
        " {model: NVIDIA H100, architecture: hopper}, {vendor: amd, model: MI300X}]\n"
        "labels: {nvidia.com/gpu.model: relabelled}\n",
        "inventory file t", (0, 1), GiB, "h", "aarch64")
    assert hardware_labels(node) == {
        "fuzz.io/cpu.architecture": "aarch64",
        "nvidia.com/gpu.count": "2",
        "nvidia.com/gpu.model": "NVIDIA H100",
        "nvidia.com/gpu.family": "hopper",
        "amd.com/gpu.count": "1",
        "amd.com/gpu.model": "MI300X",
    }
    mixed = parse_declared_inventory(
        "cores_per_numa: 1\ngpus: [{model: A}, {model: B}]\n", "t", (0,), GiB, "h", "x86_64")
    assert hardware_labels(mixed) == {"fuzz.io/cpu.architecture": "x86_64",
                                      "nvidia.com/gpu.count": "2"}


def test_nvidia_smi_gives_the_family_from_the_compute_capability(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  *compute_cap*) echo '0, 8.0'; echo '1, 9.0' ;;\n"
        "  *) echo '0, GPU-a, NVIDIA A100-SXM4-40GB, 40960, 00000000:1B:00.0';"
        " echo '1, GPU-b, NVIDIA H100 80GB HBM3, 81559, 00000000:9C:00.0' ;;\n"
        "esac\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    gpus = read_gpus(str(fake), tmp_path / "sys")
    assert [(g.model, g.architecture) for g in gpus] == [
        ("NVIDIA A100-SXM4-40GB", "ampere"), ("NVIDIA H100 80GB HBM3", "hopper")]
