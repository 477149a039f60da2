"""The network a node's jobs live on: its settings, names and the files derived from them.

Each job's container gets a network namespace of its own with one veth whose
other end is a port of the node's job bridge; the bridge holds the gateway
address of the node's job *subnet*, and the node masquerades what jobs send out.
Every node's subnet lies in the cluster's *jobs range*, which the firewall
(:mod:`fuzz.substrate.monitor.firewall`) keeps jobs from reaching, except the
peers of their own multinode job. ``host`` instead keeps the node's network
namespace (an admin's opt-in for RDMA and some MPI fabrics; see docs/security.md).

Pure data and small text files: imported by the agent and by the container
monitor, so only cheap standard modules.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os

from fuzz.spec.labels import NETWORK_LABEL
from fuzz.substrate.monitor.files import NETNS_FILE

HOST = "host"
AUTO = "auto"
DEFAULT_JOBS_RANGE = "10.200.0.0/13"
NODE_PREFIX = 24
RESOLV_FILE = "resolv.conf"  # in the state dir: what jobs use as /etc/resolv.conf
NETWORK_FILE = "network.json"  # in the state dir: the subnet the monitor took (derived ones)
METADATA_RANGE = "169.254.0.0/16"
HOST_RESOLV = "/etc/resolv.conf"
UPSTREAM_RESOLV = "/run/systemd/resolve/resolv.conf"  # systemd-resolved's upstream servers


class JobNetworkError(ValueError):
    """A job network setting is invalid; the message is one line."""


class JobNetwork:
    """One node's job network: ``subnet`` inside ``jobs_range``, or the host's network.

    ``subnet`` None and not ``host``: the monitor picks a free /24 of the range
    (:func:`derived_subnet`), as tests and agents given no subnet want.
    """

    __slots__ = ("host", "jobs_range", "subnet")

    def __init__(self, subnet: ipaddress.IPv4Network | None,
                 jobs_range: ipaddress.IPv4Network, host: bool = False) -> None:
        """Validate: the subnet lies inside the jobs range and has room for jobs."""
        if subnet is not None:
            if not subnet.subnet_of(jobs_range):
                raise JobNetworkError(
                    f"job subnet {subnet} is not inside the jobs range {jobs_range}")
            if subnet.num_addresses < 8:
                raise JobNetworkError(f"job subnet {subnet} is too small (at least a /29)")
        self.subnet = None if host else subnet
        self.jobs_range = jobs_range
        self.host = host

    @classmethod
    def parse(cls, subnet: str | None, jobs_range: str = DEFAULT_JOBS_RANGE) -> JobNetwork:
        """From text: ``subnet`` a CIDR, ``auto`` (or None) or ``host``; JobNetworkError if bad."""
        try:
            network_range = ipaddress.IPv4Network(jobs_range)
        except ValueError as exc:
            raise JobNetworkError(f"jobs range {jobs_range!r}: {exc}") from None
        if subnet == HOST:
            return cls(None, network_range, host=True)
        if subnet is None or subnet == AUTO:
            return cls(None, network_range)
        try:
            parsed = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise JobNetworkError(f"job subnet {subnet!r}: {exc}") from None
        return cls(parsed, network_range)

    def argument(self) -> str:
        """This network as one argument (what :meth:`from_argument` reads back)."""
        if self.host:
            return HOST
        return f"{self.subnet or AUTO},{self.jobs_range}"

    @classmethod
    def from_argument(cls, text: str) -> JobNetwork:
        """Read what :meth:`argument` wrote (JobNetworkError when it is malformed)."""
        subnet, _, jobs_range = text.partition(",")
        return cls.parse(subnet, jobs_range or DEFAULT_JOBS_RANGE)

    def __eq__(self, other: object) -> bool:
        """Equal when both say the same."""
        return isinstance(other, JobNetwork) and self.argument() == other.argument()

    def __hash__(self) -> int:
        """Hash of :meth:`argument`."""
        return hash(self.argument())

    def __repr__(self) -> str:
        """``JobNetwork('10.200.3.0/24,10.200.0.0/13')``."""
        return f"JobNetwork({self.argument()!r})"


def agent_network(job_network: str, jobs_range: str, labels: dict[str, str]) -> JobNetwork:
    """The network an agent's jobs get: its ``--job-network``, where ``auto`` gives way to
    ``host`` on a node labelled ``fuzz:network=host`` (a ``network: host`` pool's)."""
    if job_network == AUTO and labels.get(NETWORK_LABEL) == HOST:
        job_network = HOST
    return JobNetwork.parse(job_network, jobs_range)


def bridge_name(subnet: ipaddress.IPv4Network) -> str:
    """The job bridge of ``subnet`` (15 characters at most, as Linux wants)."""
    return f"fzb{int(subnet.network_address):08x}"


def chain_name(subnet: ipaddress.IPv4Network) -> str:
    """The firewall chain of ``subnet``'s bridge (28 characters at most, as iptables wants)."""
    return f"FUZZ-{bridge_name(subnet)}"


def veth_name(address: ipaddress.IPv4Address) -> str:
    """The host end of the veth of the job at ``address``."""
    return f"fzv{int(address):08x}"


def gateway(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The bridge's address: the subnet's first host."""
    return subnet.network_address + 1


def job_addresses(subnet: ipaddress.IPv4Network) -> range:
    """The integer addresses jobs may take: every host of the subnet but the gateway."""
    first = int(subnet.network_address) + 2
    return range(first, int(subnet.broadcast_address))


def derived_subnet(key: str, jobs_range: ipaddress.IPv4Network, attempt: int = 0
                   ) -> ipaddress.IPv4Network:
    """A /24 of ``jobs_range`` picked by hashing ``key`` (a state dir), ``attempt`` further on.

    For agents given no subnet (tests, the local provider's several agents on one
    host): distinct keys mostly land on distinct subnets; the monitor moves on to
    the next ``attempt`` when one is taken.
    """
    subnets = 1 << max(NODE_PREFIX - jobs_range.prefixlen, 0)
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    index = (digest + attempt) % subnets
    return ipaddress.IPv4Network(
        (int(jobs_range.network_address) + (index << (32 - NODE_PREFIX)), NODE_PREFIX)
    )


def _nameservers(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines if line.split()[:1] == ["nameserver"]
            and len(line.split()) > 1]


def _reachable(server: str) -> bool:
    """A server a job can use: not on the node's loopback (a stub) nor link-local."""
    try:
        address = ipaddress.ip_address(server.split("%")[0])
    except ValueError:
        return False
    return address.version == 4 and not (address.is_loopback or address.is_link_local)


def resolv_conf(host_file: str = HOST_RESOLV, upstream_file: str = UPSTREAM_RESOLV) -> str:
    """The ``resolv.conf`` jobs get: the node's name servers a job can reach.

    A loopback stub (systemd-resolved's 127.0.0.53) is not reachable from a
    job's namespace, so its upstream servers are used instead; the node's
    search domains are kept.
    """
    servers = [s for s in _nameservers(host_file) if _reachable(s)]
    if not servers:
        servers = [s for s in _nameservers(upstream_file) if _reachable(s)]
    lines = [f"nameserver {server}" for server in servers] or [
        "# the node has no name server a job can reach"]
    try:
        with open(host_file, encoding="utf-8") as handle:
            lines += [line for line in handle.read().splitlines()
                      if line.split()[:1] in (["search"], ["domain"])]
    except OSError:
        pass
    return "\n".join(lines) + "\n"


def netns_path(container_dir: str | os.PathLike[str]) -> str:
    """Where a container's network namespace is bind-mounted (in the monitor's mounts)."""
    return os.path.join(os.fspath(container_dir), NETNS_FILE)
