"""The gcp provider's node operations: Compute Engine instances as fuzz nodes.

Create is idempotent three ways: the instance's name is derived from the client
token, the insert carries a ``requestId`` derived from it (Compute Engine answers
a repeated request with the first one's operation), and an insert that finds the
name taken (409) adopts the instance once its client-token label matches. The
node's tags travel as labels (see :mod:`fuzz_gcp.labels`), the bootstrap script
as ``startup-script`` (or ``user-data``) metadata. No service account, no SSH keys.
"""

from __future__ import annotations

from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1

from fuzz.plugin.kit import priced_offering, validated_config
from fuzz.plugin.provider import (
    NodeObservation,
    NodeRequest,
    Offering,
    ProviderContext,
    ProviderError,
)
from fuzz_gcp.compute import Compute, clients, wait_done
from fuzz_gcp.config import GcpConfig
from fuzz_gcp.errors import api_error, is_gone, translated
from fuzz_gcp.instances import (
    belongs_to,
    instance_name,
    instance_resource,
    observation,
    request_id,
    scope_labels,
)
from fuzz_gcp.labels import LABEL_CLIENT_TOKEN, decode_label, filter_expression
from fuzz_gcp.offerings import list_offerings


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
        raise api_error(conflict, doing) from None  # something else (its disk?) holds the name
    if decode_label(instance.labels, LABEL_CLIENT_TOKEN) != node.client_token:
        raise ProviderError(
            f"gcp: {doing}: instance {name} exists but belongs to another client token"
        )
    return observation(instance, config.bootstrap.port)
