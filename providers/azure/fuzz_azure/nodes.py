"""The azure provider's node operations: Azure virtual machines as fuzz nodes.

A node is a VM, its NIC (in the configured subnet) and its OS disk, all named
after the client token: the VM ``fuzz-<hash>`` (32 hex digits of the token's
SHA-256), its NIC ``<vm>-nic``, its OS disk ``<vm>-osdisk``; so a repeated create
finds the VM an earlier try made instead of making a second one. fuzz's tags go on
the VM and the NIC verbatim (``fuzz:cluster``, ``fuzz:address``,
``fuzz:client-token``, plus ``fuzz:provider`` for the provider block): Azure tag
names may hold ``:`` and values any character, up to 256. Creating is two
long-running operations (NIC, then VM with the bootstrap script as
``custom_data``); a create that fails removes what it made, then raises the typed
error. Deleting removes the VM, then its NIC and OS disk (each gone already when
the VM took them along).

The resource bodies and the observation of a VM come first, the operations after.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from functools import partial
from typing import TypeVar

from azure.core.exceptions import HttpResponseError
from azure.core.polling import LROPoller
from azure.mgmt.compute import models as cm
from azure.mgmt.network import models as nm

from fuzz.errors import ConfigError
from fuzz.plugin.kit import priced_offering, validated_config
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
from fuzz_azure.client import Azure, clients
from fuzz_azure.config import AzureConfig
from fuzz_azure.errors import OperationTimeoutError, is_gone, translated
from fuzz_azure.offerings import list_offerings
from fuzz_azure.sshkey import unusable_public_key

TAG_PROVIDER = "fuzz:provider"
MAX_TAG_VALUE = 256
STATES: dict[str, NodeState] = {
    "creating": "pending",
    "updating": "pending",
    "migrating": "pending",
    "succeeded": "running",
    "deleting": "stopping",
    "failed": "gone",
    "canceled": "gone",
}


def vm_name(client_token: str) -> str:
    """The VM's name for a client token."""
    return "fuzz-" + hashlib.sha256(client_token.encode()).hexdigest()[:32]


def nic_name(vm: str) -> str:
    """The name of the VM's network interface."""
    return f"{vm}-nic"


def disk_name(vm: str) -> str:
    """The name of the VM's OS disk."""
    return f"{vm}-osdisk"


def node_tags(tags: Mapping[str, str], provider: str) -> dict[str, str]:
    """The tags of a node's resources: its fuzz tags and the provider block's name."""
    result = {**{key: tags[key] for key in (TAG_CLUSTER, TAG_ADDRESS, TAG_CLIENT_TOKEN)},
              TAG_PROVIDER: provider}
    too_long = sorted(k for k, v in result.items() if len(v) > MAX_TAG_VALUE)
    if too_long:
        raise ConfigError(f"azure: tag values longer than {MAX_TAG_VALUE} characters: "
                          f"{', '.join(too_long)}; use shorter pool, node or provider names")
    return result


def nic_resource(config: AzureConfig, tags: Mapping[str, str]) -> nm.NetworkInterface:
    """A NIC with one dynamic private address in the configured subnet."""
    return nm.NetworkInterface(
        location=config.location,
        tags=dict(tags),
        properties=nm.NetworkInterfacePropertiesFormat(ip_configurations=[
            nm.NetworkInterfaceIPConfiguration(
                name="ipconfig1",
                properties=nm.NetworkInterfaceIPConfigurationPropertiesFormat(
                    subnet=nm.Subnet(id=config.subnet_id),
                    private_ip_allocation_method="Dynamic",
                    primary=True,
                ),
            )
        ]),
    )


def image_reference(image: str) -> cm.ImageReference:
    """A marketplace URN (publisher:offer:sku:version) or an image id as an ImageReference."""
    if image.startswith("/"):
        return cm.ImageReference(id=image)
    publisher, offer, sku, version = image.split(":")
    return cm.ImageReference(publisher=publisher, offer=offer, sku=sku, version=version)


def vm_resource(config: AzureConfig, name: str, size: str, nic_id: str, bootstrap: str,
                tags: Mapping[str, str], spot: bool) -> cm.VirtualMachine:
    """The VM: the bootstrap as custom data, no password, an unusable SSH key, spot if asked.

    The NIC and the OS disk are deleted with the VM.
    """
    properties = cm.VirtualMachineProperties(
        hardware_profile=cm.HardwareProfile(vm_size=size),
        storage_profile=cm.StorageProfile(
            image_reference=image_reference(config.image),
            os_disk=cm.OSDisk(name=disk_name(name), create_option="FromImage",
                              delete_option="Delete", disk_size_gb=config.os_disk_size_gb),
        ),
        os_profile=cm.OSProfile(
            computer_name=name,
            admin_username=config.admin_username,
            custom_data=base64.b64encode(bootstrap.encode()).decode(),
            linux_configuration=cm.LinuxConfiguration(
                disable_password_authentication=True,
                ssh=cm.SshConfiguration(public_keys=[cm.SshPublicKey(
                    path=f"/home/{config.admin_username}/.ssh/authorized_keys",
                    key_data=unusable_public_key(),
                )]),
            ),
        ),
        network_profile=cm.NetworkProfile(network_interfaces=[cm.NetworkInterfaceReference(
            id=nic_id,
            properties=cm.NetworkInterfaceReferenceProperties(primary=True,
                                                              delete_option="Delete"),
        )]),
    )
    if spot:
        properties.priority = "Spot"
        properties.eviction_policy = "Delete"
        properties.billing_profile = cm.BillingProfile(max_price=config.spot_max_price)
    return cm.VirtualMachine(location=config.location, tags=dict(tags), properties=properties)


def belongs_to(vm: cm.VirtualMachine, cluster: str, provider: str) -> bool:
    """Whether the VM carries this cluster's and provider block's tags."""
    tags = vm.tags or {}
    return tags.get(TAG_CLUSTER) == cluster and tags.get(TAG_PROVIDER) == provider


def private_ip(nic: nm.NetworkInterface | None) -> str:
    """The NIC's first private address ('' while it has none)."""
    configs = (nic.properties.ip_configurations or []) if nic and nic.properties else []
    first = configs[0].properties if configs else None
    return (first.private_ip_address or "") if first else ""


def observation(vm: cm.VirtualMachine, address: str, agent_port: int) -> NodeObservation:
    """The node a VM is, from its tags, provisioning state and its NIC's address."""
    properties = vm.properties or cm.VirtualMachineProperties()
    state = STATES.get((properties.provisioning_state or "creating").lower(), "pending")
    tags = vm.tags or {}
    return NodeObservation(
        provider_id=vm.name or "",
        address=tags.get(TAG_ADDRESS, ""),
        client_token=tags.get(TAG_CLIENT_TOKEN, ""),
        state=state,
        endpoint=f"{address}:{agent_port}" if state == "running" and address else None,
        attributes={
            "vm_id": properties.vm_id or "",
            "location": vm.location,
            "vm_size": properties.hardware_profile.vm_size if properties.hardware_profile else "",
            "private_ip": address,
            "spot": properties.priority == "Spot",
        },
    )


def nic_id_of(vm: cm.VirtualMachine) -> str:
    """The id of the VM's first NIC, lower-cased as ARM ids compare ('' if none)."""
    profile = vm.properties.network_profile if vm.properties else None
    refs = (profile.network_interfaces or []) if profile else []
    return (refs[0].id or "").lower() if refs else ""


T = TypeVar("T")


class AzureNodes:
    """Offerings, create, read and delete through the Azure management clients."""

    def offerings(self, ctx: ProviderContext) -> list[Offering]:
        """The location's VM sizes that the provider block prices."""
        config = validated_config(AzureConfig, ctx)
        return list_offerings(clients(config, ctx), config, ctx.name)

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation:
        """Create the node's NIC and VM, or return the VM an earlier try made."""
        config = validated_config(AzureConfig, ctx)
        size = priced_offering(ctx, node, config.prices)
        azure = clients(config, ctx)
        name = vm_name(node.client_token)
        tags = node_tags(node.tags, ctx.name)
        doing = f"creating {node.address} ({size} in {config.location})"
        existing = _get_vm(azure, config, name, doing)
        if existing is not None:
            if (existing.tags or {}).get(TAG_CLIENT_TOKEN) != node.client_token:
                raise ProviderError(
                    f"azure: {doing}: VM {name} exists but belongs to another client token"
                )
            if STATES.get(_provisioning_state(existing)) != "gone":
                return _observe(azure, config, existing)
            _delete_resources(azure, config, name, doing)  # a failed earlier try: start over
        spot = bool(node.attributes.get("spot", config.spot))
        try:
            with translated(doing):
                nic = _wait(azure.network.network_interfaces.begin_create_or_update(
                    config.resource_group, nic_name(name), nic_resource(config, tags)),
                    config, doing)
                vm = _wait(azure.compute.virtual_machines.begin_create_or_update(
                    config.resource_group, name,
                    vm_resource(config, name, size, nic.id or "", node.bootstrap, tags, spot)),
                    config, doing)
        except OperationTimeoutError:
            raise
        except ProviderError as failure:
            _clean_up_after(azure, config, name, failure)
            raise
        return observation(vm, private_ip(nic), config.bootstrap.port)

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation]:
        """The resource group's VMs tagged with this cluster and provider block."""
        config = validated_config(AzureConfig, ctx)
        azure = clients(config, ctx)
        group = config.resource_group
        with translated(f"listing the nodes of cluster {ctx.cluster} in {group}"):
            vms = [vm for vm in azure.compute.virtual_machines.list(group)
                   if belongs_to(vm, ctx.cluster, ctx.name)]
            addresses = {(nic.id or "").lower(): private_ip(nic)
                         for nic in azure.network.network_interfaces.list(group)} if vms else {}
        return [observation(vm, addresses.get(nic_id_of(vm), ""), config.bootstrap.port)
                for vm in vms]

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool:
        """Delete the VM, then its NIC and OS disk; True once all are gone."""
        config = validated_config(AzureConfig, ctx)
        _delete_resources(clients(config, ctx), config, node.provider_id,
                          f"deleting {node.address or node.provider_id}")
        return True


def _provisioning_state(vm: cm.VirtualMachine) -> str:
    return ((vm.properties.provisioning_state if vm.properties else None) or "").lower()


def _wait(poller: LROPoller[T], config: AzureConfig, doing: str) -> T:
    """The operation's result, or OperationTimeoutError after ``operation_timeout``."""
    result = poller.result(timeout=config.operation_timeout)
    if not poller.done():
        raise OperationTimeoutError(
            f"azure: {doing}: still running after {config.operation_timeout:g}s; "
            f"the next apply picks the node up"
        )
    return result


def _get_vm(azure: Azure, config: AzureConfig, name: str, doing: str) -> cm.VirtualMachine | None:
    with translated(doing):
        try:
            return azure.compute.virtual_machines.get(config.resource_group, name)
        except HttpResponseError as exc:
            if is_gone(exc):
                return None
            raise


def _observe(azure: Azure, config: AzureConfig, vm: cm.VirtualMachine) -> NodeObservation:
    with translated(f"reading the NIC of {vm.name}"):
        try:
            nic = azure.network.network_interfaces.get(config.resource_group,
                                                       nic_name(vm.name or ""))
        except HttpResponseError as exc:
            if not is_gone(exc):
                raise
            nic = None
    return observation(vm, private_ip(nic), config.bootstrap.port)


def _delete_resources(azure: Azure, config: AzureConfig, name: str, doing: str) -> None:
    """Delete the VM, its NIC and its OS disk, in that order (each may be gone already)."""
    group = config.resource_group
    steps = (
        partial(azure.compute.virtual_machines.begin_delete, group, name),
        partial(azure.network.network_interfaces.begin_delete, group, nic_name(name)),
        partial(azure.compute.disks.begin_delete, group, disk_name(name)),
    )
    with translated(doing):
        for begin in steps:
            try:
                _wait(begin(), config, doing)
            except HttpResponseError as exc:
                if not is_gone(exc):
                    raise


def _clean_up_after(azure: Azure, config: AzureConfig, name: str, failure: ProviderError) -> None:
    """Remove what a failed create left; if that fails too, say so in the create's error."""
    try:
        _delete_resources(azure, config, name, f"removing {name} after a failed create")
    except ProviderError as cleanup:
        failure.args = (f"{failure} (removing its partial resources failed too: {cleanup})",)
