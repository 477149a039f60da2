"""Where the orchestrator's endpoints are: declared in a workflow's Fuzzfile, served by
its service's running task.

An endpoint is ``services.<service>.network.endpoints[name]`` of the latest run of
``owner``'s workflow; its service runs as the task keyed by the service's name
(:func:`fuzz.spec.workflowref.task_key`), and a connection to it is the agent's
PortForward into that task's network namespace (:class:`.tunnel.AgentTunnel`).
Parsed Fuzzfiles are kept by content hash (a few, the latest used).
"""

from __future__ import annotations

import functools

from fuzz.errors import FuzzError
from fuzz.orchestrate.cluster.nodes import NodeDirectory
from fuzz.orchestrate.endpoints.proxy import (
    Backend,
    EndpointNotFoundError,
    EndpointUnavailableError,
    Route,
)
from fuzz.orchestrate.endpoints.tunnel import AgentTunnel
from fuzz.orchestrate.records import WorkflowRecord
from fuzz.orchestrate.workflows.loop import Runner
from fuzz.spec.endpoint_urls import EndpointAddress
from fuzz.spec.fuzzfile import Fuzzfile, ServiceSpec
from fuzz.spec.fuzzfile_loader import parse_fuzzfile

PARSED_KEPT = 64


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
        try:
            return AgentTunnel(self._nodes.client(plan.nodes[0]), plan.containers[0], route.port)
        except FuzzError as exc:
            raise EndpointUnavailableError(
                f"service {address.service} of workflow {address.owner}/{address.workflow}: "
                f"{exc}") from None
