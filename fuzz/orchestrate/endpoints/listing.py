"""A workflow's declared endpoints with their URLs, as the API shows them."""

from __future__ import annotations

from fuzz.api import orchestrator_pb2 as pb
from fuzz.errors import FuzzError
from fuzz.orchestrate.endpoints.resolver import parsed_fuzzfile
from fuzz.orchestrate.records import WorkflowRecord
from fuzz.spec.endpoint_urls import EndpointAddress, GatewayAddress, endpoint_url


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

