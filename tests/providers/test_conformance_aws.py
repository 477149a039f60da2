"""The AWS provider passes the conformance kit against moto's EC2.

Errors come from moto where it produces them (credentials checked by moto, a
security group deleted in moto); moto has no quotas and endless capacity, so
those two answer from the front (``tests/support/moto_server.py``) in EC2's error shape.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from fuzz_aws import plugin
from fuzz_aws.config import AwsConfig

from fuzz.plugin.provider import ProviderContext
from fuzz.testing.provider_conformance import ConformanceTarget, ErrorCategory, ProviderConformance
from tests.support.moto_server import AMI, REGION, Ec2Front, MotoEc2

QUOTA_MESSAGE = ("You have requested more vCPU capacity than your current vCPU limit of 32 "
                 "allows for the instance bucket that the specified instance type belongs to.")
CAPACITY_MESSAGE = ("We currently do not have sufficient m5.large capacity in the Availability "
                    "Zone you requested (us-east-1a).")


@contextlib.contextmanager
def _group_deleted(moto: MotoEc2, group: str) -> Iterator[None]:
    """Delete the block's security group (the target is built anew for the next test)."""
    moto.client().delete_security_group(GroupId=group)
    yield


def _fault(moto: MotoEc2, front: Ec2Front, group: str, category: ErrorCategory
           ) -> AbstractContextManager[None]:
    if category == "quota":
        return front.failing("RunInstances", "VcpuLimitExceeded", QUOTA_MESSAGE)
    if category == "capacity":
        return front.failing("RunInstances", "InsufficientInstanceCapacity", CAPACITY_MESSAGE,
                             status=500)
    if category == "auth":
        return moto.checking_credentials()
    return _group_deleted(moto, group)


class TestAwsConformance(ProviderConformance):
    """Every behaviour of the kit, against moto."""

    @pytest.fixture
    def conformance_target(self, moto_ec2: MotoEc2, ec2_front: Ec2Front, tmp_path: Path
                           ) -> ConformanceTarget:
        """An aws block in moto's default VPC, with its own security group."""
        group = moto_ec2.client().create_security_group(
            GroupName=f"fuzz-{uuid.uuid4().hex[:8]}", Description="conformance")["GroupId"]
        config = AwsConfig(region=REGION, endpoint_url=ec2_front.url, ami=AMI,
                           security_group_ids=(group,), max_attempts=1,
                           prices={"m5.large": 0.096, "g4dn.xlarge": 0.526, "t4g.medium": 0.0336})
        return ConformanceTarget(
            plugin=plugin,
            context=ProviderContext("aws", "aws", "conformance", config, tmp_path),
            offering="m5.large",
            inject_error=lambda category: _fault(moto_ec2, ec2_front, group, category),
            timeout=15, poll_interval=0.05,
        )
