"""The gcp provider's node operations: Compute Engine instances as fuzz nodes.

Create is idempotent three ways: the instance's name is derived from the client
token, the insert carries a ``requestId`` derived from it (Compute Engine answers
a repeated request with the first one's operation), and an insert that finds the
name taken (409) adopts the instance once its client-token label matches. The
node's tags travel as labels (see :mod:`fuzz_gcp.labels`), the bootstrap script
as ``startup-script`` (or ``user-data``) metadata. No service account, no SSH keys.
The insert body and the observation of an instance come first, the operations after.
"""

from __future__ import annotations

import hashlib
import uuid

from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1

from fuzz.plugin.kit import priced_offering, validated_config
from fuzz.plugin.provider import (
    NodeObservation,
    NodeRequest,
    NodeState,
    Offering,
    ProviderContext,
    ProviderError,
)
from fuzz_gcp.client import Compute, clients, wait_done
from fuzz_gcp.config import GcpConfig
from fuzz_gcp.errors import api_error, is_gone, translated
from fuzz_gcp.labels import (
    LABEL_ADDRESS,
    LABEL_CLIENT_TOKEN,
    LABEL_CLUSTER,
    LABEL_PROVIDER,
    decode_label,
    encode_label,
    filter_expression,
    node_labels,
)
from fuzz_gcp.offerings import list_offerings

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


class GcpNodes:
    """Offerings, create, read and delete through the Compute Engine REST clients."""

    def offerings(self, ctx: ProviderContext) -> list[Offering]:
        """The zone's machine types that the provider block prices."""
        config = validated_config(GcpConfig, ctx)
        return list_offerings(clients(config), config, ctx.name)

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation:
        """Insert the node's instance (or adopt the one an earlier try made) and wait for it."""
        config = validated_config(GcpConfig, ctx)
        machine_type = priced_offering(ctx, node, config.prices)
        compute = clients(config)
        doing = f"creating {node.address} ({machine_type} in {config.zone})"
        name = instance_name(node.client_token)
        with translated(doing):
            machine = compute.machine_types.get(
                project=config.project, zone=config.zone, machine_type=machine_type
            )
            try:
                operation = compute.instances.insert_unary(
                    request=compute_v1.InsertInstanceRequest(
                        project=config.project,
                        zone=config.zone,
                        instance_resource=instance_resource(config, ctx.name, node, machine),
                        request_id=request_id(node.client_token),
                    )
                )
            except api_exceptions.Conflict as conflict:
                return _adopt(compute, config, node, name, conflict, doing)
        wait_done(compute, config, operation, doing)
        with translated(doing):
            instance = compute.instances.get(
                project=config.project, zone=config.zone, instance=name
            )
        return observation(instance, config.bootstrap.port)

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation]:
        """The zone's instances labelled with this cluster and provider block."""
        config = validated_config(GcpConfig, ctx)
        compute = clients(config)
        request = compute_v1.ListInstancesRequest(
            project=config.project,
            zone=config.zone,
            filter=filter_expression(scope_labels(ctx.cluster, ctx.name)),
        )
        with translated(f"listing the nodes of cluster {ctx.cluster} in {config.zone}"):
            instances = [i for i in compute.instances.list(request=request)
                         if belongs_to(i, ctx.cluster, ctx.name)]
        return [observation(i, config.bootstrap.port) for i in instances]

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool:
        """Delete the instance (its boot disk goes with it); True once deleting or gone."""
        config = validated_config(GcpConfig, ctx)
        compute = clients(config)
        with translated(f"deleting {node.address or node.provider_id}"):
            try:
                compute.instances.delete_unary(
                    project=config.project, zone=config.zone, instance=node.provider_id
                )
            except api_exceptions.NotFound as exc:
                if not is_gone(exc):
                    raise
        return True


def _adopt(
    compute: Compute,
    config: GcpConfig,
    node: NodeRequest,
    name: str,
    conflict: api_exceptions.Conflict,
    doing: str,
) -> NodeObservation:
    """The instance an earlier create made under ``name``, if it is this node's."""
    try:
        instance = compute.instances.get(project=config.project, zone=config.zone, instance=name)
    except api_exceptions.NotFound:
        raise api_error(conflict, doing) from conflict  # something else (its disk?) holds the name
    if decode_label(instance.labels, LABEL_CLIENT_TOKEN) != node.client_token:
        raise ProviderError(
            f"gcp: {doing}: instance {name} exists but belongs to another client token"
        )
    return observation(instance, config.bootstrap.port)
