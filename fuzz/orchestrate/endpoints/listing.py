"""A workflow's declared endpoints with their URLs, and what its services are told of them."""

from __future__ import annotations

from dataclasses import dataclass

from fuzz.api import orchestrator_pb2 as pb
from fuzz.errors import FuzzError
from fuzz.orchestrate.endpoints.resolver import parsed_fuzzfile
from fuzz.orchestrate.records import WorkflowRecord
from fuzz.spec.endpoint_urls import EndpointAddress, endpoint_url, endpoint_variables
from fuzz.spec.fuzzfile import ServiceSpec


@dataclass(frozen=True)
class GatewayAddress:
    """Where the endpoint gateway is reached: ``base`` ``https://HOST:PORT`` (empty: the
    server runs none) and the wildcard ``domain`` of subdomain endpoints (empty: none)."""

    base: str = ""
    domain: str = ""


def endpoint_messages(record: WorkflowRecord, gateway: GatewayAddress) -> list[pb.Endpoint]:
    """Every endpoint the run's services declare, in file order, with its URL."""
    try:
        fuzzfile = parsed_fuzzfile(record)
    except FuzzError:
        return []
    found = []
    for service_name, service in fuzzfile.services.items():
        ports = {port.name: port.port for port in service.network.ports}
        for endpoint in service.network.endpoints:
            address = EndpointAddress(record.owner, record.name, service_name, endpoint.name)
            url = endpoint_url(gateway.base, address, endpoint.type, gateway.domain) \
                if gateway.base else ""
            found.append(pb.Endpoint(service=service_name, name=endpoint.name, url=url,
                                     scope=endpoint.scope, type=endpoint.type,
                                     protocol=endpoint.protocol,
                                     port=ports[endpoint.port_name]))
    return found


def service_environment(owner: str, workflow: str, service_name: str, service: ServiceSpec,
                        gateway: GatewayAddress) -> dict[str, str]:
    """``FB_ENDPOINT_PATH_<EP>``, ``FB_ENDPOINT_URL_<EP>`` (and unsuffixed for a single
    endpoint) of ``service``, for its container's environment."""
    return endpoint_variables(gateway.base, gateway.domain, [
        (EndpointAddress(owner, workflow, service_name, endpoint.name), endpoint.type)
        for endpoint in service.network.endpoints])
