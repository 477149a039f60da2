"""A declared inventory: a node described in a YAML file rather than read from the hardware.

Tests (and demos) use it to give a small machine the shape of a large one::

    sockets: 2
    numa_per_socket: 2
    cores_per_numa: 8
    threads_per_core: 1          # hardware (SMT) threads of each core
    memory: 64GiB
    gpus: [{model: A100, memory: 40GiB, numa: 0}, {model: A100, memory: 40GiB, numa: 2}]
    labels: {site: test}

Logical CPUs are numbered socket by socket, within a socket NUMA domain by NUMA
domain, and within a domain core by core (the threads of one core are consecutive
numbers); each is backed round-robin by one of the machine's real online CPUs
(:attr:`CpuInfo.host_cpu`), and the inventory says it is declared. Declared GPUs
get indices 0, 1, ... and no device nodes; a GPU's ``vendor`` (nvidia, the default, or
amd) and ``architecture`` (its family, e.g. hopper) go into the node's hardware
labels. The file is checked by hand, with one line per error naming the file and the
key: the agent must not import pydantic.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fuzz.errors import ConfigError
from fuzz.substrate.capacity.inventory import (
    PROC_ROOT,
    SYS_ROOT,
    CpuInfo,
    GpuInfo,
    MachineInventory,
    NumaDomain,
    read_online_cpus,
    read_total_memory,
)
from fuzz.substrate.capacity.yamltext import load_yaml
from fuzz.units import parse_size

MAX_CPUS = 4096
TOP_KEYS = ("sockets", "numa_per_socket", "cores_per_numa", "threads_per_core", "memory",
            "gpus", "labels")
GPU_KEYS = ("model", "memory", "numa", "vendor", "architecture")
GPU_VENDORS = ("nvidia", "amd")
DEFAULT_GPU_MODEL = "declared GPU"


class DeclaredInventoryError(ConfigError):
    """The declared inventory file is missing, unreadable or invalid."""


class _Checker:
    """Turns problems into DeclaredInventoryError lines that name the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> DeclaredInventoryError:
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        return DeclaredInventoryError(where + problem)

    def count(self, data: Mapping[str, Any], key: str, default: int | None) -> int:
        value = data.get(key, default)
        if value is None:
            raise self.fail(key, "is required (a positive integer)")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, f"must be a positive integer, got {value!r}")
        return value

    def size(self, value: Any, key: str) -> int:
        try:
            return parse_size(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def keys(self, data: Mapping[Any, Any], allowed: Sequence[str], key: str) -> None:
        for name in data:
            if name not in allowed:
                raise self.fail(
                    key, f"unknown key {name!r}: expected one of {', '.join(allowed)}"
                )


def parse_declared_inventory(
    text: str,
    source: str,
    host_cpus: Sequence[int],
    host_memory: int,
    hostname: str,
    architecture: str,
) -> MachineInventory:
    """Build the declared machine described by the YAML ``text``.

    ``source`` names the file in error messages; ``host_cpus`` are the real online
    CPUs the declared ones are mapped onto (round-robin); ``host_memory`` is the
    memory reported when the file declares none. Raises DeclaredInventoryError.
    """
    check = _Checker(source)
    if not host_cpus:
        raise check.fail("", "the machine reports no online CPU to map declared CPUs onto")
    try:
        data = load_yaml(text)
    except ValueError as exc:
        raise check.fail("", str(exc)) from None
    if not isinstance(data, dict):
        raise check.fail("", f"expected a mapping with keys {', '.join(TOP_KEYS)}")
    check.keys(data, TOP_KEYS, "")
    sockets = check.count(data, "sockets", 1)
    numa_per_socket = check.count(data, "numa_per_socket", 1)
    cores_per_numa = check.count(data, "cores_per_numa", None)
    threads = check.count(data, "threads_per_core", 1)
    total = sockets * numa_per_socket * cores_per_numa * threads
    if total > MAX_CPUS:
        raise check.fail("cores_per_numa", f"{total} CPUs declared; at most {MAX_CPUS} allowed")
    memory = check.size(data["memory"], "memory") if "memory" in data else host_memory
    domains = sockets * numa_per_socket
    cpus = tuple(
        CpuInfo(
            id=cpu,
            socket=cpu // threads // (numa_per_socket * cores_per_numa),
            core=cpu // threads % (numa_per_socket * cores_per_numa),
            numa_node=cpu // threads // cores_per_numa,
            host_cpu=host_cpus[cpu % len(host_cpus)],
        )
        for cpu in range(total)
    )
    share, extra = divmod(memory, domains)
    numa = tuple(
        NumaDomain(
            id=node,
            cpu_ids=tuple(range(node * cores_per_numa * threads,
                                (node + 1) * cores_per_numa * threads)),
            memory_bytes=share + (1 if node < extra else 0),
        )
        for node in range(domains)
    )
    return MachineInventory(
        hostname=hostname,
        architecture=architecture,
        memory_bytes=memory,
        cpus=cpus,
        numa=numa,
        gpus=_gpus(check, data.get("gpus", []), domains),
        declared=True,
        labels=_labels(check, data.get("labels", {})),
    )


def _gpus(check: _Checker, value: Any, domains: int) -> tuple[GpuInfo, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise check.fail("gpus", f"must be a list of {{{', '.join(GPU_KEYS)}}} mappings")
    gpus: list[GpuInfo] = []
    for index, entry in enumerate(value):
        key = f"gpus[{index}]"
        if not isinstance(entry, dict):
            raise check.fail(key, f"must be a mapping with keys {', '.join(GPU_KEYS)}")
        check.keys(entry, GPU_KEYS, key)
        model = entry.get("model", DEFAULT_GPU_MODEL)
        if not isinstance(model, str) or not model.strip():
            raise check.fail(f"{key}.model", f"must be a non-empty string, got {model!r}")
        memory = check.size(entry.get("memory", 0), f"{key}.memory")
        vendor = entry.get("vendor", "nvidia")
        if vendor not in GPU_VENDORS:
            raise check.fail(f"{key}.vendor", f"must be one of {', '.join(GPU_VENDORS)}, "
                             f"got {vendor!r}")
        architecture = entry.get("architecture", "")
        if not isinstance(architecture, str):
            raise check.fail(f"{key}.architecture", f"must be a string, got {architecture!r}")
        numa = entry.get("numa", -1)
        if isinstance(numa, bool) or not isinstance(numa, int) or not -1 <= numa < domains:
            raise check.fail(
                f"{key}.numa", f"must be a NUMA domain 0..{domains - 1} (or -1), got {numa!r}"
            )
        gpus.append(
            GpuInfo(
                index=index,
                uuid=f"DECLARED-GPU-{index}",
                model=model.strip(),
                memory_bytes=memory,
                pci_bus_id="",
                numa_node=numa,
                vendor=vendor,
                architecture=architecture.strip(),
            )
        )
    return tuple(gpus)


def _labels(check: _Checker, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise check.fail("labels", "must be a mapping of names to strings")
    labels: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not name.strip():
            raise check.fail("labels", f"label names must be non-empty strings, got {name!r}")
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            raise check.fail(f"labels.{name}", f"must be a string, got {text!r}")
        labels[name.strip()] = str(text)
    return labels


def read_declared_inventory(
    path: Path,
    sys_root: Path = SYS_ROOT,
    proc_root: Path = PROC_ROOT,
) -> MachineInventory:
    """Read the declared inventory in ``path`` and map it onto this machine's online CPUs.

    The memory defaults to the machine's own when the file declares none. Raises
    DeclaredInventoryError (a ConfigError) with one line naming the file.
    """
    source = f"inventory file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DeclaredInventoryError(f"{source} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DeclaredInventoryError(f"cannot read {source}: {reason}") from exc
    return parse_declared_inventory(
        text,
        source,
        host_cpus=read_online_cpus(sys_root),
        host_memory=read_total_memory(proc_root),
        hostname=socket.gethostname(),
        architecture=os.uname().machine,
    )
