"""The azure provider through the real azure-mgmt clients and a fake Resource Manager (HTTPS)."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient
from fuzz_azure import plugin
from fuzz_azure.credential import FileTokenCredential
from fuzz_azure.nodes import disk_name, nic_name, vm_name

from fuzz.errors import ConfigError
from fuzz.plugin.provider import (
    AuthenticationError,
    CapacityUnavailableError,
    JoinInfo,
    NodeNotFoundError,
    ProviderError,
    QuotaExceededError,
)
from tests.support.fakes.fixtures import AzureApi, node_request

D2 = "Standard_D2s_v5"


def _create(api: AzureApi, token: str, **kwargs: Any) -> Any:
    ctx_config = kwargs.pop("config", {})
    observed = plugin.create_node(api.context(**ctx_config),
                                  node_request(token, offering=kwargs.pop("offering", D2),
                                               **kwargs))
    assert observed is not None
    return observed


def _vm(api: AzureApi, token: str) -> dict[str, Any]:
    return api.fake.vms[f"fuzz-rg/{vm_name(token)}"]


def _puts(api: AzureApi, kind: str) -> int:
    return len(list(api.server.requests_to("PUT", rf".*/{kind}/[^/]+")))


def test_offerings_are_the_priced_vm_sizes(azure_api: AzureApi) -> None:
    offerings = {o.name: o for o in plugin.offerings(azure_api.context()) or []}
    assert set(offerings) == {D2, "Standard_D4s_v5", "Standard_D4ps_v5", "Standard_NC6s_v3"}
    gpu = offerings["Standard_NC6s_v3"]
    assert (gpu.cores, gpu.memory_bytes, gpu.gpus, gpu.price_per_hour, gpu.region) == (
        6, 112 * 2**30, 1, 3.06, "westeurope")
    assert offerings["Standard_D4ps_v5"].architecture == "aarch64"
    assert offerings[D2].architecture == "x86_64"


def test_a_priced_size_the_subscription_cannot_use_is_a_config_error(
        azure_api: AzureApi) -> None:
    ctx = azure_api.context(prices={D2: 0.1, "Standard_M416ms_v2": 50.0, "Standard_X": 1.0})
    with pytest.raises(ConfigError, match="not offer to this subscription: Standard_M416ms_v2, "
                                          "Standard_X"):
        plugin.offerings(ctx)


def test_create_makes_a_tagged_vm_booting_the_script_with_no_way_to_log_in(
        azure_api: AzureApi) -> None:
    observed = _create(azure_api, "tok-create")
    name = vm_name("tok-create")
    assert (observed.provider_id, observed.address, observed.client_token, observed.state) == (
        name, "pool.cpu.node[0]", "tok-create", "running")
    assert observed.endpoint == f"{observed.attributes['private_ip']}:7443"
    vm = _vm(azure_api, "tok-create")
    assert vm["tags"] == {"fuzz:cluster": "demo", "fuzz:address": "pool.cpu.node[0]",
                          "fuzz:client-token": "tok-create", "fuzz:provider": "azure"}
    profile = vm["properties"]["osProfile"]
    assert base64.b64decode(profile["customData"]).decode() == node_request("x").bootstrap
    assert "adminPassword" not in profile
    assert profile["linuxConfiguration"]["disablePasswordAuthentication"] is True
    nic = azure_api.fake.nics[f"fuzz-rg/{nic_name(name)}"]
    subnet = nic["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"]
    assert subnet == azure_api.fake.subnet_id("fuzz-vnet", "nodes")
    assert nic["tags"] == vm["tags"]
    assert vm["properties"]["storageProfile"]["osDisk"]["name"] == disk_name(name)
    assert "priority" not in vm["properties"]


def test_bootstrap_payload_is_the_cloud_init_script_with_the_join_token(
        azure_api: AzureApi) -> None:
    script = plugin.bootstrap_payload(azure_api.context(), node_request("t"), JoinInfo("j0in"))
    assert script is not None and script.startswith("#!/bin/sh") and "j0in" in script


def test_create_twice_finds_the_first_vm_even_with_a_new_join_token(
        azure_api: AzureApi) -> None:
    first = _create(azure_api, "tok-twice")
    retry = replace(node_request("tok-twice", offering=D2), bootstrap="#!/bin/sh\necho new\n")
    second = plugin.create_node(azure_api.context(), retry)
    assert second is not None and second.provider_id == first.provider_id
    assert len(azure_api.fake.vms) == 1
    assert (_puts(azure_api, "virtualMachines"), _puts(azure_api, "networkInterfaces")) == (1, 1)


def test_a_vm_of_another_token_under_the_name_is_not_adopted(azure_api: AzureApi) -> None:
    _create(azure_api, "tok-mine")
    _vm(azure_api, "tok-mine")["tags"]["fuzz:client-token"] = "someone-else"
    with pytest.raises(ProviderError, match="belongs to another client token"):
        _create(azure_api, "tok-mine")


def test_a_failed_vm_from_an_earlier_try_is_replaced(azure_api: AzureApi) -> None:
    _create(azure_api, "tok-retry")
    _vm(azure_api, "tok-retry")["properties"]["provisioningState"] = "Failed"
    assert _create(azure_api, "tok-retry").state == "running"
    assert _puts(azure_api, "virtualMachines") == 2
    assert len(azure_api.fake.vms) == 1


@pytest.mark.parametrize(("block_spot", "attributes", "spot"), [
    (True, {}, True), (False, {"spot": True}, True), (True, {"spot": False}, False)])
def test_spot_when_asked(azure_api: AzureApi, block_spot: bool, attributes: dict[str, bool],
                         spot: bool) -> None:
    observed = _create(azure_api, "tok-spot", config={"spot": block_spot}, **attributes)
    assert observed.attributes["spot"] is spot
    properties = _vm(azure_api, "tok-spot")["properties"]
    if spot:
        assert (properties["priority"], properties["evictionPolicy"],
                properties["billingProfile"]) == ("Spot", "Delete", {"maxPrice": -1})
    else:
        assert "priority" not in properties


def test_read_lists_only_this_cluster_and_provider_block(azure_api: AzureApi) -> None:
    _create(azure_api, "tok-a")
    _create(azure_api, "tok-b", address="pool.cpu.node[Rack_1/n2]")
    plugin.create_node(azure_api.context(cluster="other"),
                       node_request("tok-c", offering=D2, cluster="other"))
    plugin.create_node(azure_api.context(name="azure-spot"), node_request("tok-d", offering=D2))
    nodes = plugin.read_nodes(azure_api.context()) or []
    assert sorted((n.client_token, n.address, n.state) for n in nodes) == [
        ("tok-a", "pool.cpu.node[0]", "running"),
        ("tok-b", "pool.cpu.node[Rack_1/n2]", "running")]
    assert all(n.endpoint and n.endpoint.startswith("10.0.0.") for n in nodes)


def test_delete_removes_vm_nic_and_disk_and_is_idempotent(azure_api: AzureApi) -> None:
    ctx = azure_api.context()
    observed = _create(azure_api, "tok-del")
    assert plugin.delete_node(ctx, observed) is True
    assert (azure_api.fake.vms, azure_api.fake.nics, azure_api.fake.disks) == ({}, {}, {})
    assert plugin.read_nodes(ctx) == []
    assert plugin.delete_node(ctx, observed) is True


def test_quota_is_a_quota_error_and_the_nic_is_removed(azure_api: AzureApi) -> None:
    azure_api.fake.core_quota = 3
    _create(azure_api, "tok-q1")
    with pytest.raises(QuotaExceededError, match=r"OperationNotAllowed: .*Cores quota.*raise"):
        _create(azure_api, "tok-q2")
    assert len(azure_api.fake.vms) == len(azure_api.fake.nics) == 1


def test_an_unavailable_size_is_a_capacity_error(azure_api: AzureApi) -> None:
    with pytest.raises(CapacityUnavailableError, match="SkuNotAvailable"):
        _create(azure_api, "tok-sku", offering="Standard_M416ms_v2",
                config={"prices": {"Standard_M416ms_v2": 50.0}})
    assert azure_api.fake.nics == {}


def test_a_failed_allocation_is_a_capacity_error_and_leaves_nothing(azure_api: AzureApi) -> None:
    azure_api.fake.allocation_fails = True
    with pytest.raises(CapacityUnavailableError, match="AllocationFailed: Allocation failed"):
        _create(azure_api, "tok-alloc")
    assert (azure_api.fake.vms, azure_api.fake.nics, azure_api.fake.disks) == ({}, {}, {})


def test_a_refused_token_is_an_authentication_error(azure_api: AzureApi) -> None:
    azure_api.fake.token = "rotated"
    with pytest.raises(AuthenticationError, match="InvalidAuthenticationToken: The access "
                                                  "token is invalid"):
        plugin.read_nodes(azure_api.context())


def test_an_unreadable_token_file_is_an_authentication_error(azure_api: AzureApi,
                                                             tmp_path: Path) -> None:
    ctx = azure_api.context(access_token_file=str(tmp_path / "missing"))
    with pytest.raises(AuthenticationError, match="no usable credential: cannot read"):
        plugin.read_nodes(ctx)


def test_a_missing_resource_group_is_a_not_found_error(azure_api: AzureApi) -> None:
    azure_api.fake.groups.clear()
    with pytest.raises(NodeNotFoundError, match="ResourceGroupNotFound"):
        _create(azure_api, "tok-rg")


def test_an_unknown_subnet_is_reported(azure_api: AzureApi) -> None:
    subnet = azure_api.fake.subnet_id("fuzz-vnet", "elsewhere")
    with pytest.raises(ProviderError, match=r"InvalidResourceReference: Resource .*/elsewhere"):
        _create(azure_api, "tok-net", config={"subnet_id": subnet})


def test_invalid_provider_config_is_one_config_error(azure_api: AzureApi) -> None:
    ctx = azure_api.context(image="debian-12", subnet_id="not-an-id")
    with pytest.raises(ConfigError, match=r"azure provider 'azure': subnet_id: .*image: "):
        plugin.read_nodes(ctx)


# --- the fake refuses what Resource Manager refuses -----------------------------------------


def _compute(api: AzureApi, **kwargs: Any) -> ComputeManagementClient:
    return ComputeManagementClient(FileTokenCredential(api.token_file),
                                   kwargs.pop("subscription", api.fake.subscription),
                                   base_url=api.server.url, connection_verify=str(api.ca_bundle),
                                   polling_interval=0.02, **kwargs)


def _vm_body(api: AzureApi, nic_id: str, **os_profile: Any) -> dict[str, Any]:
    profile = {"computerName": "vm", "adminUsername": "fuzz", "adminPassword": "x-Secret-1",
               **os_profile}
    return {"location": "westeurope", "properties": {
        "hardwareProfile": {"vmSize": D2},
        "storageProfile": {"imageReference": {"publisher": "Debian", "offer": "debian-12",
                                              "sku": "12-gen2", "version": "latest"}},
        "osProfile": {k: v for k, v in profile.items() if v is not None},
        "networkProfile": {"networkInterfaces": [{"id": nic_id}]}}}


@pytest.mark.parametrize(("os_profile", "message"), [
    ({"adminUsername": "admin"}, "Admin Username specified is not allowed"),
    ({"customData": "not base64!"}, "must be in Base64"),
    ({"adminPassword": None, "linuxConfiguration": {"disablePasswordAuthentication": True}},
     "either SSH or by user name and password"),
    ({"computerName": None}, "Required parameter 'computerName'"),
])
def test_the_fake_rejects_invalid_vms(azure_api: AzureApi, os_profile: dict[str, Any],
                                      message: str) -> None:
    nic = _create(azure_api, "tok-nic")
    nic_id = _vm(azure_api, "tok-nic")["properties"]["networkProfile"]["networkInterfaces"][0]
    assert nic.state == "running"
    with pytest.raises(HttpResponseError, match=message):
        _compute(azure_api).virtual_machines.begin_create_or_update(
            "fuzz-rg", "vm", _vm_body(azure_api, nic_id["id"], **os_profile)).result()
    assert len(azure_api.fake.vms) == 1


def test_the_fake_rejects_unknown_api_versions_subscriptions_and_attached_nics(
        azure_api: AzureApi) -> None:
    with pytest.raises(HttpResponseError, match="NoRegisteredProviderFound"):
        list(_compute(azure_api).virtual_machines.list("fuzz-rg", api_version="2099-01-01"))
    with pytest.raises(ResourceNotFoundError, match="SubscriptionNotFound"):
        list(_compute(azure_api, subscription="other").virtual_machines.list("fuzz-rg"))
    _create(azure_api, "tok-attached")
    network = NetworkManagementClient(FileTokenCredential(azure_api.token_file),
                                      azure_api.fake.subscription, base_url=azure_api.server.url,
                                      connection_verify=str(azure_api.ca_bundle))
    with pytest.raises(HttpResponseError, match="NicInUse"):
        network.network_interfaces.begin_delete("fuzz-rg", nic_name(vm_name("tok-attached")))
    nics = _vm(azure_api, "tok-attached")["properties"]["networkProfile"]["networkInterfaces"]
    body = _vm_body(azure_api, nics[0]["id"], customData=base64.b64encode(b"other").decode())
    with pytest.raises(HttpResponseError, match="Changing property 'customData'"):
        _compute(azure_api).virtual_machines.begin_create_or_update(
            "fuzz-rg", vm_name("tok-attached"), body)


def test_tag_values_over_256_characters_are_a_config_error(azure_api: AzureApi) -> None:
    with pytest.raises(ConfigError, match="longer than 256 characters: fuzz:address"):
        _create(azure_api, "tok-long", address="pool.cpu.node[" + "n" * 250 + "]")
    assert azure_api.fake.nics == {}
