"""A node's Azure resources: names from the client token, NIC and VM bodies, observations.

Each node is a VM ``fuzz-<hash>`` (32 hex digits of the client token's SHA-256),
its NIC ``<vm>-nic`` and its OS disk ``<vm>-osdisk``; a repeated create therefore
addresses the same resources. fuzz's tags go on the VM and the NIC verbatim
(``fuzz:cluster``, ``fuzz:address``, ``fuzz:client-token``, plus ``fuzz:provider``
for the provider block): Azure tag names may hold ``:`` and values any character,
up to 256.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping

from azure.mgmt.compute import models as cm
from azure.mgmt.network import models as nm

from fuzz.errors import ConfigError
from fuzz.plugin.provider import (
    TAG_ADDRESS,
    TAG_CLIENT_TOKEN,
    TAG_CLUSTER,
    NodeObservation,
    NodeState,
)
from fuzz_azure.config import AzureConfig
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
