"""The monitor's network namespaces for jobs, made in advance by a thread of their own.

Making a namespace with its veth costs milliseconds (the kernel's namespace,
the veth pair, a few netlink round trips): far too much for a start that runc
does in about 20 ms, and too much even for the event loop between two starts.
So a thread keeps :data:`POOL_SIZE` of them ready, each already addressed,
routed and plugged into the node's bridge; a start only bind-mounts one onto
the container directory's ``netns`` file, which the OCI config names (runc
joins it), and the namespace then lives as long as the container's init.
When a namespace ends, the kernel deletes its veth pair with it.

Everything goes through netlink in-process (pyroute2; imported by the thread, so
the monitor itself starts as fast as before). ``unshare`` and ``setns`` move
only the calling thread, so the event loop never leaves the node's namespace.

The bridge and the firewall (:mod:`fuzz.substrate.monitor.firewall`) are set up
by the thread before its first namespace and removed by :meth:`NetnsPool.close`
when the monitor stops; the subnet is claimed against the node's other monitors
(:mod:`fuzz.substrate.monitor.subnetclaim`) for as long. Addresses are the
pool's to give: it is the only one handing them out on this node, keeps those of
live jobs, and goes round the subnet so that an address is not given again soon
after it was freed.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import random
import threading
import time

from fuzz.substrate.monitor import firewall, subnetclaim
from fuzz.substrate.monitor.jobnet import (
    RESOLV_FILE,
    JobNetwork,
    bridge_name,
    gateway,
    job_addresses,
    resolv_conf,
    veth_name,
)
from fuzz.substrate.monitor.syscalls import SysError, bind_mount

logger = logging.getLogger(__name__)

TYPE_CHECKING = False  # typing is slow to import; the monitor imports this module
if TYPE_CHECKING:
    from collections.abc import Callable

CLONE_NEWNET = 0x40000000
POOL_SIZE = 2
RETRY_PAUSE = 1.0  # after a failed namespace, before the next try
TAKE_TIMEOUT = 30.0
LO_INDEX, ETH0_INDEX = 1, 2  # in a new namespace
RECYCLED_MAX = 64
RESERVE_TTL = 600.0  # how long a reserved address waits for its container

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(Exception):
    """No namespace could be had for a job; the message is one line."""


def _enter(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), f"setns into {what}: {os.strerror(ctypes.get_errno())}")


def _write_sysctl(name: str, value: str) -> None:
    """Write a net sysctl of the calling thread's network namespace (the one it opens in)."""
    with open(f"/proc/sys/net/{name}", "w", encoding="ascii") as handle:
        handle.write(value)


class Netns:
    """A ready namespace: its open fd and the job address inside it."""

    __slots__ = ("address", "fd")

    def __init__(self, fd: int, address: ipaddress.IPv4Address) -> None:
        """Hold ``fd`` (the namespace) addressed as ``address``."""
        self.fd = fd
        self.address = address


class NetnsPool:
    """The node's job bridge and a few namespaces ready for the next jobs."""

    def __init__(self, network: JobNetwork, state_dir: str) -> None:
        """Serve jobs on ``network`` (not the host network); set up by :meth:`start`."""
        self.network = network
        self.state_dir = state_dir
        self.subnet: ipaddress.IPv4Network = network.subnet or network.jobs_range
        self.ready: list[Netns] = []
        self.recycled: dict[str, list[Netns]] = {}  # tenant -> namespaces its jobs left
        self.reserved: dict[str, tuple[Netns, float]] = {}  # container id -> (it, deadline)
        self.owners: dict[int, str] = {}  # address -> container id ("" while in the pool)
        self.cursor = 0
        self.failure: str | None = None
        self.set_up = False
        self.closing = False
        self.lock = threading.Condition()
        self.thread: threading.Thread | None = None
        self.claim: subnetclaim.SubnetClaim | None = None

    # --- the event loop's side

    def start(self) -> None:
        """Claim the subnet (a free one when none was given), write resolv.conf, start the thread.

        A subnet that cannot be had is said to every start, as a set-up failure is.
        """
        try:
            self.claim = subnetclaim.claim(self.network, self.state_dir)
        except subnetclaim.SubnetClaimError as exc:
            self._failed(str(exc))
            return
        self.subnet = self.claim.subnet
        with open(os.path.join(self.state_dir, RESOLV_FILE), "w", encoding="utf-8") as handle:
            handle.write(resolv_conf())
        addresses = job_addresses(self.subnet)
        self.cursor = random.randrange(len(addresses))
        self.thread = threading.Thread(target=self._run, name="netns-pool", daemon=True)
        self.thread.start()

    def take(self, container_id: str, target: str, tenant: str) -> str:
        """Bind a namespace onto ``target`` for ``container_id``; its job address.

        The one reserved for it (:meth:`reserve`) if any, else one that a job of
        the same ``tenant`` (the job's uid) left, else a new one.
        """
        with self.lock:
            kept = self.recycled.get(tenant)
            reserved = self.reserved.pop(container_id, None)
            if reserved is not None:
                netns = reserved[0]
            elif kept:
                netns = kept.pop()
            else:
                netns = self._next_ready()
            self.owners[int(netns.address)] = container_id
            self.lock.notify_all()
        try:
            bind_mount(f"/proc/self/fd/{netns.fd}", target)
        except SysError as exc:
            self.release(container_id)
            raise NetnsError(str(exc)) from None
        finally:
            os.close(netns.fd)  # the mount (then the init) keeps the namespace
        return str(netns.address)

    def reserve(self, container_id: str) -> str:
        """The address ``container_id`` will have, before it starts (a multinode job's rank).

        Its peers are started with this address in their environment; the
        namespace is kept for the container for :data:`RESERVE_TTL` seconds.
        """
        with self.lock:
            now = time.monotonic()
            for other, (netns, deadline) in list(self.reserved.items()):
                if deadline < now:
                    del self.reserved[other]
                    self.owners.pop(int(netns.address), None)
                    os.close(netns.fd)
            if container_id not in self.reserved:
                netns = self._next_ready()
                self.owners[int(netns.address)] = container_id
                self.reserved[container_id] = (netns, now + RESERVE_TTL)
            return str(self.reserved[container_id][0].address)

    def _next_ready(self) -> Netns:
        """The oldest ready namespace, once there is one (called with the lock held)."""
        self.lock.wait_for(lambda: self.ready or self.failure or self.closing, TAKE_TIMEOUT)
        if not self.ready:
            raise NetnsError(self.failure or "no network namespace was ready in time")
        netns = self.ready.pop(0)
        self.lock.notify_all()
        return netns

    def recycle(self, container_id: str, path: str, tenant: str) -> None:
        """Keep the namespace bound at ``path`` for ``tenant``'s next job, if there is room.

        Called once ``container_id``'s job has ended and its container is
        deleted: nothing runs in the namespace any more, and the job could not
        have changed its links, addresses, routes or sysctls (no CAP_NET_ADMIN,
        /proc/sys read-only). What it may have left (sockets in TIME_WAIT) is
        only ever seen by the same tenant. Saves making a namespace and the
        kernel's tearing one down: most of a job's network cost.
        """
        with self.lock:
            if self.closing or sum(map(len, self.recycled.values())) >= RECYCLED_MAX:
                return
            address = next((a for a, owner in self.owners.items() if owner == container_id),
                           None)
            if address is None:
                return
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return
            self.owners[address] = ""
            self.recycled.setdefault(tenant, []).append(Netns(fd, ipaddress.IPv4Address(address)))

    def release(self, container_id: str) -> None:
        """``container_id``'s job is over: its address may be given again (later)."""
        with self.lock:
            for address, owner in list(self.owners.items()):
                if owner == container_id:
                    del self.owners[address]

    def close(self) -> None:
        """Drop the ready namespaces, remove the firewall rules and the bridge, free the subnet."""
        with self.lock:
            self.closing = True
            self.lock.notify_all()
        if self.thread is not None:
            self.thread.join()
        for netns in [*self.ready, *(n for kept in self.recycled.values() for n in kept),
                      *(netns for netns, _ in self.reserved.values())]:
            os.close(netns.fd)
        self.ready.clear()
        self.recycled.clear()
        self.reserved.clear()
        if self.set_up:
            undos: list[Callable[[], None]] = [
                lambda: firewall.remove(self.subnet), self._delete_bridge]
            for undo in undos:
                try:
                    undo()
                except Exception as exc:  # stopping: say it, undo the rest
                    logger.warning("removing the job network %s: %s", self.subnet, exc)
        if self.claim is not None:
            self.claim.release()  # only now: another monitor may set the subnet up afresh

    # --- the thread's side

    def _run(self) -> None:
        try:
            from pyroute2 import IPRoute  # heavy: imported here, off the monitor's start
        except ImportError as exc:
            self._failed(f"cannot set up the job network: {exc} (pip install pyroute2)")
            return
        host_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with IPRoute() as host:
                self.set_up = True  # from here on, close() removes whatever exists
                try:
                    bridge = self._set_up_bridge(host)
                    firewall.install(self.subnet, self.network.jobs_range)
                except Exception as exc:  # reported to every take: nothing can run
                    self._failed(f"cannot set up the job network {self.subnet}: {exc}")
                    return
                self._keep_ready(IPRoute, host, host_fd, bridge)
        finally:
            os.close(host_fd)

    def _failed(self, problem: str) -> None:
        """Say ``problem`` to the takes waiting (and the monitor's log)."""
        with self.lock:
            self.failure = problem
            self.lock.notify_all()
        logger.error("%s", problem)

    def _keep_ready(self, iproute: type, host: object, host_fd: int, bridge: int) -> None:
        """Make namespaces whenever fewer than :data:`POOL_SIZE` are ready, until closing."""
        while True:
            with self.lock:
                self.lock.wait_for(lambda: self.closing or len(self.ready) < POOL_SIZE)
                if self.closing:
                    return
            address = None
            try:
                with self.lock:
                    address = self._allocate()
                fd = self._make(iproute, host, host_fd, bridge, address)
            except Exception as exc:  # logged, tried again
                with self.lock:
                    if address is not None:
                        self.owners.pop(int(address), None)
                self._failed(f"cannot make a network namespace: {exc}")
                with self.lock:
                    self.lock.wait_for(lambda: self.closing, RETRY_PAUSE)
                continue
            with self.lock:
                self.ready.append(Netns(fd, address))
                self.failure = None
                self.lock.notify_all()

    def _allocate(self) -> ipaddress.IPv4Address:
        """The next free address, going round the subnet (called with the lock held)."""
        addresses = job_addresses(self.subnet)
        for _ in range(len(addresses)):
            self.cursor = (self.cursor + 1) % len(addresses)
            candidate = addresses[self.cursor]
            if candidate not in self.owners:
                self.owners[candidate] = ""
                return ipaddress.IPv4Address(candidate)
        raise NetnsError(f"every address of {self.subnet} is taken")

    def _set_up_bridge(self, host: object) -> int:
        """Make (or adopt) the bridge with the gateway address; its interface index."""
        from pyroute2 import IPRoute

        assert isinstance(host, IPRoute)
        name = bridge_name(self.subnet)
        found = host.link_lookup(ifname=name)
        if not found:
            host.link("add", ifname=name, kind="bridge")
            found = host.link_lookup(ifname=name)
        index = int(found[0])
        _write_host_sysctl(f"ipv6/conf/{name}/disable_ipv6", "1")
        # The ports are isolated: two jobs of this node never meet below IP. The bridge
        # answers their ARP for each other (private-VLAN proxy ARP) and routes what they
        # send each other back out, through the firewall's FORWARD chain, which lets
        # only the peers it was told of (a workflow's job and its service) through; no
        # redirect tells them to go direct.
        _write_host_sysctl(f"ipv4/conf/{name}/proxy_arp", "1")
        _write_host_sysctl(f"ipv4/conf/{name}/proxy_arp_pvlan", "1")
        _write_host_sysctl(f"ipv4/conf/{name}/send_redirects", "0")
        # The bridge is the only one that answers there, so it answers at once: the
        # kernel's default holds each proxied reply back up to 0.8 s (proxy_delay, for
        # LANs where the real owner may answer first), and a job's first connection to
        # another job of this node waited for two of them (up to 3 s, its peer's too).
        _write_host_sysctl(f"ipv4/neigh/{name}/proxy_delay", "0")
        address = str(gateway(self.subnet))
        present = {attr.get("IFA_ADDRESS") for attr in host.get_addr(index=index)}
        if address not in present:
            host.addr("add", index=index, address=address, prefixlen=self.subnet.prefixlen)
        host.link("set", index=index, state="up")
        return index

    def _delete_bridge(self) -> None:
        from pyroute2 import IPRoute

        with IPRoute() as host:
            found = host.link_lookup(ifname=bridge_name(self.subnet))
            if found:
                host.link("del", index=found[0])

    def _make(self, iproute: type, host: object, host_fd: int, bridge: int,
              address: ipaddress.IPv4Address) -> int:
        """A new namespace with ``address`` on its ``eth0``, plugged into the bridge; its fd.

        Few netlink requests and no dumps (a dump of the node's links grows with
        its jobs): the veth is made from the node's side, already on the bridge
        and up, its peer put straight into the namespace as ``eth0``, the first
        link after ``lo`` there (index 2, asked for explicitly).
        """
        outside = veth_name(address)
        if _libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        fd = -1
        try:
            fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            _write_sysctl("ipv6/conf/all/disable_ipv6", "1")  # jobs get IPv4 only
            _write_sysctl("ipv6/conf/default/disable_ipv6", "1")
            inside = iproute()
        except BaseException:
            _enter(host_fd, "the node's namespace")
            if fd >= 0:
                os.close(fd)
            raise
        _enter(host_fd, "the node's namespace")
        try:
            with inside:
                host.link("add", ifname=outside, kind="veth", master=bridge,  # type: ignore[attr-defined]
                          peer={"ifname": "eth0", "index": ETH0_INDEX, "net_ns_fd": fd})
                index = host.link("get", ifname=outside)[0]["index"]  # type: ignore[attr-defined]
                host.brport("set", index=index, isolated=1)  # type: ignore[attr-defined]
                host.link("set", index=index, state="up")  # type: ignore[attr-defined]
                inside.link("set", index=LO_INDEX, state="up")
                inside.addr("add", index=ETH0_INDEX, address=str(address),
                            prefixlen=self.subnet.prefixlen)
                inside.link("set", index=ETH0_INDEX, state="up")
                inside.route("add", dst="0.0.0.0/0", gateway=str(gateway(self.subnet)))
        except BaseException:
            os.close(fd)  # the namespace ends, and its veth pair with it
            raise
        return fd


def _write_host_sysctl(name: str, value: str) -> None:
    with open(f"/proc/sys/net/{name}", "w", encoding="ascii") as handle:
        handle.write(value)
