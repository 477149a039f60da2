"""An entry of ``orchestrator.ingress.allow``: a network or one address, on one port or all.

Parsed here, where the cluster spec is validated, and used by the orchestrator's
ingress policy (:mod:`fuzz.orchestrate.ingress_policy`), which decides what http(s)
ingress may fetch from.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AllowEntry:
    """One entry of the allow-list: a network (or one address), on one port or all."""

    network: Network
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        """``10.1.0.0/16``, ``192.0.2.7``, ``127.0.0.1:8000``, ``[::1]:8000`` or ``fd00::/8``.

        Raises ValueError saying what is wrong.
        """
        host, port = text, None
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ValueError(f"{text!r}: write an IPv6 address with a port as [ADDRESS]:PORT")
            port = rest[1:] or None
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        try:
            network = ipaddress.ip_network(host.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an address, a CIDR network or ADDRESS:PORT "
                             "(host names are not allowed: the check is on the address "
                             "connected to)") from None
        if port is None:
            return cls(network)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
        return cls(network, int(port))

    @property
    def single(self) -> bool:
        """Whether the entry names one address (not a wider network)."""
        return self.network.prefixlen == self.network.max_prefixlen

    def admits(self, address: Address, port: int) -> bool:
        """Whether this entry opens ``address`` on ``port``."""
        return address in self.network and self.port in (None, port)
