"""The job subnet a container monitor takes, claimed against the node's other monitors.

Several monitors may share a host (the local provider's agents, tests running
side by side), and each must have a subnet of its own: were two to share one,
the second's firewall set-up (which first removes what it finds, see
:func:`fuzz.substrate.monitor.firewall.install`) would wipe the first's chain
with its peers' rules, their iptables calls would race in one chain, and the
first to stop would take the bridge from under the other. Neither what a state
dir recorded last time nor the absence of a bridge says that no other monitor
holds a subnet now (another may be about to make that bridge). So a monitor holds
an exclusive ``flock`` on a file named after its subnet, in a directory that every
monitor of the host shares, for as long as it serves jobs; the kernel drops the
lock when the monitor dies, SIGKILL included, so a restarted monitor takes its
subnet again. A derived subnet whose lock is held is passed over for the next;
one given explicitly is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os

from fuzz.substrate.monitor.jobnet import NETWORK_FILE, JobNetwork, bridge_name, derived_subnet

LOCK_DIR = "/run/fuzz/subnets"  # shared by every monitor of the host
SUBNET_ATTEMPTS = 64


class SubnetClaimError(Exception):
    """No subnet could be claimed; the message is one line."""


class SubnetClaim:
    """A subnet this process holds until :meth:`release` (or its end)."""

    __slots__ = ("fd", "subnet")

    def __init__(self, subnet: ipaddress.IPv4Network, fd: int) -> None:
        """Hold ``subnet`` through the locked file ``fd``."""
        self.subnet = subnet
        self.fd = fd

    def release(self) -> None:
        """Let another monitor take the subnet (once its bridge and rules are gone)."""
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1


def try_claim(subnet: ipaddress.IPv4Network, lock_dir: str = LOCK_DIR) -> SubnetClaim | None:
    """Claim ``subnet`` for this process; None when another holds it."""
    try:
        os.makedirs(lock_dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(lock_dir, f"{bridge_name(subnet)}.lock"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SubnetClaimError(f"cannot claim the job subnet {subnet} in {lock_dir}: "
                               f"{exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise SubnetClaimError(f"cannot claim the job subnet {subnet}: {exc.strerror}") from None
    return SubnetClaim(subnet, fd)


def claim(network: JobNetwork, state_dir: str, lock_dir: str = LOCK_DIR) -> SubnetClaim:
    """Claim the subnet of a monitor serving ``state_dir`` on ``network`` (not the host's).

    The one given, else the one ``state_dir`` recorded (a restarted monitor adopts
    its bridge), else the first subnet derived from ``state_dir`` that no other
    monitor holds, no bridge uses and the node does not route; recorded for next time.
    """
    if network.subnet is not None:
        held = try_claim(network.subnet, lock_dir)
        if held is None:
            raise SubnetClaimError(f"the job subnet {network.subnet} is in use by another "
                                   "container monitor on this node")
        return held
    record = os.path.join(state_dir, NETWORK_FILE)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError), open(
        record, encoding="utf-8"
    ) as handle:
        held = try_claim(ipaddress.IPv4Network(json.load(handle)["subnet"]), lock_dir)
        if held is not None:
            return held
    taken = _routed_subnets()
    for attempt in range(SUBNET_ATTEMPTS):
        subnet = derived_subnet(state_dir, network.jobs_range, attempt)
        if any(subnet.overlaps(other) for other in taken):
            continue
        held = try_claim(subnet, lock_dir)
        if held is None:
            continue
        if os.path.exists(f"/sys/class/net/{bridge_name(subnet)}"):
            held.release()  # left by a monitor that died, or made by one that takes no lock
            continue
        with open(record, "w", encoding="utf-8") as handle:
            json.dump({"subnet": str(subnet)}, handle)
        return held
    raise SubnetClaimError(f"no free /24 for jobs in {network.jobs_range}")


def _routed_subnets() -> list[ipaddress.IPv4Network]:
    """The IPv4 destinations the node's main routing table has (from /proc: no netlink yet)."""
    found = []
    with contextlib.suppress(OSError), open("/proc/net/route", encoding="ascii") as handle:
        for line in handle.read().splitlines()[1:]:
            fields = line.split()
            destination = int(fields[1], 16).to_bytes(4, "little")
            mask = int(fields[7], 16).to_bytes(4, "little")
            if fields[1] == "00000000":
                continue
            with contextlib.suppress(ValueError):
                found.append(ipaddress.IPv4Network(
                    f"{ipaddress.IPv4Address(destination)}/{ipaddress.IPv4Address(mask)}"))
    return found
