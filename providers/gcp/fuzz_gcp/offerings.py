"""Compute Engine machine types as fuzz offerings, priced from the provider block."""

from __future__ import annotations

from google.cloud import compute_v1

from fuzz.errors import ConfigError
from fuzz.plugin.provider import Offering
from fuzz_gcp.client import Compute
from fuzz_gcp.config import GcpConfig
from fuzz_gcp.errors import translated

ARCHITECTURES = {"X86_64": "x86_64", "ARM64": "aarch64"}


def offering(machine: compute_v1.MachineType, price: float, config: GcpConfig) -> Offering:
    """One machine type as an offering: its CPUs, memory, built-in GPUs and architecture."""
    gpus = sum(a.guest_accelerator_count for a in machine.accelerators)
    models = [a.guest_accelerator_type for a in machine.accelerators]
    return Offering(
        name=machine.name,
        cores=machine.guest_cpus,
        memory_bytes=machine.memory_mb * 2**20,
        gpus=gpus,
        gpu_model=models[0] if models else None,
        architecture=ARCHITECTURES.get(machine.architecture, "x86_64"),
        price_per_hour=price,
        region=config.region,
        zone=config.zone,
    )


def list_offerings(compute: Compute, config: GcpConfig, provider: str) -> list[Offering]:
    """The priced machine types of the zone; a priced type the zone lacks is a ConfigError."""
    with translated(f"listing machine types in {config.zone}"):
        machines = {m.name: m for m in compute.machine_types.list(
            project=config.project, zone=config.zone)}
    missing = sorted(set(config.prices) - set(machines))
    if missing:
        raise ConfigError(
            f"gcp provider '{provider}': prices name machine types that zone {config.zone} "
            f"does not have: {', '.join(missing)}"
        )
    return [offering(machines[name], price, config)
            for name, price in sorted(config.prices.items())]
