"""Where the orchestrator's endpoints are: declared in a workflow's Fuzzfile, served by
its service's running task.

An endpoint is ``services.<service>.network.endpoints[name]`` of the latest run of
``owner``'s workflow; its service runs as the task keyed by the service's name
(:func:`fuzz.spec.workflowref.task_key`), and a connection to it goes through that
task's agent into its network namespace, with a reusable ticket for the endpoint's
port: on the agent's own host, the socket the agent opened there, handed over
(:class:`.handoff.HandedOffConnection`); elsewhere over the agent's direct TLS port
(:class:`.direct.DirectTunnel`); or, where the agent has none (a plain-text cluster),
its PortForward (:class:`.tunnel.AgentTunnel`).
Parsed Fuzzfiles are kept by content hash (a few, the latest used).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import secrets
import ssl

from fuzz.clients.agent import AgentClient
from fuzz.errors import FuzzError
from fuzz.orchestrate.cluster.nodes import NodeDirectory
from fuzz.orchestrate.endpoints.direct import DirectTunnel, IdleTunnels
from fuzz.orchestrate.endpoints.handoff import HandedOffConnection
from fuzz.orchestrate.endpoints.proxy import (
    Backend,
    EndpointNotFoundError,
    EndpointUnavailableError,
    Route,
)
from fuzz.orchestrate.endpoints.tunnel import AgentTunnel
from fuzz.orchestrate.records import WorkflowRecord
from fuzz.orchestrate.workflows.loop import Runner
from fuzz.rpc.direct import TICKET_BYTES, client_context
from fuzz.spec.endpoint_urls import EndpointAddress
from fuzz.spec.fuzzfile import Fuzzfile, ServiceSpec
from fuzz.spec.fuzzfile_loader import parse_fuzzfile

PARSED_KEPT = 64
GRANTEE = "endpoint-gateway"  # whom the agent's log names for the gateway's tickets
TICKET_TTL_SECONDS = 10.0  # redeemed at once: the gateway connects right after the grant


@functools.lru_cache(maxsize=PARSED_KEPT)
def _parsed(text: str, file_name: str) -> Fuzzfile:
    return parse_fuzzfile(text, file_name).fuzzfile


def parsed_fuzzfile(record: WorkflowRecord) -> Fuzzfile:
    """The Fuzzfile of a run (it parsed when the run started, so it parses again; a
    SpecError if it no longer does)."""
    return _parsed(record.fuzzfile, record.file_name)


def service_port(service: ServiceSpec, endpoint: str) -> tuple[int, str, str] | None:
    """(container port, scope, type) of ``service``'s endpoint ``endpoint`` (None: none)."""
    for declared in service.network.endpoints:
        if declared.name.lower() == endpoint.lower():
            port = next(p.port for p in service.network.ports if p.name == declared.port_name)
            return port, declared.scope, declared.type
    return None


class WorkflowEndpoints:
    """The :class:`~fuzz.orchestrate.endpoints.proxy.Resolver` of the orchestrator."""

    def __init__(self, runner: Runner, nodes: NodeDirectory) -> None:
        """Find endpoints in ``runner``'s workflows, reach them through ``nodes``' agents."""
        self._runner = runner
        self._nodes = nodes
        self._idle: IdleTunnels[DirectTunnel | HandedOffConnection] = IdleTunnels()

    def route(self, address: EndpointAddress) -> Route:
        """The declared endpoint at ``address``."""
        missing = EndpointNotFoundError(
            f"no endpoint {address.endpoint} of service {address.service} in workflow "
            f"{address.owner}/{address.workflow}")
        try:
            snapshot = self._runner.snapshot(address.owner, address.workflow)
            record = snapshot.record
            fuzzfile = parsed_fuzzfile(record)
        except FuzzError:
            raise missing from None
        service = next((s for name, s in fuzzfile.services.items()
                        if name.lower() == address.service.lower()), None)
        found = service_port(service, address.endpoint) if service is not None else None
        if found is None:
            raise missing
        port, scope, _ = found
        return Route(address, scope, record.account, port)

    def connect(self, route: Route) -> Backend:
        """A connection to the service's port in its running task."""
        address = route.address
        plan = self._runner.live_attempt(address.owner, address.workflow, address.service)
        if plan is None:
            raise EndpointUnavailableError(
                f"service {address.service} of workflow {address.owner}/{address.workflow} "
                "is not running")
        agent = self._nodes.client(plan.nodes[0])
        try:
            return self._direct(agent, plan.containers[0], route.port) or \
                AgentTunnel(agent, plan.containers[0], route.port)
        except FuzzError as exc:
            raise EndpointUnavailableError(
                f"service {address.service} of workflow {address.owner}/{address.workflow}: "
                f"{exc}") from None

    def _direct(self, agent: AgentClient, container: str, port: int
                ) -> DirectTunnel | HandedOffConnection | None:
        """A connection to ``port`` of ``container`` alone: an idle one there reopened,
        else a new one with a reusable ticket for it: the service's socket itself,
        handed off by an agent on this host (:mod:`fuzz.rpc.handoff`), else over the
        agent's direct TLS port; None when the agent has no direct port (a plain-text
        cluster)."""
        if agent.tls is None:
            return None
        key = (agent.endpoint, container, port)
        tunnel = self._idle.reopened(key)
        if tunnel is not None:
            return tunnel
        ticket = secrets.token_bytes(TICKET_BYTES)
        direct_port = agent.grant_access(hashlib.sha256(ticket).digest(), container, port,
                                         GRANTEE, TICKET_TTL_SECONDS, reusable=True)
        if not direct_port:
            return None
        host = agent.endpoint.rpartition(":")[0].strip("[]")
        release = functools.partial(self._idle.put, key)
        if _is_loopback(host):
            handed = HandedOffConnection.open(direct_port, ticket, release)
            if handed is not None:
                return handed
        return DirectTunnel(host, direct_port, _client_context(agent.tls.ca_pem),
                            agent.tls.server_name or host, ticket,
                            release=release)


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an agent's address) is this host's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=4)
def _client_context(ca_pem: bytes) -> ssl.SSLContext:
    """The TLS context for agents of the cluster CA ``ca_pem`` (made once: loading the CA
    costs more than a handshake)."""
    return client_context(ca_pem)
