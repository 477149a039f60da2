"""The azure provider's node operations: Azure virtual machines as fuzz nodes.

A node is a VM, its NIC (in the configured subnet) and its OS disk, all named
after the client token (see :mod:`fuzz_azure.resources`), so a repeated create
finds the VM an earlier try made instead of making a second one. Creating is two
long-running operations (NIC, then VM with the bootstrap script as
``custom_data``); a create that fails removes what it made, then raises the typed
error. Deleting removes the VM, then its NIC and OS disk (each gone already when
the VM took them along).
"""

from __future__ import annotations

from functools import partial
from typing import TypeVar

from azure.core.exceptions import HttpResponseError
from azure.core.polling import LROPoller
from azure.mgmt.compute import models as cm

from fuzz.plugin.kit import priced_offering, validated_config
from fuzz.plugin.provider import (
    TAG_CLIENT_TOKEN,
    NodeObservation,
    NodeRequest,
    Offering,
    ProviderContext,
    ProviderError,
)
from fuzz_azure.clients import Azure, clients
from fuzz_azure.config import AzureConfig
from fuzz_azure.errors import OperationTimeoutError, is_gone, translated
from fuzz_azure.offerings import list_offerings
from fuzz_azure.resources import (
    STATES,
    belongs_to,
    disk_name,
    nic_id_of,
    nic_name,
    nic_resource,
    node_tags,
    observation,
    private_ip,
    vm_name,
    vm_resource,
)

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

