"""The gcp provider through the real google-cloud-compute REST clients and a fake Compute API."""

from __future__ import annotations

import time
import uuid

import pytest
from fuzz_gcp import plugin
from fuzz_gcp.labels import decode_label, decode_value, encode_label, encode_value
from fuzz_gcp.nodes import REQUEST_NAMESPACE, instance_name
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from fuzz.errors import ConfigError
from fuzz.plugin.provider import (
    AuthenticationError,
    CapacityUnavailableError,
    JoinInfo,
    NodeNotFoundError,
    NodeObservation,
    ProviderError,
    QuotaExceededError,
)
from tests.support.fakes.fixtures import GcpApi, node_request
from tests.support.fakes.gcp_compute import LABEL_KEY_RE, LABEL_VALUE_RE

INSTANCES = r"/compute/v1/projects/fuzz-test/zones/us-central1-a/instances"


def _wait_gone(api: GcpApi, ctx: object, token: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while any(o.client_token == token for o in plugin.read_nodes(ctx)):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, f"node {token} still listed after {timeout}s"
        time.sleep(0.02)


@pytest.mark.parametrize("text", ["pool.cpu.node[3]", "demo", "0123abcd" * 4, "Ünïcode_x y",
                                  "pool." + "p" * 63 + ".node[Machine_01.rack-2]", ""])
def test_label_codec_round_trips_into_valid_labels(text: str) -> None:
    labels = encode_label("fuzz-address", text)
    assert all(LABEL_KEY_RE.fullmatch(k) and LABEL_VALUE_RE.fullmatch(v)
               for k, v in labels.items())
    assert decode_label(labels, "fuzz-address") == text
    assert decode_value(encode_value(text)) == text


def test_label_codec_keeps_valid_text_and_refuses_garbage() -> None:
    assert encode_value("demo-1") == "demo-1"
    assert encode_value("pool.cpu.node[3]") == "pool_2ecpu_2enode_5b3_5d"
    with pytest.raises(ValueError, match="not an encoded label value"):
        decode_value("bad_zz")
    assert decode_label({"fuzz-address": "bad_zz"}, "fuzz-address") is None


def test_offerings_are_the_priced_machine_types(gcp_api: GcpApi) -> None:
    offerings = {o.name: o for o in plugin.offerings(gcp_api.context()) or []}
    assert set(offerings) == {"e2-standard-2", "n2-standard-4", "t2a-standard-4",
                              "a2-highgpu-1g"}
    gpu = offerings["a2-highgpu-1g"]
    assert (gpu.cores, gpu.memory_bytes, gpu.gpus, gpu.gpu_model) == (
        12, 87040 * 2**20, 1, "nvidia-tesla-a100")
    assert (gpu.price_per_hour, gpu.zone, gpu.region) == (3.67, "us-central1-a", "us-central1")
    assert offerings["t2a-standard-4"].architecture == "aarch64"
    assert offerings["e2-standard-2"].architecture == "x86_64"


def test_a_priced_machine_type_the_zone_lacks_is_a_config_error(gcp_api: GcpApi) -> None:
    ctx = gcp_api.context(prices={"e2-standard-2": 0.07, "n9-huge-999": 9.0})
    with pytest.raises(ConfigError, match="does not have: n9-huge-999"):
        plugin.offerings(ctx)


def test_create_labels_the_instance_and_boots_it_with_the_script(gcp_api: GcpApi) -> None:
    ctx = gcp_api.context()
    node = node_request("tok-create")
    observed = plugin.create_node(ctx, node)
    assert observed is not None
    assert (observed.provider_id, observed.address, observed.client_token, observed.state) == (
        instance_name("tok-create"), "pool.cpu.node[0]", "tok-create", "running")
    assert observed.endpoint == f"{observed.attributes['internal_ip']}:7443"
    instance = gcp_api.fake.instances[observed.provider_id]
    assert instance["labels"] == {"fuzz-cluster": "demo", "fuzz-provider": "gcp",
                                  "fuzz-address": "pool_2ecpu_2enode_5b0_5d",
                                  "fuzz-client-token": "tok-create"}
    assert instance["metadata"]["items"] == [{"key": "startup-script", "value": node.bootstrap}]
    assert "serviceAccounts" not in gcp_api.fake.inserts[0]["body"]
    assert instance["scheduling"]["provisioningModel"] == "STANDARD"


def test_bootstrap_payload_is_the_cloud_init_script_with_the_join_token(gcp_api: GcpApi) -> None:
    node = node_request("tok-boot")
    script = plugin.bootstrap_payload(gcp_api.context(), node, JoinInfo("s3cret-join"))
    assert script is not None and script.startswith("#!/bin/sh")
    assert "s3cret-join" in script and "substrate serve" in script


def test_create_twice_repeats_the_request_id_and_leaves_one_instance(gcp_api: GcpApi) -> None:
    ctx = gcp_api.context()
    first = plugin.create_node(ctx, node_request("tok-twice"))
    second = plugin.create_node(ctx, node_request("tok-twice"))
    assert first is not None and second is not None
    assert first.provider_id == second.provider_id
    assert len(gcp_api.fake.instances) == 1
    ids = [r.query["requestId"] for r in gcp_api.server.requests_to("POST", INSTANCES)]
    assert ids == [str(uuid.uuid5(REQUEST_NAMESPACE, "tok-twice"))] * 2


def test_create_after_the_request_id_expired_adopts_the_instance(gcp_api: GcpApi) -> None:
    ctx = gcp_api.context()
    created = plugin.create_node(ctx, node_request("tok-adopt"))
    gcp_api.fake.request_ids.clear()  # Compute Engine forgets request ids after a while
    adopted = plugin.create_node(ctx, node_request("tok-adopt"))
    assert adopted is not None and created is not None
    assert adopted.provider_id == created.provider_id
    assert len(gcp_api.fake.instances) == 1


def test_an_instance_of_another_token_under_the_name_is_not_adopted(gcp_api: GcpApi) -> None:
    ctx = gcp_api.context()
    created = plugin.create_node(ctx, node_request("tok-mine"))
    assert created is not None
    gcp_api.fake.request_ids.clear()
    gcp_api.fake.instances[created.provider_id]["labels"]["fuzz-client-token"] = "someone-else"
    with pytest.raises(ProviderError, match="belongs to another client token"):
        plugin.create_node(ctx, node_request("tok-mine"))


@pytest.mark.parametrize(("block_spot", "attributes", "spot"), [
    (True, {}, True), (False, {"spot": True}, True), (True, {"spot": False}, False)])
def test_spot_when_asked(gcp_api: GcpApi, block_spot: bool, attributes: dict[str, bool],
                         spot: bool) -> None:
    observed = plugin.create_node(gcp_api.context(spot=block_spot),
                                  node_request("tok-spot", **attributes))
    assert observed is not None and observed.attributes["spot"] is spot
    scheduling = gcp_api.fake.inserts[0]["body"].get("scheduling", {})
    if spot:
        assert scheduling == {"provisioningModel": "SPOT", "instanceTerminationAction": "DELETE",
                              "onHostMaintenance": "TERMINATE", "automaticRestart": False}
    else:
        assert "provisioningModel" not in scheduling


def test_gpu_machines_are_not_live_migrated(gcp_api: GcpApi) -> None:
    plugin.create_node(gcp_api.context(), node_request("tok-gpu", offering="a2-highgpu-1g"))
    assert gcp_api.fake.inserts[0]["body"]["scheduling"] == {"onHostMaintenance": "TERMINATE"}


def test_read_lists_only_this_cluster_and_provider_block(gcp_api: GcpApi) -> None:
    mine = gcp_api.context()
    plugin.create_node(mine, node_request("tok-a", "pool.cpu.node[0]"))
    plugin.create_node(mine, node_request("tok-b", "pool.cpu.node[Rack_1.n2]"))
    plugin.create_node(gcp_api.context(cluster="other"),
                       node_request("tok-c", cluster="other"))
    plugin.create_node(gcp_api.context(name="gcp-spot"), node_request("tok-d"))
    nodes = plugin.read_nodes(mine) or []
    assert sorted((n.client_token, n.address) for n in nodes) == [
        ("tok-a", "pool.cpu.node[0]"), ("tok-b", "pool.cpu.node[Rack_1.n2]")]


def test_delete_removes_the_instance_and_is_idempotent(gcp_api: GcpApi) -> None:
    ctx = gcp_api.context()
    observed = plugin.create_node(ctx, node_request("tok-del"))
    assert observed is not None
    assert plugin.delete_node(ctx, observed) is True
    _wait_gone(gcp_api, ctx, "tok-del")
    assert plugin.delete_node(ctx, observed) is True
    assert gcp_api.fake.instances == {}


def test_quota_is_a_quota_error(gcp_api: GcpApi) -> None:
    gcp_api.fake.cpu_quota = 4
    plugin.create_node(gcp_api.context(), node_request("tok-q1", offering="n2-standard-4"))
    with pytest.raises(QuotaExceededError, match=r"Quota 'CPUS' exceeded.*raise the quota"):
        plugin.create_node(gcp_api.context(), node_request("tok-q2"))


def test_an_exhausted_zone_is_a_capacity_error(gcp_api: GcpApi) -> None:
    gcp_api.fake.zone_exhausted = True
    with pytest.raises(CapacityUnavailableError, match="ZONE_RESOURCE_POOL_EXHAUSTED"):
        plugin.create_node(gcp_api.context(), node_request("tok-full"))
    assert gcp_api.fake.instances == {}


def test_bad_credentials_are_an_authentication_error(gcp_api: GcpApi) -> None:
    gcp_api.fake.token = "the-only-valid-token"
    with pytest.raises(AuthenticationError, match="credentials missing or refused"):
        plugin.read_nodes(gcp_api.context())


def test_a_missing_network_is_a_not_found_error(gcp_api: GcpApi) -> None:
    ctx = gcp_api.context(network="global/networks/nope")
    with pytest.raises(NodeNotFoundError, match="networks/nope' was not found"):
        plugin.create_node(ctx, node_request("tok-net"))


def test_an_endpoint_that_is_not_compute_engine_is_reported(gcp_api: GcpApi) -> None:
    ctx = gcp_api.context(endpoint=gcp_api.server.url + "/elsewhere")
    with pytest.raises(ProviderError, match="does not serve this Compute API path"):
        plugin.delete_node(ctx, NodeObservation("fuzz-x", "", "", "running"))


def test_an_unpriced_offering_is_a_config_error(gcp_api: GcpApi) -> None:
    with pytest.raises(ConfigError, match="offering n1-standard-1 has no price"):
        plugin.create_node(gcp_api.context(), node_request("tok-x", offering="n1-standard-1"))
    with pytest.raises(ConfigError, match="names no offering"):
        plugin.create_node(gcp_api.context(), node_request("tok-y", offering=None))


def test_invalid_provider_config_is_one_config_error(gcp_api: GcpApi) -> None:
    ctx = gcp_api.context()
    raw = type(ctx)(ctx.kind, ctx.name, ctx.cluster, {"project": "p", "zon": "z"}, ctx.base_dir)
    with pytest.raises(ConfigError, match=r"gcp provider 'gcp': zone: Field required.*zon:"):
        plugin.read_nodes(raw)


# --- the fake refuses what Compute Engine refuses ------------------------------------------


def _client(api: GcpApi) -> compute_v1.InstancesClient:
    return compute_v1.InstancesClient(transport="rest", credentials=AnonymousCredentials(),
                                      client_options={"api_endpoint": api.server.url})


def _instance(**overrides: object) -> compute_v1.Instance:
    fields: dict[str, object] = {
        "name": "vm-1", "machine_type": "zones/us-central1-a/machineTypes/e2-standard-2",
        "disks": [compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.
                  AttachedDiskInitializeParams(source_image="projects/debian-cloud/global/"
                                                            "images/family/debian-12"))],
        "network_interfaces": [compute_v1.NetworkInterface(network="global/networks/default")],
    }
    fields.update(overrides)
    return compute_v1.Instance(**{k: v for k, v in fields.items() if v is not None})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"name": None}, "Required field 'resource.name'"),
    ({"name": "Bad_Name"}, "resource.name"),
    ({"machine_type": None}, "Required field 'resource.machineType'"),
    ({"machine_type": "zones/us-central1-a/machineTypes/n9-x"}, "does not exist in zone"),
    ({"disks": None}, "No boot disk"),
    ({"network_interfaces": None}, "network interface is required"),
    ({"labels": {"fuzz:cluster": "x"}}, "Label key 'fuzz:cluster' violates"),
    ({"labels": {"k": "Pool.X"}}, "Label value 'Pool.X' violates"),
    ({"scheduling": compute_v1.Scheduling(provisioning_model="SPOT")}, "Spot VMs require"),
])
def test_the_fake_rejects_invalid_inserts(gcp_api: GcpApi, overrides: dict[str, object],
                                          message: str) -> None:
    with pytest.raises(api_exceptions.BadRequest, match=message):
        _client(gcp_api).insert_unary(project="fuzz-test", zone="us-central1-a",
                                      instance_resource=_instance(**overrides))
    assert gcp_api.fake.instances == {}


def test_the_fake_rejects_bad_request_ids_names_and_scopes(gcp_api: GcpApi) -> None:
    client = _client(gcp_api)
    with pytest.raises(api_exceptions.BadRequest, match="request ID must be a valid UUID"):
        client.insert_unary(request=compute_v1.InsertInstanceRequest(
            project="fuzz-test", zone="us-central1-a", instance_resource=_instance(),
            request_id="not-a-uuid"))
    with pytest.raises(api_exceptions.NotFound, match="projects/other' was not found"):
        client.get(project="other", zone="us-central1-a", instance="vm-1")
    with pytest.raises(api_exceptions.BadRequest, match="Invalid list filter"):
        client.list(request=compute_v1.ListInstancesRequest(
            project="fuzz-test", zone="us-central1-a", filter="labels.x=y OR 1"))
    client.insert_unary(project="fuzz-test", zone="us-central1-a", instance_resource=_instance())
    with pytest.raises(api_exceptions.Conflict, match="already exists"):
        client.insert_unary(project="fuzz-test", zone="us-central1-a",
                            instance_resource=_instance())


def test_tags_that_need_more_than_64_labels_are_a_config_error(gcp_api: GcpApi) -> None:
    node = node_request("tok-long", address="pool.cpu.node[" + "N" * 1500 + "]")
    with pytest.raises(ConfigError, match="more than Compute Engine's 64"):
        plugin.create_node(gcp_api.context(), node)
    assert gcp_api.fake.instances == {}
