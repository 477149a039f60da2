"""Where a service's endpoint is reached: its path, its host name and its URL.

A path endpoint is served at ``/endpoints/<owner>/<workflow>/<service>/<endpoint>/``
on the orchestrator's endpoint gateway; a subdomain endpoint at the root of the host
``<endpoint>.<service>.<workflow>.<owner>.<domain>`` (``orchestrator.endpoints.domain``).
Endpoint, service and workflow names hold no dot (:data:`fuzz.spec.fuzzfile_values.NAME_PATTERN`,
:data:`fuzz.spec.workflowref.WORKFLOW_NAME_PATTERN`), so a host name is read from the left
and the owner (whose name may hold dots) is what is left. Pure: the gateway, the
orchestrator's status and the variables given to a service all use these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PATH_ROOT = "endpoints"
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class GatewayAddress:
    """Where the endpoint gateway is reached: ``base`` ``https://HOST:PORT`` (empty: the
    server runs none) and the wildcard ``domain`` of subdomain endpoints (empty: none)."""

    base: str = ""
    domain: str = ""


@dataclass(frozen=True)
class EndpointAddress:
    """One endpoint of one service of ``owner``'s workflow ``workflow``."""

    owner: str
    workflow: str
    service: str
    endpoint: str

    @property
    def path_prefix(self) -> str:
        """The URL path a path endpoint is served under, ending in ``/``."""
        return f"/{PATH_ROOT}/{self.owner}/{self.workflow}/{self.service}/{self.endpoint}/"

    def host(self, domain: str) -> str:
        """The host name of a subdomain endpoint under ``domain``."""
        return f"{self.endpoint}.{self.service}.{self.workflow}.{self.owner}.{domain}".lower()


def locate_path(target: str) -> EndpointAddress | None:
    """The endpoint a request target ``/endpoints/O/W/S/E/...`` names (None: none).

    The target goes to the service as it is: services take their path prefix as their
    base URL (``FB_ENDPOINT_PATH``), as Jupyter's ``base_url`` does.
    """
    path = target.split("?", 1)[0]
    parts = path.split("/", 6)
    if len(parts) < 6 or parts[0] != "" or parts[1] != PATH_ROOT:
        return None
    names = parts[2:6]
    if not all(_SEGMENT.match(part) for part in names):
        return None
    return EndpointAddress(*names)


def locate_host(host: str, domain: str) -> EndpointAddress | None:
    """The endpoint a ``Host`` header names under ``domain`` (None: none; a port is ignored)."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    suffix = "." + domain.lower().strip(".")
    if not domain or not name.lower().endswith(suffix):
        return None
    labels = name[: -len(suffix)].split(".", 3)
    if len(labels) != 4 or not all(_SEGMENT.match(label) for label in labels):
        return None
    endpoint, service, workflow, owner = labels
    return EndpointAddress(owner, workflow, service, endpoint)


def endpoint_url(base: str, address: EndpointAddress, kind: str, domain: str) -> str:
    """The URL users open: ``base`` (``https://HOST:PORT``) and the path, or the subdomain
    host with ``base``'s port."""
    if kind == "subdomain" and domain:
        scheme, _, hostport = base.partition("://")
        port = hostport.rsplit(":", 1)[1] if ":" in hostport.rsplit("]", 1)[-1] else ""
        return f"{scheme}://{address.host(domain)}{':' + port if port else ''}/"
    return base.rstrip("/") + address.path_prefix


def variable_suffix(endpoint: str) -> str:
    """The ``<EP>`` of ``FB_ENDPOINT_PATH_<EP>``: the name upper-cased, ``-`` as ``_``."""
    return endpoint.upper().replace("-", "_")


def endpoint_variables(gateway: GatewayAddress, owner: str, workflow: str, service: str,
                       endpoints: list[tuple[str, str]]) -> dict[str, str]:
    """What service ``service`` is told of its ``endpoints`` (name, type), in file order:
    ``FB_ENDPOINT_PATH_<EP>`` (the path prefix; ``/`` for a subdomain endpoint) and
    ``FB_ENDPOINT_URL_<EP>`` for each, and ``FB_ENDPOINT_PATH`` / ``FB_ENDPOINT_URL``
    unsuffixed when it has exactly one (reference §2.7.4). Without a gateway the URLs
    are empty."""
    variables: dict[str, str] = {}
    for name, kind in endpoints:
        address = EndpointAddress(owner, workflow, service, name)
        subdomain = kind == "subdomain" and bool(gateway.domain)
        path = "/" if subdomain else address.path_prefix
        url = endpoint_url(gateway.base, address, kind, gateway.domain) if gateway.base else ""
        suffix = variable_suffix(name)
        variables[f"FB_ENDPOINT_PATH_{suffix}"] = path
        variables[f"FB_ENDPOINT_URL_{suffix}"] = url
        if len(endpoints) == 1:
            variables["FB_ENDPOINT_PATH"] = path
            variables["FB_ENDPOINT_URL"] = url
    return variables
