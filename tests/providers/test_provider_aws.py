"""The AWS provider against moto's EC2: offerings, instances as asked, tags, errors, orphans.

The conformance kit (tests/providers/test_conformance_aws.py) covers what every provider
must do; this module covers what is particular to EC2, and the whole path
through ``fuzz plan`` and ``fuzz apply``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from fuzz_aws import plugin
from fuzz_aws.config import AwsConfig
from fuzz_aws.nodes import TAG_POOL, TAG_PROVIDER
from pydantic import ValidationError

from fuzz.engine.model import State
from fuzz.plugin.provider import (
    TAG_ADDRESS,
    TAG_CLIENT_TOKEN,
    TAG_CLUSTER,
    AuthenticationError,
    CapacityUnavailableError,
    JoinInfo,
    NodeNotFoundError,
    NodeObservation,
    NodeRequest,
    ProviderContext,
    ProviderError,
    QuotaExceededError,
)
from tests.support.cliutil import fuzz_command, read_state, run_fuzz
from tests.support.moto_server import AMI, REGION, Ec2Front, MotoEc2

GIB = 1 << 30
CLUSTER = "awstest"
PRICES = {"m5.large": 0.096, "g4dn.xlarge": 0.526, "t4g.medium": 0.0336}


def _context(tmp_path: Path, cluster: str = CLUSTER, name: str = "aws", **settings: Any
             ) -> ProviderContext:
    config = AwsConfig(**{"region": REGION, "ami": AMI, "prices": PRICES, "max_attempts": 1,
                          **settings})
    return ProviderContext("aws", name, cluster, config, tmp_path)


def _request(ctx: ProviderContext, index: int = 0, token: str | None = None,
             offering: str = "m5.large", attributes: Mapping[str, Any] | None = None
             ) -> NodeRequest:
    address = f"pool.cpu.node[{index}]"
    token = token or hashlib.sha256(f"{ctx.cluster}{address}".encode()).hexdigest()[:32]
    join = JoinInfo(token=f"join-{index}-secret")
    node = NodeRequest(address, "cpu", token, offering, {"role": "compute"}, attributes or {},
                       {TAG_CLUSTER: ctx.cluster, TAG_ADDRESS: address, TAG_CLIENT_TOKEN: token},
                       join)
    payload = plugin.bootstrap_payload(ctx, node, join)
    assert payload is not None
    return NodeRequest(node.address, node.pool, node.client_token, node.offering, node.labels,
                       node.attributes, node.tags, join, payload)


def _create(ctx: ProviderContext, node: NodeRequest) -> NodeObservation:
    created = plugin.create_node(ctx, node)
    assert created is not None
    return created


def _instances(moto: MotoEc2, **filters: str) -> list[dict[str, Any]]:
    wanted = [{"Name": name, "Values": [value]} for name, value in filters.items()]
    pages = moto.client().get_paginator("describe_instances").paginate(Filters=wanted)
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def _live(moto: MotoEc2, cluster: str = CLUSTER) -> list[dict[str, Any]]:
    return [i for i in _instances(moto, **{f"tag:{TAG_CLUSTER}": cluster})
            if i["State"]["Name"] not in ("terminated", "shutting-down")]


def _tags(instance: Mapping[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}


# --- offerings -------------------------------------------------------------------------


def test_offerings_are_the_priced_instance_types_as_ec2_describes_them(
    moto_ec2: MotoEc2, tmp_path: Path
) -> None:
    (tmp_path / "prices.yaml").write_text("p4d.24xlarge: 32.77\nm5.large: 0.5\n")
    ctx = _context(tmp_path, endpoint_url=moto_ec2.endpoint_url, price_file="prices.yaml")
    offerings = {o.name: o for o in plugin.offerings(ctx) or []}
    assert sorted(offerings) == ["g4dn.xlarge", "m5.large", "p4d.24xlarge", "t4g.medium"]
    m5 = offerings["m5.large"]
    assert (m5.cores, m5.memory_bytes, m5.gpus, m5.architecture) == (2, 8 * GIB, 0, "x86_64")
    assert m5.price_per_hour == 0.096, "prices: in the block win over the price file"
    assert m5.region == REGION
    g4 = offerings["g4dn.xlarge"]
    assert (g4.cores, g4.gpus, g4.gpu_model) == (4, 1, "NVIDIA T4")
    assert offerings["p4d.24xlarge"].gpus == 8
    assert offerings["p4d.24xlarge"].price_per_hour == 32.77
    assert offerings["t4g.medium"].architecture == "aarch64"


@pytest.mark.parametrize(("settings", "message"), [
    ({"prices": {"m5.nope": 1.0}}, "InvalidInstanceType"),
    ({"prices": {}}, "no prices"),
    ({"prices": {}, "price_file": "missing.yaml"}, "cannot read price_file"),
])
def test_offerings_name_what_is_wrong_with_the_prices(
    moto_ec2: MotoEc2, tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    ctx = _context(tmp_path, endpoint_url=moto_ec2.endpoint_url, **settings)
    with pytest.raises(ProviderError, match=message) as raised:
        plugin.offerings(ctx)
    assert "\n" not in str(raised.value)


# --- create, read, delete ----------------------------------------------------------------


def test_create_starts_the_instance_the_spec_describes(moto_ec2: MotoEc2, tmp_path: Path
                                                       ) -> None:
    ec2 = moto_ec2.client()
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="fuzz-agents", Description="agent port",
                                      VpcId=vpc)["GroupId"]
    iam = moto_ec2.client("iam")
    profile = iam.create_instance_profile(InstanceProfileName="fuzz-node")["InstanceProfile"]
    ctx = _context(tmp_path, endpoint_url=moto_ec2.endpoint_url, subnet_id=subnet,
                   security_group_ids=[group], instance_profile="fuzz-node", spot=True,
                   spot_max_price=0.05)
    node = _request(ctx, token="t" * 80)
    created = _create(ctx, node)

    [instance] = _live(moto_ec2)
    assert created.provider_id == instance["InstanceId"]
    assert instance["ImageId"] == AMI and instance["InstanceType"] == "m5.large"
    assert instance["SubnetId"] == subnet
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group]
    assert instance["IamInstanceProfile"]["Arn"] == profile["Arn"]
    assert instance["InstanceLifecycle"] == "spot"
    assert "KeyName" not in instance, "no key pair: fuzz never uses SSH"
    assert instance["ClientToken"] == hashlib.sha256(b"t" * 80).hexdigest(), (
        "a token longer than EC2's 64 characters is sent as its digest")
    assert _tags(instance) == {
        TAG_CLUSTER: CLUSTER, TAG_ADDRESS: "pool.cpu.node[0]", TAG_CLIENT_TOKEN: "t" * 80,
        TAG_PROVIDER: "aws", TAG_POOL: "cpu", "Name": f"fuzz {CLUSTER} pool.cpu.node[0]"}
    user_data = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"],
                                                Attribute="userData")["UserData"]["Value"]
    script = base64.b64decode(user_data).decode()
    assert script == node.bootstrap and script.startswith("#!/bin/sh")
    assert "join-0-secret" in script and "--label role=compute" in script
    [volume] = ec2.describe_volumes(Filters=[
        {"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}])["Volumes"]
    assert _tags(volume)[TAG_CLUSTER] == CLUSTER


def test_create_is_idempotent_and_tells_ec2_the_client_token(moto_ec2: MotoEc2,
                                                             ec2_front: Ec2Front,
                                                             tmp_path: Path) -> None:
    ctx = _context(tmp_path, endpoint_url=ec2_front.url)
    node = _request(ctx)
    first = _create(ctx, node)
    second = _create(ctx, node)
    assert second.provider_id == first.provider_id
    assert ec2_front.calls.count("RunInstances") == 1, "the second create found the instance"
    [instance] = _live(moto_ec2)
    assert instance["ClientToken"] == node.client_token


def test_a_spot_pool_gets_spot_instances_from_an_on_demand_block(moto_ec2: MotoEc2,
                                                                 tmp_path: Path) -> None:
    ctx = _context(tmp_path, endpoint_url=moto_ec2.endpoint_url)
    _create(ctx, _request(ctx, 0))
    _create(ctx, _request(ctx, 1, attributes={"spot": True}))
    lifecycle = {_tags(i)[TAG_ADDRESS]: i.get("InstanceLifecycle", "on-demand")
                 for i in _live(moto_ec2)}
    assert lifecycle == {"pool.cpu.node[0]": "on-demand", "pool.cpu.node[1]": "spot"}


def test_read_lists_this_cluster_and_block_only_with_states_and_endpoints(
    moto_ec2: MotoEc2, tmp_path: Path
) -> None:
    ctx = _context(tmp_path, endpoint_url=moto_ec2.endpoint_url)
    mine = [_create(ctx, _request(ctx, i)) for i in range(2)]
    for other in (_context(tmp_path, cluster="other", endpoint_url=moto_ec2.endpoint_url),
                  _context(tmp_path, name="aws-spot", endpoint_url=moto_ec2.endpoint_url)):
        _create(other, _request(other, 5))
    moto_ec2.client().terminate_instances(InstanceIds=[mine[1].provider_id])

    seen = {n.provider_id: n for n in plugin.read_nodes(ctx) or []}
    assert set(seen) == {n.provider_id for n in mine}, "other clusters and blocks are not read"
    running, gone = seen[mine[0].provider_id], seen[mine[1].provider_id]
    [instance] = _instances(moto_ec2, **{"instance-id": running.provider_id})
    assert running.state == "running"
    assert running.endpoint == f"{instance['PrivateIpAddress']}:7443"
    assert (running.address, running.client_token) == ("pool.cpu.node[0]", mine[0].client_token)
    assert running.attributes["instance_type"] == "m5.large"
    assert gone.state == "gone" and gone.endpoint is None


def test_delete_terminates_and_is_idempotent(moto_ec2: MotoEc2, tmp_path: Path) -> None:
    ctx = _context(tmp_path, endpoint_url=moto_ec2.endpoint_url)
    created = _create(ctx, _request(ctx))
    assert plugin.delete_node(ctx, created) is True
    assert _live(moto_ec2) == []
    assert plugin.delete_node(ctx, created) is True
    unknown = NodeObservation("i-0123456789abcdef0", "pool.cpu.node[9]", "x", "running")
    assert plugin.delete_node(ctx, unknown) is True, "an instance that never was is gone"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "status", "error"), [
    ("InstanceLimitExceeded", 400, QuotaExceededError),
    ("VcpuLimitExceeded", 400, QuotaExceededError),
    ("InsufficientInstanceCapacity", 500, CapacityUnavailableError),
    ("UnauthorizedOperation", 403, AuthenticationError),
])
def test_ec2_error_codes_become_typed_one_line_errors(
    ec2_front: Ec2Front, tmp_path: Path, code: str, status: int, error: type[ProviderError]
) -> None:
    ctx = _context(tmp_path, endpoint_url=ec2_front.url)
    with ec2_front.failing("RunInstances", code, "Refused.\n  See the docs.", status), \
            pytest.raises(ProviderError) as raised:
        _create(ctx, _request(ctx))
    assert type(raised.value) is error
    message = str(raised.value)
    assert "\n" not in message and code in message and "m5.large" in message


def test_keys_without_permission_are_an_authentication_error(
    moto_ec2: MotoEc2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    iam = moto_ec2.client("iam")
    iam.create_user(UserName="no-rights")
    key = iam.create_access_key(UserName="no-rights")["AccessKey"]
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[no-rights]\naws_access_key_id = {key['AccessKeyId']}\n"
                           f"aws_secret_access_key = {key['SecretAccessKey']}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    ctx = _context(tmp_path, endpoint_url=moto_ec2.endpoint_url, profile="no-rights")
    with moto_ec2.checking_credentials(), pytest.raises(AuthenticationError) as raised:
        plugin.read_nodes(ctx)
    assert "AccessDenied" in str(raised.value)


def test_a_missing_subnet_is_not_found(moto_ec2: MotoEc2, tmp_path: Path) -> None:
    ctx = _context(tmp_path, endpoint_url=moto_ec2.endpoint_url, subnet_id="subnet-0123abcd")
    with pytest.raises(NodeNotFoundError, match=r"InvalidSubnetID\.NotFound"):
        _create(ctx, _request(ctx))


# --- through fuzz plan and fuzz apply ----------------------------------------------------------

SPEC = """\
version: 1
cluster: {cluster}
state:
  backend: local
  path: .fuzz/state.json
providers:
  aws:
    region: {region}
    endpoint_url: {endpoint}
    ami: {ami}
    prices: {{m5.large: 0.096}}
    max_attempts: 1
pools:
  cpu:
    provider: aws
    offerings: [m5.large]
    min: 1
    max: 1
"""


def _spec(directory: Path, endpoint: str) -> Path:
    (directory / "fuzz.yaml").write_text(
        SPEC.format(cluster=CLUSTER, region=REGION, endpoint=endpoint, ami=AMI))
    return directory


def test_fuzz_validate_points_at_bad_aws_settings(moto_ec2: MotoEc2, tmp_path: Path) -> None:
    cluster = _spec(tmp_path, moto_ec2.endpoint_url)
    spec = cluster / "fuzz.yaml"
    spec.write_text(spec.read_text().replace(f"ami: {AMI}", "ami: ubuntu-22.04\n    subnet: x"))
    result = run_fuzz(cluster, "validate")
    assert result.code == 1
    lines = (result.out + result.err).strip().splitlines()
    assert any(line.startswith("fuzz.yaml:10:10: providers.aws.ami: ") and "invalid AMI id" in line
               for line in lines), lines
    assert any(line.startswith("fuzz.yaml:11:5: providers.aws.subnet: ")
               and "subnet_id" in line for line in lines), lines


@pytest.mark.parametrize(("settings", "message"), [
    ({"spot_max_price": 0.5}, "spot_max_price: only with spot: true"),
    ({"bootstrap": {"port": 0}}, "bootstrap.port: must be a fixed port"),
    ({"security_group_ids": ["default"]}, "invalid security group id 'default'"),
    ({"prices": {"m5.large": -1}}, "price of m5.large: -1.0 is not a price per hour"),
])
def test_inconsistent_aws_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        AwsConfig(region=REGION, ami=AMI, **settings)


def test_no_credentials_is_one_line_from_fuzz_plan(moto_ec2: MotoEc2, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = _spec(tmp_path, moto_ec2.endpoint_url)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = run_fuzz(cluster, "plan")
    assert result.code == 1
    assert result.err.strip().count("\n") == 0, result.err
    assert "no usable AWS credentials" in result.err


def test_fuzz_plan_lists_orphans_and_apply_terminates_them(moto_ec2: MotoEc2,
                                                           tmp_path: Path) -> None:
    cluster = _spec(tmp_path, moto_ec2.endpoint_url)
    assert run_fuzz(cluster, "apply", "--auto-approve").code == 0
    [recorded] = _live(moto_ec2)
    orphan = moto_ec2.client().run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="m5.large",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": TAG_CLUSTER, "Value": CLUSTER}, {"Key": TAG_PROVIDER, "Value": "aws"},
            {"Key": TAG_ADDRESS, "Value": "pool.cpu.node[7]"},
            {"Key": TAG_CLIENT_TOKEN, "Value": "left-by-a-lost-state"}]}],
    )["Instances"][0]["InstanceId"]

    plan = run_fuzz(cluster, "plan", "--json")
    [change] = plan.json()["changes"]
    assert (change["action"], change["orphan"]) == ("delete", True)
    assert change["before"]["provider_id"] == orphan
    text = run_fuzz(cluster, "plan")
    assert "orphan node" in text.out and orphan in text.out

    assert run_fuzz(cluster, "apply", "--auto-approve").code == 0
    assert [i["InstanceId"] for i in _live(moto_ec2)] == [recorded["InstanceId"]]
    assert run_fuzz(cluster, "plan", "--detailed-exitcode").code == 0


def test_kill_9_between_run_instances_and_recording_leaves_one_recorded_instance(
    moto_ec2: MotoEc2, ec2_front: Ec2Front, tmp_path: Path
) -> None:
    cluster = _spec(tmp_path, ec2_front.url)
    with ec2_front.holding("RunInstances"):
        apply = subprocess.Popen(fuzz_command("apply", "--auto-approve"), cwd=cluster,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not _live(moto_ec2) and apply.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(apply.pid, signal.SIGKILL)
        apply.wait()
    [started] = _live(moto_ec2)
    pending = State.from_json(read_state(cluster)).resources["pool.cpu.node[0]"]
    assert (pending.status, pending.provider_id) == ("pending_create", None), (
        "the kill came after EC2 started the instance and before fuzz recorded it")

    assert run_fuzz(cluster, "apply", "--auto-approve").code == 0
    assert [i["InstanceId"] for i in _live(moto_ec2)] == [started["InstanceId"]]
    recorded = State.from_json(read_state(cluster)).resources["pool.cpu.node[0]"]
    assert (recorded.status, recorded.provider_id) == ("created", started["InstanceId"])
    assert json.loads(run_fuzz(cluster, "plan", "--json").out)["changes"] == []
