"""The firewall of one node's job bridge: iptables chains of fuzz's own.

Installed by the container monitor when it starts and removed when it stops
(the monitor, not the agent, owns the jobs: agent restarts leave both alone);
installing removes what a previous monitor left first, so it is idempotent.
For a bridge ``B`` of subnet ``S`` in the jobs range ``R``:

``filter INPUT``   ``-i B -j DROP``: a job reaches no address or port of the node
                   itself (the agent, the orchestrator, anything listening there)
``filter FORWARD`` ``-i B`` and ``-o B`` jump to chain ``FUZZ-B``:

                   1. replies of connections already allowed pass
                   2. ``ACCEPT`` rules between a job and its peers: its multinode
                      job's other ranks, its workflow's services
                      (:func:`allow_peers`, tagged with the container's id)
                   3. ``-i B -d 169.254.0.0/16 -j DROP``: no instance metadata
                   4. ``-i B -d R -j DROP``: no other job, on this node or another
                   5. ``-i B -j ACCEPT``: everything else goes out
                   6. ``-o B -j DROP``: nothing comes in uninvited
``nat POSTROUTING`` ``-s S -j FUZZ-B``: masquerade, except towards the jobs range
                   (peers see each other's real addresses)

Shelling out to ``iptables`` is fine here: it happens when the monitor starts
and stops, and twice per container with peers (a multinode job's, a job of a
workflow with services: one ``iptables-restore`` adds its rules, one removes
them), never for other starts.
Jobs on one bridge are also kept apart below IP (the veths are isolated bridge
ports), so the rules hold whether or not the kernel filters bridged traffic.
"""

from __future__ import annotations

import ipaddress
import subprocess

from fuzz.substrate.monitor.jobnet import METADATA_RANGE, bridge_name, chain_name

IPTABLES = "iptables"
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
COMMENT_PREFIX = "fuzz:"


class FirewallError(Exception):
    """iptables refused a rule; the message is one line."""


def _iptables(*args: str, check: bool = True) -> bool:
    """Run ``iptables -w ARGS``; True when it succeeded (FirewallError if ``check``)."""
    try:
        done = subprocess.run([IPTABLES, "-w", *args], capture_output=True, text=True,
                              check=False)
    except OSError as exc:
        if not check:
            return False
        raise FirewallError(f"cannot run {IPTABLES}: {exc.strerror}") from exc
    if done.returncode != 0 and check:
        detail = " ".join((done.stderr or done.stdout).split()) or f"exit {done.returncode}"
        raise FirewallError(f"iptables {' '.join(args)}: {detail}")
    return done.returncode == 0


def _hooks(subnet: ipaddress.IPv4Network) -> list[tuple[str, ...]]:
    """The rules in the built-in chains (table, chain, rule...), as inserted."""
    bridge, chain = bridge_name(subnet), chain_name(subnet)
    return [
        ("filter", "INPUT", "-i", bridge, "-j", "DROP"),
        ("filter", "FORWARD", "-i", bridge, "-j", chain),
        ("filter", "FORWARD", "-o", bridge, "-j", chain),
        ("nat", "POSTROUTING", "-s", str(subnet), "-j", chain),
    ]


def _chain_rules(subnet: ipaddress.IPv4Network, jobs_range: ipaddress.IPv4Network
                 ) -> dict[str, list[tuple[str, ...]]]:
    bridge = bridge_name(subnet)
    return {
        "filter": [
            ("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"),
            ("-i", bridge, "-d", METADATA_RANGE, "-j", "DROP"),
            ("-i", bridge, "-d", str(jobs_range), "-j", "DROP"),
            ("-i", bridge, "-j", "ACCEPT"),
            ("-o", bridge, "-j", "DROP"),
        ],
        "nat": [
            ("-d", str(jobs_range), "-j", "RETURN"),
            ("-j", "MASQUERADE"),
        ],
    }


def install(subnet: ipaddress.IPv4Network, jobs_range: ipaddress.IPv4Network) -> None:
    """Put the bridge's rules in place (after removing any left behind) and turn on forwarding."""
    remove(subnet)
    chain = chain_name(subnet)
    for table, rules in _chain_rules(subnet, jobs_range).items():
        _iptables("-t", table, "-N", chain)
        for rule in rules:
            _iptables("-t", table, "-A", chain, *rule)
    for table, builtin, *hook in _hooks(subnet):
        _iptables("-t", table, "-I", builtin, "1", *hook)
    with open(IP_FORWARD, "w", encoding="ascii") as handle:
        handle.write("1\n")


def remove(subnet: ipaddress.IPv4Network) -> None:
    """Remove the bridge's rules and chains (whatever of them exists)."""
    chain = chain_name(subnet)
    for table, builtin, *hook in _hooks(subnet):
        while _iptables("-t", table, "-D", builtin, *hook, check=False):
            pass
    for table in ("filter", "nat"):
        _iptables("-t", table, "-F", chain, check=False)
        _iptables("-t", table, "-X", chain, check=False)


JOBS_PEER = "jobs"  # a peer entry's host that means: the jobs of the job network's other nodes
PROTOCOLS = ("tcp", "udp")


def parse_peer(entry: str) -> tuple[str, str, int]:
    """A container's peer entry as (host, protocol, port); ValueError when it is none.

    ``ADDRESS``: it and the container at that job network address reach each other,
    any port, both ways (a multinode job's ranks): (ADDRESS, "", 0).
    ``ADDRESS:PROTO/PORT``: the container may open connections to that port of that
    address (a service of its workflow); the answers come back as replies.
    ``jobs:PROTO/PORT`` (or ``jobs``: any port): the container's own port may be
    reached from the jobs of the job network's other nodes (a service), each node's
    own chain deciding which of its jobs may send (rule 4 and their peer entries).
    """
    host, _, port_part = entry.partition(":")
    if host != JOBS_PEER:
        ipaddress.IPv4Address(host)  # ValueError when it is no address
    if not port_part:
        return host, "", 0
    protocol, _, number = port_part.partition("/")
    if protocol not in PROTOCOLS or not number.isdigit() or not 0 < int(number) < 65536:
        raise ValueError(f"{port_part!r} is not PROTO/PORT (tcp or udp, 1-65535)")
    return host, protocol, int(number)


def _peer_rules(subnet: ipaddress.IPv4Network, jobs_range: ipaddress.IPv4Network,
                address: str, peers: list[str], container_id: str) -> list[tuple[str, ...]]:
    tag = ("-m", "comment", "--comment", f"{COMMENT_PREFIX}{container_id}")
    rules: list[tuple[str, ...]] = []
    for peer in peers:
        host, protocol, port = parse_peer(peer)
        ports = ("-p", protocol, "--dport", str(port)) if protocol else ()
        if host == JOBS_PEER:
            rules.append(("!", "-i", bridge_name(subnet), "-s", str(jobs_range), "-d", address,
                          *ports, *tag, "-j", "ACCEPT"))
        elif protocol:
            rules.append(("-s", address, "-d", host, *ports, *tag, "-j", "ACCEPT"))
        else:
            rules.append(("-s", address, "-d", host, *tag, "-j", "ACCEPT"))
            rules.append(("-s", host, "-d", address, *tag, "-j", "ACCEPT"))
    return rules


def allow_peers(subnet: ipaddress.IPv4Network, jobs_range: ipaddress.IPv4Network,
                address: str, peers: list[str], container_id: str) -> None:
    """Let the job at ``address`` and its ``peers`` reach each other as their entries
    say (:func:`parse_peer`): multinode ranks, its workflow's services.

    All of them in one ``iptables-restore --noflush`` transaction (see :func:`forget_peers`),
    each inserted as the chain's second rule; one ``iptables`` run each when the batch fails.
    """
    chain = chain_name(subnet)
    rules = _peer_rules(subnet, jobs_range, address, peers, container_id)
    if rules and _iptables_restore(_batch("-I", chain, rules, "2")):
        return
    for rule in rules:
        _iptables("-t", "filter", "-I", chain, "2", *rule)


def forget_peers(subnet: ipaddress.IPv4Network, jobs_range: ipaddress.IPv4Network,
                 address: str, peers: list[str], container_id: str) -> None:
    """Remove what :func:`allow_peers` added for ``container_id`` (a no-op if it is gone).

    All of them in one ``iptables-restore --noflush`` (one transaction): one ``iptables``
    run per rule took 1.5 s for a rank of an 8-node job while its node's other monitors
    did the same (each run reads the whole ruleset and commits on its own). The batch
    is all or nothing, so when it fails (a rule was already gone) each rule is removed
    on its own.
    """
    chain = chain_name(subnet)
    rules = _peer_rules(subnet, jobs_range, address, peers, container_id)
    if rules and _iptables_restore(_batch("-D", chain, rules)):
        return
    for rule in rules:
        _iptables("-t", "filter", "-D", chain, *rule, check=False)


def _batch(command: str, chain: str, rules: list[tuple[str, ...]], *where: str) -> str:
    """``iptables-restore`` input doing ``command`` (``-I``, ``-D``) of ``rules`` in ``chain``
    of the filter table."""
    lines = "".join(f"{' '.join((command, chain, *where, *rule))}\n" for rule in rules)
    return f"*filter\n{lines}COMMIT\n"


def _iptables_restore(text: str) -> bool:
    """Apply ``text`` (iptables-save's format) on top of the rules; True when it did.

    The words of :func:`_peer_rules` need no quoting there: addresses, ports, options
    and a container id (letters, digits, ``.``, ``_``, ``-``).
    """
    try:
        done = subprocess.run([f"{IPTABLES}-restore", "-w", "--noflush"], input=text,
                              capture_output=True, text=True, check=False)
    except OSError:
        return False
    return done.returncode == 0
