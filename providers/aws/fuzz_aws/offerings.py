"""EC2 instance types as fuzz offerings, priced from the provider block.

The block lists the instance types it may use with their prices (``prices``,
``price_file``); vCPUs, memory, GPUs and architecture come from
``DescribeInstanceTypes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from fuzz.plugin.provider import Offering
from fuzz_aws.config import AwsConfig
from fuzz_aws.errors import ec2_errors

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType
    from mypy_boto3_ec2.type_defs import InstanceTypeInfoTypeDef

TYPES_PER_CALL = 100
"""DescribeInstanceTypes takes at most 100 instance types per call."""
ARCHITECTURES = {"x86_64": "x86_64", "arm64": "aarch64"}
"""EC2 architecture names → the names the node agent reports, in order of preference."""


def offering_of(info: InstanceTypeInfoTypeDef, price: float, region: str) -> Offering:
    """One instance type as an offering: vCPUs as cores, memory, GPUs and architecture."""
    gpus = info.get("GpuInfo", {}).get("Gpus", [])
    supported = info.get("ProcessorInfo", {}).get("SupportedArchitectures", [])
    architecture = next((name for ec2, name in ARCHITECTURES.items() if ec2 in supported),
                        supported[0] if supported else "x86_64")
    first = gpus[0] if gpus else None
    return Offering(
        name=info["InstanceType"],
        cores=info["VCpuInfo"]["DefaultVCpus"],
        memory_bytes=info["MemoryInfo"]["SizeInMiB"] * 1024 * 1024,
        gpus=sum(gpu.get("Count", 0) for gpu in gpus),
        gpu_model=f"{first.get('Manufacturer', '')} {first.get('Name', '')}".strip()
        if first else None,
        architecture=architecture,
        price_per_hour=price,
        region=region,
    )


def list_offerings(client: EC2Client, config: AwsConfig, prices: Mapping[str, float],
                   doing: str) -> list[Offering]:
    """The instance types of ``prices`` as EC2 describes them, sorted by name."""
    names = sorted(prices)
    found: list[Offering] = []
    with ec2_errors(doing):
        for start in range(0, len(names), TYPES_PER_CALL):
            chunk = names[start:start + TYPES_PER_CALL]
            pages = client.get_paginator("describe_instance_types").paginate(
                InstanceTypes=cast("list[InstanceTypeType]", chunk))  # EC2 checks them
            found += [offering_of(info, prices[info["InstanceType"]], config.region)
                      for page in pages for info in page["InstanceTypes"]]
    return sorted(found, key=lambda offering: offering.name)
