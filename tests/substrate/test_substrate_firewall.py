"""A multinode rank's peer rules in the node's real iptables: all of them go with it.

The chain is a test subnet's own (the jobs range's last /24, which no monitor of
these tests derives while the chain exists: it is removed afterwards); its rules
name a bridge that does not exist, so no packet ever meets them.
"""

from __future__ import annotations

import ipaddress
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from fuzz.substrate.monitor import firewall
from fuzz.substrate.monitor.jobnet import DEFAULT_JOBS_RANGE, chain_name

JOBS_RANGE = ipaddress.IPv4Network(DEFAULT_JOBS_RANGE)
SUBNET = ipaddress.IPv4Network("10.207.254.0/24")
ADDRESS = "10.207.254.2"
PEERS = [f"10.203.{node}.2" for node in range(1, 8)]  # 7 ranks on other nodes


def _rules_of(container_id: str) -> list[str]:
    dump = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True,
                          check=True).stdout
    return [line for line in dump.splitlines() if f"fuzz:{container_id}" in line]


@pytest.fixture
def chain() -> Iterator[str]:
    """The test subnet's firewall chain, installed; removed afterwards."""
    firewall.install(SUBNET, JOBS_RANGE)
    try:
        yield chain_name(SUBNET)
    finally:
        firewall.remove(SUBNET)


def test_a_ranks_peer_rules_all_go_when_it_is_forgotten(chain: str) -> None:
    """Two rules per peer (both ways) while the rank lives; none once it is forgotten."""
    rank = f"t-fw-{uuid.uuid4().hex[:8]}"
    firewall.allow_peers(SUBNET, JOBS_RANGE, ADDRESS, PEERS, rank)
    assert len(_rules_of(rank)) == 2 * len(PEERS)
    firewall.forget_peers(SUBNET, JOBS_RANGE, ADDRESS, PEERS, rank)
    assert _rules_of(rank) == [], "a peer rule outlived its rank"


def test_rules_already_gone_do_not_keep_the_others(chain: str) -> None:
    """A rule removed by someone else first (an admin's flush of one rule): the rank's
    other rules still all go, and another rank's rules stay."""
    rank, other = f"t-fw-{uuid.uuid4().hex[:8]}", f"t-fw-{uuid.uuid4().hex[:8]}"
    firewall.allow_peers(SUBNET, JOBS_RANGE, ADDRESS, PEERS, rank)
    firewall.allow_peers(SUBNET, JOBS_RANGE, "10.207.254.3", PEERS[:2], other)
    subprocess.run(["iptables", "-w", "-t", "filter", "-D", chain, "-s", ADDRESS, "-d", PEERS[3],
                    "-m", "comment", "--comment", f"fuzz:{rank}", "-j", "ACCEPT"], check=True)
    firewall.forget_peers(SUBNET, JOBS_RANGE, ADDRESS, PEERS, rank)
    assert _rules_of(rank) == [], "a peer rule outlived its rank"
    assert len(_rules_of(other)) == 4, "another rank's rules went too"
    firewall.forget_peers(SUBNET, JOBS_RANGE, "10.207.254.3", PEERS[:2], other)
    assert _rules_of(other) == []


def test_peer_rules_sit_between_the_replies_rule_and_the_drops(chain: str) -> None:
    """A rank's rules come after the chain's first rule (replies of connections it let
    through) and before every DROP: below a DROP they would let nothing through."""
    rank = f"t-fw-{uuid.uuid4().hex[:8]}"
    firewall.allow_peers(SUBNET, JOBS_RANGE, ADDRESS, PEERS, rank)
    try:
        dump = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True,
                              text=True, check=True).stdout
        rules = [line for line in dump.splitlines() if line.startswith(f"-A {chain} ")]
        peers = [index for index, line in enumerate(rules) if f"fuzz:{rank}" in line]
        drops = [index for index, line in enumerate(rules) if line.endswith("-j DROP")]
        assert "ESTABLISHED" in rules[0]
        assert peers == list(range(1, 1 + 2 * len(PEERS)))
        assert drops and min(drops) > max(peers)
    finally:
        firewall.forget_peers(SUBNET, JOBS_RANGE, ADDRESS, PEERS, rank)
