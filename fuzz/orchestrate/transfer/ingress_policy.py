"""Which addresses http(s) ingress may fetch from: public ones, and what the admin allows.

An ingress runs inside the orchestrator, so a Fuzzfile's ``http://`` source is a
request the orchestrator makes on its author's behalf. Left open, it would hand any
user the body of whatever the orchestrator can reach: cloud metadata (the node
credentials), the cluster's own agents and orchestrator, services on loopback and on
the private network. :class:`IngressPolicy` refuses, by default:

- loopback (``127.0.0.0/8``, ``::1``), RFC 1918 (``10/8``, ``172.16/12``,
  ``192.168/16``), shared address space (CGNAT, ``100.64.0.0/10``), link-local
  (``169.254.0.0/16``, ``fe80::/10``: cloud metadata services answer there),
  multicast, unspecified and broadcast, IPv6 unique local (``fc00::/7``) and
  site-local, and every other address that is not globally routable
  (:attr:`ipaddress.IPv4Address.is_global`);
- IPv4 addresses written in IPv6 (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible
  ``::a.b.c.d``, 6to4 ``2002::/16`` and NAT64 ``64:ff9b::/96``) as the IPv4
  address they carry;
- the cluster's own addresses: every address of the orchestrator's host and the
  hosts of the orchestrator's and the node agents' endpoints.

The admin's allow-list (``orchestrator.ingress.allow`` in the cluster spec) opens
networks or single addresses, optionally on one port only. A cluster host is opened
only by an entry naming that one address (a broad CIDR does not open the nodes), and
the orchestrator's and agents' own ports are never opened.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from fuzz.spec.allowlist import Address, AllowEntry

CGNAT = ipaddress.ip_network("100.64.0.0/10")
RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
BROADCAST = ipaddress.ip_address("255.255.255.255")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
HOW_TO_ALLOW = "an admin may allow it under orchestrator.ingress.allow"


def embedded_ipv4(address: Address) -> Address:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64), else itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)  # :: and ::1 stay IPv6
    return address


def special_kind(address: Address) -> str | None:
    """What kind of non-public address ``address`` is ("a loopback address"); None if public."""
    kinds: list[tuple[bool, str]] = [
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address (where cloud metadata services answer)"),
        (address.is_multicast, "a multicast address"),
        (address.is_unspecified, "the unspecified address"),
        (address == BROADCAST, "the broadcast address"),
        (address in CGNAT, "a shared (CGNAT, 100.64.0.0/10) address"),
        (any(address in network for network in RFC1918), "a private (RFC 1918) address"),
        (address in UNIQUE_LOCAL, "a unique local (fc00::/7) address"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local,
         "a site-local address"),
        (not address.is_global, "not a public address"),
    ]
    return next((kind for matches, kind in kinds if matches), None)


def _no_endpoints() -> Iterable[str]:
    return ()


@dataclass(frozen=True)
class IngressPolicy:
    """Where http(s) ingress may connect; see the module's documentation for the defaults.

    ``cluster_endpoints`` gives the orchestrator's and the node agents' ``HOST:PORT``
    now (it is asked at every check: nodes come and go). ``proxy`` is the admin's
    ``http://HOST:PORT`` proxy; None: connect directly (the environment's
    ``HTTP_PROXY`` and friends are never read).
    """

    allow: tuple[AllowEntry, ...] = ()
    proxy: str | None = None
    cluster_endpoints: Callable[[], Iterable[str]] = field(default=_no_endpoints, compare=False)

    @classmethod
    def from_spec(cls, allow: Iterable[str], proxy: str | None) -> IngressPolicy:
        """A policy from the cluster spec's (already validated) ``orchestrator.ingress``."""
        return cls(tuple(AllowEntry.parse(entry) for entry in allow), proxy)

    def refusal(self, address: Address, port: int) -> str | None:
        """Why connecting to ``address`` on ``port`` is refused; None when it is allowed."""
        address = embedded_ipv4(address)
        where = f"{address} port {port}"
        endpoints = list(self._endpoints())
        if any(_same_endpoint(endpoint, address, port) for endpoint in endpoints):
            return f"refusing to fetch from {where}: the orchestrator's or a node agent's port"
        kind = special_kind(address)
        hint = HOW_TO_ALLOW
        if _is_own_address(address) or any(host == address for host, _ in endpoints):
            kind = kind or "an address of the cluster itself"
            hint += ", naming that one address"  # a wide network does not open the cluster
            admitted = any(entry.single and entry.admits(address, port) for entry in self.allow)
        else:
            admitted = any(entry.admits(address, port) for entry in self.allow)
        if kind is None or admitted:
            return None
        return f"refusing to fetch from {where}: {kind} ({hint})"

    def destination_refusal(self, host: str, port: int) -> str | None:
        """Why ``host``:``port`` is refused, checking every address ``host`` resolves to
        (for a connection someone else makes: a proxy, boto3); None when all are allowed.

        Raises OSError when ``host`` does not resolve.
        """
        for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            refusal = self.refusal(ipaddress.ip_address(sockaddr[0]), port)
            if refusal is not None:
                return refusal
        return None

    def _endpoints(self) -> Iterator[tuple[Address, int]]:
        """The cluster's endpoints as (address, port); a host name that does not resolve
        is skipped."""
        for endpoint in self.cluster_endpoints():
            host, _, port_text = endpoint.rpartition(":")
            if not port_text.isdigit():
                continue
            host, port = host.strip("[]"), int(port_text)
            try:
                yield embedded_ipv4(ipaddress.ip_address(host)), port
            except ValueError:
                try:
                    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                except OSError:
                    continue
                for *_, sockaddr in found:
                    yield embedded_ipv4(ipaddress.ip_address(sockaddr[0])), port


def _same_endpoint(endpoint: tuple[Address, int], address: Address, port: int) -> bool:
    """Whether ``address``:``port`` is ``endpoint`` (one listening on 0.0.0.0 or :: is on
    every address of this host)."""
    host, endpoint_port = endpoint
    if endpoint_port != port:
        return False
    return host == address or (host.is_unspecified and _is_own_address(address))


def _is_own_address(address: Address) -> bool:
    """Whether ``address`` belongs to this host.

    Hand-written rather than listing interfaces (the standard library cannot; psutil
    would be a new dependency for one call): binding a socket to an address succeeds
    exactly when the address is this host's, which is the question asked. (With the
    sysctl ``net.ipv4.ip_nonlocal_bind`` set, every address counts as this host's, so
    the check fails closed.)
    """
    family = socket.AF_INET6 if isinstance(address, ipaddress.IPv6Address) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True
