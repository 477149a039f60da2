"""The federation seen from the CLI: its spec, each member's facts, where workflows run.

Everything with I/O around the pure routing of :mod:`fuzz.federate`: each member's
orchestrator is asked (in parallel, briefly) for its nodes (``ListNodes``), its elastic
pools' offerings with prices, queue and ingress cache (``MemberStatus``) and its
workflows (``ListWorkflows``);
a member that does not answer is marked unreachable, and routing skips it. The
member a workflow was placed on is recorded in the client's config directory
(``federations/NAME.json`` beside ``config.yaml``), so that ``status``, ``log``,
``stop``, ``exec`` and ``port-forward`` given ``--federation`` talk to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from fuzz.api import orchestrator_pb2 as pb
from fuzz.cli.contexts import ClientConfig, config_path
from fuzz.cli.options import AppContext
from fuzz.clients.orchestrator import (
    AccessDeniedError,
    OrchestratorClient,
    OrchestratorUnreachableError,
)
from fuzz.errors import ConfigError, FuzzError
from fuzz.federate.model import MemberFacts, OfferingFacts
from fuzz.fsutil import read_json, write_private_file
from fuzz.orchestrate.connect import Target, explicit_target, read_ca_file
from fuzz.resources import GPU_DEVICE, NodeCapacity
from fuzz.spec.federation import LoadedFederation, MemberSpec, load_federation
from fuzz.spec.labels import CPU_ARCHITECTURE_LABEL

F = TypeVar("F", bound=Callable[..., Any])
ASK_TIMEOUT = 5.0  # seconds a member gets to answer before routing skips it
ACTIVE_STATES = ("PENDING", "RUNNING")
SCHEDULABLE = "READY"


def load(path: Path) -> LoadedFederation:
    """The federation spec at ``path`` (problems one a line, file:line:col)."""
    return load_federation(path, str(path))


def member_target(federation: LoadedFederation, name: str) -> Target:
    """How member ``name``'s orchestrator is reached, as the spec says."""
    member = federation.spec.members[name]
    if member.context is not None:
        return ClientConfig.load(config_path()).context(member.context)[1].target()
    assert member.server is not None and member.token_file is not None  # the spec checks
    ca = None if member.insecure else _ca(federation, member, name)
    return explicit_target(member.server, federation.base_dir / member.token_file, ca)


def _ca(federation: LoadedFederation, member: MemberSpec, name: str) -> bytes:
    if member.ca_file is None:
        raise ConfigError(f"{federation.path}: member {name}: no ca_file to verify "
                          f"{member.server} against (or insecure: true for plain text)")
    return read_ca_file(federation.base_dir / member.ca_file)


def member_client(federation: LoadedFederation, name: str, timeout: float | None = None
                  ) -> OrchestratorClient:
    """A client for member ``name``'s orchestrator."""
    chosen = member_target(federation, name)
    if timeout is None:
        return chosen.orchestrator()
    return OrchestratorClient(chosen.endpoint, chosen.token, timeout=timeout, tls=chosen.tls)


@dataclass(frozen=True)
class MemberReport:
    """What ``fuzz federation status`` shows of a member beyond its routing facts: its
    schedulable nodes, its tasks waiting for room and its workflows by state."""

    facts: MemberFacts
    nodes: tuple[pb.Node, ...] = ()
    queued_tasks: int = 0
    workflows: dict[str, int] = field(default_factory=dict)


def _capacity(node: pb.Node) -> NodeCapacity:
    labels = dict(node.labels)
    return NodeCapacity(node.name, node.cores, node.memory_bytes, dict(node.devices),
                        labels.get(CPU_ARCHITECTURE_LABEL, "x86_64"), labels)


def _offering(offering: pb.PoolOffering) -> OfferingFacts:
    devices = {GPU_DEVICE: offering.gpus} if offering.gpus else {}
    return OfferingFacts(offering.pool, NodeCapacity(
        offering.name, offering.cores, offering.memory_bytes, devices,
        offering.architecture or "x86_64", dict(offering.labels)), offering.price_per_hour)


def _member_status(client: OrchestratorClient) -> pb.MemberStatusReply:
    """The member's offerings, queue and cache; empty where the caller may not see them
    (node:read on the cluster) or the orchestrator is older than the call."""
    try:
        return client.member_status(ASK_TIMEOUT)
    except AccessDeniedError:
        return pb.MemberStatusReply()
    except OrchestratorUnreachableError as exc:
        if "does not know this call" in str(exc):
            return pb.MemberStatusReply()
        raise


def _ask(federation: LoadedFederation, name: str) -> MemberReport:
    """Member ``name``'s facts, from its orchestrator; unreachable (with why) if it fails."""
    member = federation.spec.members[name]
    base = MemberFacts(name, member.site, member.labels, member.prices)
    try:
        with member_client(federation, name, ASK_TIMEOUT) as client:
            nodes = [n for n in client.list_nodes() if n.state == SCHEDULABLE]
            status = _member_status(client)
            workflows = client.list_workflows()
    except FuzzError as exc:
        return MemberReport(replace(base, unreachable=str(exc)))
    states: dict[str, int] = {}
    for workflow in workflows:
        states[workflow.state] = states.get(workflow.state, 0) + 1
    facts = replace(
        base, nodes=tuple(_capacity(n) for n in nodes),
        free={n.name: (n.free_cores, n.free_memory_bytes) for n in nodes},
        offerings=tuple(_offering(o) for o in status.offerings),
        active_workflows=sum(states.get(state, 0) for state in ACTIVE_STATES),
        cached_bytes={source.uri: source.bytes for source in status.cached})
    return MemberReport(facts, tuple(nodes), status.queued_tasks, states)


def gather(federation: LoadedFederation) -> list[MemberReport]:
    """Every member's report, asked in parallel, in the spec's order."""
    names = list(federation.spec.members)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return list(pool.map(lambda name: _ask(federation, name), names))


# --- where each workflow runs --------------------------------------------------------------

def placements_path(federation: LoadedFederation) -> Path:
    """Where this client records the member each workflow of the federation runs on."""
    return config_path().parent / "federations" / f"{federation.spec.federation}.json"


def placements(federation: LoadedFederation) -> dict[str, str]:
    """Workflow name or run id → member."""
    found = read_json(placements_path(federation))
    return {str(k): str(v) for k, v in (found or {}).get("workflows", {}).items()}


def record_placement(federation: LoadedFederation, names: list[str], member: str) -> None:
    """Record that the workflow known by ``names`` (its name, its run id) runs on ``member``."""
    recorded = placements(federation)
    recorded.update({name: member for name in names if name})
    path = placements_path(federation)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private_file(path, json.dumps({"workflows": recorded}, indent=1).encode())


def placed_member(federation: LoadedFederation, workflow: str) -> str:
    """The member that runs ``workflow`` (a name or a run id); ConfigError if none does."""
    recorded = placements(federation)
    member = recorded.get(workflow)
    if member is None and workflow.count(".") == 2:  # OWNER.NAME.RUN: a run of NAME
        member = recorded.get(workflow.split(".")[1])
    if member is None:
        raise ConfigError(f"workflow {workflow} was not started through federation "
                          f"{federation.spec.federation} from here (start it with fuzz "
                          "workflow start FILE --federation)")
    if member not in federation.spec.members:
        raise ConfigError(f"workflow {workflow} runs on {member}, which is no longer a member "
                          f"of federation {federation.spec.federation}")
    return member


def workflow_client(app: AppContext, workflow: str) -> OrchestratorClient:
    """A client for the member of ``app``'s federation that runs ``workflow``."""
    assert app.access.federation is not None
    federation = load(app.access.federation)
    member = placed_member(federation, workflow)
    app.err.print(f"workflow {workflow} runs on member {member}", highlight=False)
    return member_client(federation, member)
