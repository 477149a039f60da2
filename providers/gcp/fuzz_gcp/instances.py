"""Instances as fuzz sees them: the insert body for a node, and a node observed from one."""

from __future__ import annotations

import hashlib
import uuid

from google.cloud import compute_v1

from fuzz.plugin.provider import NodeObservation, NodeRequest, NodeState
from fuzz_gcp.config import GcpConfig
from fuzz_gcp.labels import (
    LABEL_ADDRESS,
    LABEL_CLIENT_TOKEN,
    LABEL_CLUSTER,
    LABEL_PROVIDER,
    decode_label,
    encode_label,
    node_labels,
)

REQUEST_NAMESPACE = uuid.UUID("5d0c6f8e-2a57-4f43-9c0e-7d3f2b4f8a11")
"""The namespace of the insert request ids derived from client tokens (uuid5)."""
STATES: dict[str, NodeState] = {
    "PROVISIONING": "pending",
    "STAGING": "pending",
    "RUNNING": "running",
    "STOPPING": "stopping",
    "SUSPENDING": "stopping",
    "REPAIRING": "stopping",
    "PENDING_STOP": "stopping",
    "STOPPED": "gone",
    "SUSPENDED": "gone",
    "TERMINATED": "gone",
}


def instance_name(client_token: str) -> str:
    """The instance name for a client token: ``fuzz-`` and 32 hex digits of its SHA-256."""
    return "fuzz-" + hashlib.sha256(client_token.encode()).hexdigest()[:32]


def request_id(client_token: str) -> str:
    """The insert's ``requestId``: a UUID derived from the client token, so retries repeat it."""
    return str(uuid.uuid5(REQUEST_NAMESPACE, client_token))


def wants_spot(config: GcpConfig, node: NodeRequest) -> bool:
    """Whether ``node`` is a Spot VM: its ``spot`` attribute, else the provider block's."""
    return bool(node.attributes.get("spot", config.spot))


def scheduling(spot: bool, has_gpus: bool) -> compute_v1.Scheduling | None:
    """Spot VMs (deleted when preempted) and GPU machines (no live migration) need scheduling."""
    if spot:
        return compute_v1.Scheduling(
            provisioning_model="SPOT",
            instance_termination_action="DELETE",
            on_host_maintenance="TERMINATE",
            automatic_restart=False,
        )
    if has_gpus:
        return compute_v1.Scheduling(on_host_maintenance="TERMINATE")
    return None


def instance_resource(
    config: GcpConfig, provider: str, node: NodeRequest, machine: compute_v1.MachineType
) -> compute_v1.Instance:
    """The Instance to insert for ``node``: tags as labels, bootstrap in metadata, no SA."""
    nic = compute_v1.NetworkInterface(network=config.network)
    if config.subnetwork:
        nic.subnetwork = config.subnetwork
    instance = compute_v1.Instance(
        name=instance_name(node.client_token),
        machine_type=f"zones/{config.zone}/machineTypes/{machine.name}",
        labels=node_labels(node.tags, provider),
        metadata=compute_v1.Metadata(
            items=[compute_v1.Items(key=config.metadata_key, value=node.bootstrap)]
        ),
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image=config.image, disk_size_gb=config.disk_size_gb
                ),
            )
        ],
        network_interfaces=[nic],
    )
    rules = scheduling(wants_spot(config, node), bool(machine.accelerators))
    if rules is not None:
        instance.scheduling = rules
    return instance


def belongs_to(instance: compute_v1.Instance, cluster: str, provider: str) -> bool:
    """Whether the instance carries this cluster's and provider block's labels."""
    labels = instance.labels
    return (decode_label(labels, LABEL_CLUSTER) == cluster
            and decode_label(labels, LABEL_PROVIDER) == provider)


def scope_labels(cluster: str, provider: str) -> dict[str, str]:
    """The labels every node of this cluster and provider block carries (to filter lists)."""
    return {**encode_label(LABEL_CLUSTER, cluster), **encode_label(LABEL_PROVIDER, provider)}


def observation(instance: compute_v1.Instance, agent_port: int) -> NodeObservation:
    """The node an instance is, read back from its labels, status and network interface."""
    state = STATES.get(instance.status, "pending")
    address = instance.network_interfaces[0].network_i_p if instance.network_interfaces else ""
    return NodeObservation(
        provider_id=instance.name,
        address=decode_label(instance.labels, LABEL_ADDRESS) or "",
        client_token=decode_label(instance.labels, LABEL_CLIENT_TOKEN) or "",
        state=state,
        endpoint=f"{address}:{agent_port}" if state == "running" and address else None,
        attributes={
            "instance_id": str(instance.id),
            "zone": instance.zone.rsplit("/", 1)[-1],
            "machine_type": instance.machine_type.rsplit("/", 1)[-1],
            "internal_ip": address,
            "spot": instance.scheduling.provisioning_model == "SPOT",
        },
    )
