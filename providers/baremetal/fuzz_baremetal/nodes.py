"""The baremetal provider's node operations: Warewulf machines become fuzz nodes.

create
    picks the machine (a static pool names it; an elastic pool takes a free one of
    the inventory, free meaning Warewulf has no node of that name), adds it as a
    Warewulf node tagged with fuzz's tags (``wwctl node add`` / ``PUT``), sets its
    image, the ``fuzz`` system overlay and the bootstrap tags (``node set --yes`` /
    ``PATCH``), builds its overlays, powers it on and waits until its agent answers.
read
    lists the nodes tagged for this cluster and provider block, with their power
    state; a node is ``running`` once its agent answers, ``pending`` before.
delete
    powers the machine off and deletes its Warewulf node, releasing the machine.

The bootstrap payload is fuzz's cloud-init script (:mod:`fuzz.plugin.cloudinit`). It
travels base64-encoded in the node tag ``fuzz:bootstrap``; the ``fuzz`` overlay
(``fuzz_baremetal/overlay``, installed once into Warewulf) renders it to
``/etc/fuzz/bootstrap.b64`` and its ``fuzz-bootstrap.service`` decodes and runs
it at boot, with ``FUZZ_LISTEN`` from the tag ``fuzz:listen``.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from fuzz.clients.agent import AgentClient
from fuzz.plugin.cloudinit import cloud_init_script
from fuzz.plugin.provider import (
    TAG_ADDRESS,
    TAG_CLIENT_TOKEN,
    TAG_CLUSTER,
    CapacityUnavailableError,
    NodeObservation,
    NodeRequest,
    NodeState,
    Offering,
    ProviderContext,
    ProviderError,
    QuotaExceededError,
)
from fuzz_baremetal.client import NewNode, NodeFields, NodeSetup, PowerState, Warewulf, node_tags
from fuzz_baremetal.config import BaremetalConfig, Machine, config_of, machine_from_attributes
from fuzz_baremetal.errors import NodeExistsError
from fuzz_baremetal.offerings import offering_list
from fuzz_baremetal.rest import RestWarewulf
from fuzz_baremetal.wwctl import WwctlWarewulf

TAG_PROVIDER = "fuzz:provider"
TAG_ENDPOINT = "fuzz:endpoint"
TAG_LISTEN = "fuzz:listen"
TAG_BOOTSTRAP = "fuzz:bootstrap"
HEALTH_TIMEOUT = 2.0
JOIN_POLL = 0.2
HEALTH_WORKERS = 16

_assigning = threading.Lock()  # one machine assignment at a time within this process


def warewulf_for(ctx: ProviderContext, config: BaremetalConfig) -> Warewulf:
    """The back end the block chooses: wwctl subprocesses or the REST API."""
    if config.api == "rest":
        assert config.api_url is not None  # the config validator requires it
        return RestWarewulf(config.api_url, config.api_user, config.password(ctx.base_dir),
                            config.command_timeout)
    return WwctlWarewulf(config.wwctl, config.command_timeout)


def _agent_answers(endpoint: str) -> bool:
    with AgentClient(endpoint, "health-needs-no-token", timeout=HEALTH_TIMEOUT) as client:
        return client.health()


def _ours(ctx: ProviderContext, nodes: Mapping[str, NodeFields]) -> dict[str, dict[str, str]]:
    """Tags of the nodes this provider block holds for ``ctx.cluster``, by node name."""
    found = {}
    for name, fields in nodes.items():
        tags = node_tags(fields)
        if tags.get(TAG_CLUSTER) == ctx.cluster and tags.get(TAG_PROVIDER) == ctx.name:
            found[name] = tags
    return found


def _ipmi_address(fields: NodeFields) -> str:
    ipmi = fields.get("ipmi") or {}
    return str(ipmi.get("ipaddr", "")) if isinstance(ipmi, Mapping) else ""


def _observation(name: str, tags: Mapping[str, str], fields: NodeFields, power: PowerState,
                 joined: bool) -> NodeObservation:
    state: NodeState = "running" if joined else "pending"
    return NodeObservation(
        provider_id=name,
        address=tags.get(TAG_ADDRESS, ""),
        client_token=tags.get(TAG_CLIENT_TOKEN, ""),
        state=state,
        endpoint=tags.get(TAG_ENDPOINT) if joined else None,
        attributes={"machine": name, "power": power, "image": fields.get("image name"),
                    "ipmi_address": _ipmi_address(fields)},
    )


def _running(config: BaremetalConfig, machine: Machine, node: NodeRequest) -> NodeObservation:
    """The observation of ``node`` on ``machine`` once its agent answers."""
    return NodeObservation(
        provider_id=machine.name, address=node.address, client_token=node.client_token,
        state="running", endpoint=config.endpoint_of(machine),
        attributes={"machine": machine.name, "power": "on", "image": config.image_of(machine),
                    "ipmi_address": machine.ipmi_address},
    )


class BaremetalNodes:
    """Offerings, create, read and delete through wwctl or warewulfd's REST API."""

    def offerings(self, ctx: ProviderContext) -> list[Offering]:
        """The machine classes of the provider block."""
        return offering_list(config_of(ctx).offerings)

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation:
        """Assign a machine, make it a Warewulf node booting fuzz, power it on, wait for it."""
        config = config_of(ctx)
        warewulf = warewulf_for(ctx, config)
        with _assigning:
            machine, adopted = self._assign(ctx, config, warewulf, node)
        if adopted and _agent_answers(config.endpoint_of(machine)):
            return _running(config, machine, node)  # created before, and it runs
        try:
            self._boot(config, warewulf, machine, node)
        except ProviderError:
            if not adopted:  # release the machine this call took; a later create starts over
                self._release(warewulf, machine.name)
            raise
        return _running(config, machine, node)

    def _boot(self, config: BaremetalConfig, warewulf: Warewulf, machine: Machine,
              node: NodeRequest) -> None:
        """Give the machine its image and bootstrap, power it on, wait for its agent."""
        payload = node.bootstrap or cloud_init_script(node, node.join, config.bootstrap)
        setup_tags = {TAG_BOOTSTRAP: base64.b64encode(payload.encode()).decode(),
                      TAG_LISTEN: config.listen_of(machine)}
        warewulf.set_node(machine.name, NodeSetup(config.image_of(machine), config.overlay,
                                                  setup_tags))
        warewulf.build_overlays(machine.name)
        warewulf.power(machine.name, "on")  # a no-op for a machine that is on already
        endpoint = config.endpoint_of(machine)
        deadline = time.monotonic() + config.join_timeout
        while not _agent_answers(endpoint):
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"baremetal node {node.address}: machine {machine.name} was powered on but "
                    f"its agent did not answer at {endpoint} within {config.join_timeout:g}s; "
                    f"see its console or journalctl -u fuzz-bootstrap"
                )
            time.sleep(JOIN_POLL)

    @staticmethod
    def _release(warewulf: Warewulf, name: str) -> None:
        """Power the machine off and delete its Warewulf node."""
        warewulf.power(name, "off")
        warewulf.delete_node(name)

    def _assign(self, ctx: ProviderContext, config: BaremetalConfig, warewulf: Warewulf,
                node: NodeRequest) -> tuple[Machine, bool]:
        """The node's machine and whether it was assigned before (tagged with its token)."""
        for _ in range(len(config.machines) + 1):  # another process may take a machine first
            nodes = warewulf.list_nodes()
            ours = _ours(ctx, nodes)
            for name, tags in ours.items():
                if tags.get(TAG_CLIENT_TOKEN) == node.client_token:
                    return self._machine_named(config, node, name), True
            if config.max_nodes is not None and len(ours) >= config.max_nodes:
                raise QuotaExceededError(
                    f"baremetal provider '{ctx.name}': max_nodes is {config.max_nodes} and "
                    f"{len(ours)} machines are assigned; delete nodes or raise max_nodes"
                )
            machine = self._free_machine(ctx, config, node, nodes)
            tags = {**dict(node.tags), TAG_PROVIDER: ctx.name,
                    TAG_ENDPOINT: config.endpoint_of(machine)}
            try:
                warewulf.add_node(NewNode(machine.name, config.profile, config.network,
                                          machine.mac, machine.ip, machine.ipmi_address, tags))
            except NodeExistsError:
                continue
            return machine, False
        raise CapacityUnavailableError(f"baremetal node {node.address}: every free machine "
                                       f"was taken by another create meanwhile; try again")

    def _machine_named(self, config: BaremetalConfig, node: NodeRequest, name: str) -> Machine:
        if node.attributes.get("name") == name:
            return machine_from_attributes(node.address, node.attributes)
        for machine in config.machines:
            if machine.name == name:
                return machine
        raise ProviderError(f"baremetal node {node.address}: Warewulf node {name} carries its "
                            f"token but is neither in the inventory nor the node's attributes")

    def _free_machine(self, ctx: ProviderContext, config: BaremetalConfig, node: NodeRequest,
                      nodes: Mapping[str, NodeFields]) -> Machine:
        if "name" in node.attributes:  # a static pool names its machine
            machine = machine_from_attributes(node.address, node.attributes)
            if machine.name in nodes:
                raise CapacityUnavailableError(
                    f"baremetal node {node.address}: machine {machine.name} is already a "
                    f"Warewulf node that fuzz did not make for it; release it first"
                )
            return machine
        if node.offering is not None and node.offering not in config.offerings:
            raise ProviderError(f"baremetal provider '{ctx.name}': no offering "
                                f"{node.offering!r} ({', '.join(sorted(config.offerings))})")
        candidates = [m for m in config.machines
                      if node.offering is None or config.offering_of(m) == node.offering]
        for machine in candidates:
            if machine.name not in nodes:
                return machine
        raise CapacityUnavailableError(
            f"baremetal provider '{ctx.name}': no free machine"
            f"{f' of offering {node.offering}' if node.offering else ''}: all "
            f"{len(candidates)} in the inventory are Warewulf nodes already"
        )

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation]:
        """This block's nodes of ``ctx.cluster``: running once the agent answers, else pending."""
        config = config_of(ctx)
        warewulf = warewulf_for(ctx, config)
        nodes = warewulf.list_nodes()
        ours = _ours(ctx, nodes)
        power = warewulf.power_status({name: _ipmi_address(nodes[name]) for name in ours})

        def joined(name: str) -> bool:
            endpoint = ours[name].get(TAG_ENDPOINT)
            return power.get(name) == "on" and bool(endpoint) and _agent_answers(str(endpoint))

        with ThreadPoolExecutor(max_workers=HEALTH_WORKERS) as pool:
            answers = dict(zip(ours, pool.map(joined, ours), strict=True))
        return [_observation(name, tags, nodes[name], power.get(name, "unknown"), answers[name])
                for name, tags in sorted(ours.items())]

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool:
        """Power the machine off and delete its Warewulf node; True when it is already gone."""
        config = config_of(ctx)
        warewulf = warewulf_for(ctx, config)
        fields = warewulf.list_nodes().get(node.provider_id)
        if fields is None or node_tags(fields).get(TAG_CLIENT_TOKEN) != node.client_token:
            return True  # deleted, or the machine now serves another node
        self._release(warewulf, node.provider_id)
        return True

