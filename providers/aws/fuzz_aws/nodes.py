"""The aws provider's node operations: fuzz nodes as Amazon EC2 instances (boto3).

offerings
    see :mod:`fuzz_aws.offerings`.
create
    ``RunInstances`` of the node's offering (its instance type) with the block's AMI,
    subnet, security groups and instance profile, no key pair (fuzz never uses SSH),
    IMDSv2 only, the bootstrap script as user-data, spot when the block or the node's
    pool (the node attribute ``spot``) asks for it,
    and the fuzz tags on the instance and its volumes. Idempotent twice over: an
    instance already tagged with the node's client token is returned as it is, and
    ``ClientToken`` (the engine's token; a digest of it when longer than EC2's 64
    characters) makes EC2 itself answer a repeated call with the same instance.
read
    ``DescribeInstances`` filtered by the tags ``fuzz:cluster`` and ``fuzz:provider``
    (the block's name, so two blocks in one region never see each other's nodes as
    orphans). The endpoint is the private IP and the agent's port.
delete
    ``TerminateInstances``; an instance that does not exist any more counts as deleted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from botocore.exceptions import ClientError

from fuzz.plugin.kit import validated_config
from fuzz.plugin.provider import (
    TAG_ADDRESS,
    TAG_CLIENT_TOKEN,
    TAG_CLUSTER,
    NodeObservation,
    NodeRequest,
    NodeState,
    Offering,
    ProviderContext,
    ProviderError,
)
from fuzz_aws.client import ec2_client
from fuzz_aws.config import AwsConfig
from fuzz_aws.errors import ec2_errors, is_not_found
from fuzz_aws.offerings import list_offerings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType
    from mypy_boto3_ec2.type_defs import (
        FilterTypeDef,
        IamInstanceProfileSpecificationTypeDef,
        InstanceTypeDef,
        RunInstancesRequestTypeDef,
        SpotMarketOptionsTypeDef,
        TagSpecificationTypeDef,
        TagTypeDef,
    )

TAG_PROVIDER = "fuzz:provider"
TAG_POOL = "fuzz:pool"
MAX_CLIENT_TOKEN = 64
"""EC2 accepts client tokens of at most 64 ASCII characters."""
MAX_USER_DATA = 16 * 1024
"""EC2 accepts at most 16 KiB of user-data (before base64)."""
STATES: Mapping[str, NodeState] = {
    "pending": "pending",
    "running": "running",
    "stopping": "stopping",
    "stopped": "stopping",  # exists, but does not run: neither new nor gone
    "shutting-down": "stopping",
    "terminated": "gone",
}


def aws_client_token(token: str) -> str:
    """The engine's client token as EC2 takes it: as it is when it fits (at most 64
    printable ASCII characters), else its SHA-256 in hex (64 characters), so the same
    token always gives the same ``ClientToken``."""
    if len(token) <= MAX_CLIENT_TOKEN and token.isascii() and token.isprintable():
        return token
    return hashlib.sha256(token.encode()).hexdigest()


def _tags(instance: InstanceTypeDef) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}


def observation(instance: InstanceTypeDef, config: AwsConfig) -> NodeObservation:
    """What fuzz sees of one instance: its tags, state, endpoint and where it runs."""
    tags = _tags(instance)
    state = STATES.get(instance["State"]["Name"], "pending")
    address = instance.get("PrivateIpAddress")
    endpoint = f"{address}:{config.bootstrap.port}" if address and state == "running" else None
    return NodeObservation(
        provider_id=instance["InstanceId"],
        address=tags.get(TAG_ADDRESS, ""),
        client_token=tags.get(TAG_CLIENT_TOKEN, ""),
        state=state,
        endpoint=endpoint,
        attributes={
            "instance_type": instance.get("InstanceType"),
            "zone": instance.get("Placement", {}).get("AvailabilityZone"),
            "private_ip": address,
            "spot": instance.get("InstanceLifecycle") == "spot",
        },
    )


def run_request(ctx: ProviderContext, config: AwsConfig, node: NodeRequest
                ) -> RunInstancesRequestTypeDef:
    """The ``RunInstances`` parameters that create ``node``."""
    if not node.offering:
        raise ProviderError(f"aws node {node.address}: its pool names no offering "
                            f"(an instance type, e.g. offerings: [c7i.large])")
    if len(node.bootstrap.encode()) > MAX_USER_DATA:
        raise ProviderError(f"aws node {node.address}: the bootstrap script is "
                            f"{len(node.bootstrap.encode())} bytes; EC2 takes at most "
                            f"{MAX_USER_DATA} bytes of user-data")
    tags = {**dict(node.tags), TAG_PROVIDER: ctx.name, TAG_POOL: node.pool,
            "Name": f"fuzz {ctx.cluster} {node.address}"}
    tag_list: list[TagTypeDef] = [{"Key": key, "Value": value}
                                  for key, value in sorted(tags.items())]
    tagged: list[TagSpecificationTypeDef] = [{"ResourceType": "instance", "Tags": tag_list},
                                             {"ResourceType": "volume", "Tags": tag_list}]
    request: RunInstancesRequestTypeDef = {
        "ImageId": config.ami,
        "InstanceType": cast("InstanceTypeType", node.offering),  # EC2 checks the name
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": aws_client_token(node.client_token),
        "UserData": node.bootstrap,
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "TagSpecifications": tagged,
    }
    if config.subnet_id:
        request["SubnetId"] = config.subnet_id
    if config.security_group_ids:
        request["SecurityGroupIds"] = list(config.security_group_ids)
    if config.instance_profile:
        profile: IamInstanceProfileSpecificationTypeDef = (
            {"Arn": config.instance_profile} if config.instance_profile.startswith("arn:")
            else {"Name": config.instance_profile})
        request["IamInstanceProfile"] = profile
    if config.spot or node.attributes.get("spot"):
        spot: SpotMarketOptionsTypeDef = {"SpotInstanceType": "one-time",
                                          "InstanceInterruptionBehavior": "terminate"}
        if config.spot_max_price is not None:
            spot["MaxPrice"] = f"{config.spot_max_price:g}"
        request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
    return request


class AwsNodes:
    """Offerings, create, read and delete through one EC2 client per region and profile."""

    def offerings(self, ctx: ProviderContext) -> list[Offering]:
        """The priced instance types, as EC2 describes them in the block's region."""
        config = validated_config(AwsConfig, ctx)
        prices = config.price_table(ctx.base_dir)
        if not prices:
            raise ProviderError(f"aws provider '{ctx.name}': no prices; list the instance types "
                                f"it may use with their prices per hour in prices: or "
                                f"price_file:")
        doing = f"aws provider '{ctx.name}': describe instance types"
        return list_offerings(ec2_client(config, doing), config, prices, doing)

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation:
        """The instance tagged with ``node.client_token``, started now unless it exists."""
        config = validated_config(AwsConfig, ctx)
        doing = f"aws provider '{ctx.name}': start {node.offering} for {node.address}"
        client = ec2_client(config, doing)
        for instance in _instances(client, ctx, doing, {TAG_CLIENT_TOKEN: node.client_token}):
            if STATES.get(instance["State"]["Name"]) != "gone":
                return observation(instance, config)
        request = run_request(ctx, config, node)
        with ec2_errors(doing):
            reservation = client.run_instances(**request)
        return observation(reservation["Instances"][0], config)

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation]:
        """Every instance tagged for this cluster and provider block."""
        config = validated_config(AwsConfig, ctx)
        doing = f"aws provider '{ctx.name}': list instances"
        client = ec2_client(config, doing)
        return [observation(instance, config)
                for instance in _instances(client, ctx, doing, {})]

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool:
        """Terminate the instance; one that no longer exists is deleted already."""
        config = validated_config(AwsConfig, ctx)
        doing = f"aws provider '{ctx.name}': terminate {node.provider_id} ({node.address})"
        client = ec2_client(config, doing)
        with ec2_errors(doing):
            try:
                client.terminate_instances(InstanceIds=[node.provider_id])
            except ClientError as exc:
                if not is_not_found(exc):
                    raise
        return True


def _instances(client: EC2Client, ctx: ProviderContext, doing: str,
               tags: Mapping[str, str]) -> list[InstanceTypeDef]:
    """The instances tagged for ``ctx``'s cluster and block, and with ``tags``."""
    wanted = {TAG_CLUSTER: ctx.cluster, TAG_PROVIDER: ctx.name, **tags}
    filters: list[FilterTypeDef] = [{"Name": f"tag:{key}", "Values": [value]}
                                    for key, value in sorted(wanted.items())]
    with ec2_errors(doing):
        pages = client.get_paginator("describe_instances").paginate(Filters=filters)
        return [instance for page in pages for reservation in page["Reservations"]
                for instance in reservation["Instances"]]

