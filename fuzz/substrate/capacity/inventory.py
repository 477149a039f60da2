"""Read what this machine offers: logical CPUs, sockets, NUMA domains, memory and GPUs.

The ``parse_*`` functions are pure (text in, values out); the ``read_*`` functions
read ``/sys``, ``/proc`` and ``nvidia-smi`` and take their roots as arguments so
that tests can point them at a fake tree. Nothing here imports gRPC: the server
turns a :class:`MachineInventory` into the wire message.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import socket
import subprocess
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from fuzz.spec.labels import CPU_ARCHITECTURE_LABEL, gpu_labels

SYS_ROOT = Path("/sys")
PROC_ROOT = Path("/proc")
NVIDIA_SMI_QUERY = (
    "--query-gpu=index,uuid,name,memory.total,pci.bus_id",
    "--format=csv,noheader,nounits",
)
NVIDIA_SMI_FAMILY_QUERY = ("--query-gpu=index,compute_cap", "--format=csv,noheader,nounits")
NVIDIA_SMI_TIMEOUT = 15.0

_MEM_TOTAL = re.compile(r"^(?:Node\s+\d+\s+)?MemTotal:\s+(\d+)\s*(kB)?\s*$", re.MULTILINE)
_NODE_DIR = re.compile(r"^node(\d+)$")
_PCI_BUS_ID = re.compile(r"^([0-9a-fA-F]+):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")


@dataclass(frozen=True)
class CpuInfo:
    """One logical CPU: its id, socket (physical package), core id and NUMA node (-1: unknown).

    ``host_cpu`` is the real CPU that backs it, the one a cgroup cpuset names: the
    CPU itself on real hardware (the default), another one on a declared node
    (see :mod:`fuzz.substrate.capacity.declared`).
    """

    id: int
    socket: int
    core: int
    numa_node: int = -1
    host_cpu: int = -1

    def __post_init__(self) -> None:
        """Back the CPU by itself unless told otherwise."""
        if self.host_cpu < 0:
            object.__setattr__(self, "host_cpu", self.id)


@dataclass(frozen=True)
class NumaDomain:
    """One NUMA domain: the logical CPUs and the memory (bytes) local to it."""

    id: int
    cpu_ids: tuple[int, ...]
    memory_bytes: int


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as ``nvidia-smi`` reports it; ``numa_node`` is -1 when unknown.

    ``vendor`` (``nvidia``, ``amd``) and ``architecture`` (the family, e.g. ``hopper``;
    "" when unknown) name it in the node's hardware labels (:func:`hardware_labels`).
    """

    index: int
    uuid: str
    model: str
    memory_bytes: int
    pci_bus_id: str
    numa_node: int = -1
    vendor: str = "nvidia"
    architecture: str = ""


@dataclass(frozen=True)
class MachineInventory:
    """Everything the agent reports about the machine it runs on.

    ``declared`` is True when the CPUs, memory and GPUs come from a declared
    inventory file rather than from the hardware; ``labels`` are the labels that
    file declares (the agent's ``--label`` options win over them).
    """

    hostname: str
    architecture: str
    memory_bytes: int
    cpus: tuple[CpuInfo, ...]
    numa: tuple[NumaDomain, ...]
    gpus: tuple[GpuInfo, ...]
    declared: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def cores(self) -> int:
        """The number of online logical CPUs."""
        return len(self.cpus)

    @property
    def sockets(self) -> int:
        """The number of distinct sockets (physical packages) with an online CPU."""
        return len({cpu.socket for cpu in self.cpus}) or 1

    @property
    def threads_per_core(self) -> int:
        """The most hardware threads (logical CPUs) that one core has online."""
        return max(Counter((cpu.socket, cpu.core) for cpu in self.cpus).values(), default=1)

    def siblings(self, cpu_id: int) -> tuple[int, ...]:
        """The logical CPUs of ``cpu_id``'s core (itself included), lowest first."""
        where = {cpu.id: (cpu.socket, cpu.core) for cpu in self.cpus}
        return tuple(sorted(other for other, core in where.items() if core == where[cpu_id]))


NVIDIA_FAMILIES = {
    "7.0": "volta", "7.2": "volta", "7.5": "turing", "8.0": "ampere", "8.6": "ampere",
    "8.7": "ampere", "8.9": "ada-lovelace", "9.0": "hopper", "10.0": "blackwell",
    "10.1": "blackwell", "12.0": "blackwell",
}
"""An NVIDIA compute capability (``nvidia-smi --query-gpu=compute_cap``) → its family.

Written out here: NVIDIA publishes the table (CUDA GPUs page) but no library of it."""


def hardware_labels(machine: MachineInventory) -> dict[str, str]:
    """The labels the agent publishes for its hardware: the CPU architecture and, per GPU
    vendor, the count, the model and the family (see :func:`fuzz.spec.labels.gpu_labels`)."""
    labels = {CPU_ARCHITECTURE_LABEL: machine.architecture}
    vendors: dict[str, list[GpuInfo]] = {}
    for gpu in machine.gpus:
        vendors.setdefault(gpu.vendor, []).append(gpu)
    for vendor, gpus in vendors.items():
        labels |= gpu_labels(vendor, [gpu.model for gpu in gpus],
                             [gpu.architecture for gpu in gpus])
    return labels


# --- pure parsers ---------------------------------------------------------------------


def parse_cpulist(text: str) -> list[int]:
    """Return the CPU ids of a kernel cpulist such as ``0-3,8-11`` (empty text: none).

    Raises ValueError for text that is not a cpulist.
    """
    cpus: list[int] = []
    value = text.strip()
    if not value:
        return cpus
    for part in value.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            start = int(first)
            end = int(last) if sep else start
        except ValueError:
            raise ValueError(f"invalid cpulist {text.strip()!r}: expected e.g. 0-3,8-11") from None
        if start < 0 or end < start:
            raise ValueError(f"invalid cpulist {text.strip()!r}: range {part.strip()!r}")
        cpus.extend(range(start, end + 1))
    return sorted(set(cpus))


def parse_mem_total(text: str) -> int:
    """Return ``MemTotal`` in bytes from ``/proc/meminfo`` or a NUMA node's ``meminfo``.

    Raises ValueError when the text has no MemTotal line.
    """
    match = _MEM_TOTAL.search(text)
    if match is None:
        raise ValueError("no MemTotal line in meminfo")
    number, unit = match.groups()
    return int(number) * (1024 if unit else 1)


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=index,uuid,name,memory.total,pci.bus_id``.

    The output is expected with ``--format=csv,noheader,nounits`` (memory in MiB).
    Unknown values (``[N/A]``) become 0; ``numa_node`` is left unknown (-1).
    """
    gpus: list[GpuInfo] = []
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        fields = [field.strip() for field in row]
        if not any(fields):
            continue
        if len(fields) != 5:
            raise ValueError(f"unexpected nvidia-smi line {','.join(row)!r}: expected 5 fields")
        index, uuid, model, memory_mib, bus_id = fields
        gpus.append(
            GpuInfo(
                index=int(index),
                uuid=uuid,
                model=model,
                memory_bytes=int(memory_mib) * 1024 * 1024 if memory_mib.isdigit() else 0,
                pci_bus_id=bus_id,
            )
        )
    return gpus


def sysfs_pci_address(bus_id: str) -> str | None:
    """Turn nvidia-smi's ``00000000:3B:00.0`` into sysfs's ``0000:3b:00.0`` (None if malformed)."""
    match = _PCI_BUS_ID.match(bus_id.strip())
    if match is None:
        return None
    domain, bus, device, function = match.groups()
    return f"{int(domain, 16):04x}:{bus.lower()}:{device.lower()}.{function}"


# --- readers --------------------------------------------------------------------------


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path, default: int) -> int:
    text = _read_text(path)
    try:
        return int(text.strip()) if text is not None else default
    except ValueError:
        return default


def read_online_cpus(sys_root: Path = SYS_ROOT) -> list[int]:
    """The online logical CPU ids (all of ``os.cpu_count()`` when sysfs does not say)."""
    text = _read_text(sys_root / "devices/system/cpu/online")
    if text is not None and text.strip():
        return parse_cpulist(text)
    return list(range(os.cpu_count() or 1))


def read_total_memory(proc_root: Path = PROC_ROOT) -> int:
    """Total memory in bytes from ``/proc/meminfo``."""
    return parse_mem_total((proc_root / "meminfo").read_text())


def read_numa(
    cpu_ids: list[int], total_memory: int, sys_root: Path = SYS_ROOT
) -> list[NumaDomain]:
    """The NUMA domains with their online CPUs and memory.

    Without ``/sys/devices/system/node`` the machine is one domain holding all CPUs
    and all memory.
    """
    node_root = sys_root / "devices/system/node"
    online = set(cpu_ids)
    domains: list[NumaDomain] = []
    try:
        entries = sorted(node_root.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        match = _NODE_DIR.match(entry.name)
        if match is None:
            continue
        cpus = parse_cpulist(_read_text(entry / "cpulist") or "")
        meminfo = _read_text(entry / "meminfo")
        try:
            memory = parse_mem_total(meminfo) if meminfo is not None else 0
        except ValueError:
            memory = 0
        domains.append(
            NumaDomain(int(match.group(1)), tuple(c for c in cpus if c in online), memory)
        )
    if not domains:
        return [NumaDomain(0, tuple(sorted(online)), total_memory)]
    return sorted(domains, key=lambda d: d.id)


def read_cpus(
    cpu_ids: list[int], numa: list[NumaDomain], sys_root: Path = SYS_ROOT
) -> list[CpuInfo]:
    """Socket, core and NUMA node of each online CPU (socket 0 where sysfs says -1)."""
    node_of = {cpu: domain.id for domain in numa for cpu in domain.cpu_ids}
    cpus: list[CpuInfo] = []
    for cpu in cpu_ids:
        topology = sys_root / f"devices/system/cpu/cpu{cpu}/topology"
        package = _read_int(topology / "physical_package_id", 0)
        core = _read_int(topology / "core_id", cpu)
        cpus.append(CpuInfo(cpu, max(package, 0), core, node_of.get(cpu, -1)))
    return cpus


def _run_nvidia_smi(binary: str, query: tuple[str, ...]) -> str | None:
    """The output of ``nvidia-smi QUERY``; None when it cannot run or fails."""
    try:
        done = subprocess.run(
            [binary, *query],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_compute_caps(text: str) -> dict[int, str]:
    """GPU index → family from ``nvidia-smi --query-gpu=index,compute_cap`` (unknown
    capabilities and malformed lines are left out)."""
    families: dict[int, str] = {}
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        if len(row) == 2 and row[0].strip().isdigit():
            family = NVIDIA_FAMILIES.get(row[1].strip())
            if family is not None:
                families[int(row[0])] = family
    return families


def read_gpus(
    nvidia_smi: str | None = None, sys_root: Path = SYS_ROOT
) -> list[GpuInfo]:
    """GPUs from ``nvidia-smi`` (found on PATH unless given); none when it is absent or fails.

    Their family comes from a second query of the compute capability, which older
    drivers do not know: then it stays unknown.
    """
    binary = nvidia_smi or shutil.which("nvidia-smi")
    if binary is None:
        return []
    output = _run_nvidia_smi(binary, NVIDIA_SMI_QUERY)
    if output is None:
        return []
    try:
        gpus = parse_nvidia_smi(output)
    except ValueError:
        return []
    families = parse_compute_caps(_run_nvidia_smi(binary, NVIDIA_SMI_FAMILY_QUERY) or "")
    gpus = [replace(gpu, architecture=families.get(gpu.index, "")) for gpu in gpus]
    located: list[GpuInfo] = []
    for gpu in gpus:
        address = sysfs_pci_address(gpu.pci_bus_id)
        numa_node = -1
        if address is not None:
            numa_node = _read_int(sys_root / "bus/pci/devices" / address / "numa_node", -1)
        located.append(replace(gpu, numa_node=numa_node))
    return located


def read_inventory(
    sys_root: Path = SYS_ROOT,
    proc_root: Path = PROC_ROOT,
    nvidia_smi: str | None = None,
    gpus: bool = True,
) -> MachineInventory:
    """Read the whole machine; ``gpus=False`` skips the (slow) nvidia-smi call."""
    cpu_ids = read_online_cpus(sys_root)
    memory = read_total_memory(proc_root)
    numa = read_numa(cpu_ids, memory, sys_root)
    return MachineInventory(
        hostname=socket.gethostname(),
        architecture=os.uname().machine,
        memory_bytes=memory,
        cpus=tuple(read_cpus(cpu_ids, numa, sys_root)),
        numa=tuple(numa),
        gpus=tuple(read_gpus(nvidia_smi, sys_root)) if gpus else (),
    )
