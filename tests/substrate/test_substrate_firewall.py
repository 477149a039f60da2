"""A multinode rank's peer rules in the node's real iptables: all of them go with it.

The chain is a test subnet's own, near the end of the jobs range and claimed as a
monitor claims its subnet (fuzz.substrate.monitor.subnetclaim): a monitor of a test
running beside these passes it over instead of having its chain wiped by the
fixture's ``install``, and these tests, run side by side, take one each (they
shared one before: one's ``remove`` could take the other's rules). Its rules name a
bridge that does not exist, so no packet ever meets them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fuzz.substrate.monitor import firewall
from fuzz.substrate.monitor.jobnet import DEFAULT_JOBS_RANGE, chain_name
from fuzz.substrate.monitor.subnetclaim import try_claim

JOBS_RANGE = ipaddress.IPv4Network(DEFAULT_JOBS_RANGE)
# the jobs range's last /24s but one: the tests running side by side take one each
TEST_SUBNETS = [ipaddress.IPv4Network(f"10.207.{third}.0/24") for third in range(254, 238, -1)]
ADDRESS = "10.207.254.2"
PEERS = [f"10.203.{node}.2" for node in range(1, 8)]  # 7 ranks on other nodes


def _rules_of(container_id: str) -> list[str]:
    dump = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True,
                          check=True).stdout
    return [line for line in dump.splitlines() if f"fuzz:{container_id}" in line]


@dataclass(frozen=True)
class Chain:
    """A test subnet's firewall chain, installed."""

    subnet: ipaddress.IPv4Network
    name: str


@contextlib.contextmanager
def _installed() -> Iterator[Chain]:
    """The chain of the first test subnet that no monitor or other test holds, claimed
    and installed; removed and let go afterwards."""
    for subnet in TEST_SUBNETS:
        held = try_claim(subnet)
        if held is not None:
            break
    else:
        pytest.fail(f"every test subnet from {TEST_SUBNETS[0]} down is held by another "
                    "container monitor or test on this node")
    try:
        firewall.install(subnet, JOBS_RANGE)
        try:
            yield Chain(subnet, chain_name(subnet))
        finally:
            firewall.remove(subnet)
    finally:
        held.release()


@pytest.fixture
def chain() -> Iterator[Chain]:
    """A test subnet's firewall chain, installed; removed afterwards."""
    with _installed() as installed:
        yield installed


def test_a_ranks_peer_rules_all_go_when_it_is_forgotten(chain: Chain) -> None:
    """Two rules per peer (both ways) while the rank lives; none once it is forgotten."""
    rank = f"t-fw-{uuid.uuid4().hex[:8]}"
    firewall.allow_peers(chain.subnet, JOBS_RANGE, ADDRESS, PEERS, rank)
    assert len(_rules_of(rank)) == 2 * len(PEERS)
    firewall.forget_peers(chain.subnet, JOBS_RANGE, ADDRESS, PEERS, rank)
    assert _rules_of(rank) == [], "a peer rule outlived its rank"


def test_rules_already_gone_do_not_keep_the_others(chain: Chain) -> None:
    """A rule removed by someone else first (an admin's flush of one rule): the rank's
    other rules still all go, and another rank's rules stay."""
    rank, other = f"t-fw-{uuid.uuid4().hex[:8]}", f"t-fw-{uuid.uuid4().hex[:8]}"
    firewall.allow_peers(chain.subnet, JOBS_RANGE, ADDRESS, PEERS, rank)
    firewall.allow_peers(chain.subnet, JOBS_RANGE, "10.207.254.3", PEERS[:2], other)
    subprocess.run(["iptables", "-w", "-t", "filter", "-D", chain.name, "-s", ADDRESS,
                    "-d", PEERS[3], "-m", "comment", "--comment", f"fuzz:{rank}", "-j", "ACCEPT"],
                   check=True)
    firewall.forget_peers(chain.subnet, JOBS_RANGE, ADDRESS, PEERS, rank)
    assert _rules_of(rank) == [], "a peer rule outlived its rank"
    assert len(_rules_of(other)) == 4, "another rank's rules went too"
    firewall.forget_peers(chain.subnet, JOBS_RANGE, "10.207.254.3", PEERS[:2], other)
    assert _rules_of(other) == []


def _misplaced(chain: str, rank: str, expected: int) -> str:
    """Why ``rank``'s rules are not ``expected`` rules right after the chain's first rule
    (replies of connections it let through) and above every DROP ("" when they are)."""
    dump = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True,
                          check=True).stdout
    rules = [line for line in dump.splitlines() if line.startswith(f"-A {chain} ")]
    mine = [index for index, line in enumerate(rules) if f"fuzz:{rank}" in line]
    drops = [index for index, line in enumerate(rules) if line.endswith("-j DROP")]
    if not rules or "ESTABLISHED" not in rules[0] or mine != list(range(1, 1 + expected)) \
            or not drops or min(drops) < 1 + expected:
        return f"{rank}'s rules at {mine}, the drops at {drops} of {len(rules)} in {chain}"
    return ""


def test_peer_rules_sit_between_the_replies_rule_and_the_drops(chain: Chain) -> None:
    """A rank's rules come after the chain's first rule (replies of connections it let
    through) and before every DROP: below a DROP they would let nothing through."""
    rank = f"t-fw-{uuid.uuid4().hex[:8]}"
    firewall.allow_peers(chain.subnet, JOBS_RANGE, ADDRESS, PEERS, rank)
    try:
        assert _misplaced(chain.name, rank, 2 * len(PEERS)) == ""
    finally:
        firewall.forget_peers(chain.subnet, JOBS_RANGE, ADDRESS, PEERS, rank)


def test_two_nodes_changing_their_chains_side_by_side_lose_nothing(chain: Chain) -> None:
    """Two nodes' monitors (two chains) adding and removing their ranks' rules at the same
    moment, each as one iptables-restore transaction: nf_tables refuses a transaction
    begun on a ruleset another one has changed meanwhile, and iptables-restore then
    starts it again on the new ruleset. Every batch lands whole, in its place, and its
    removal takes it all."""
    problems: list[str] = []

    def churn(side: Chain, address: str) -> None:
        for round_number in range(15):
            rank = f"t-race-{uuid.uuid4().hex[:8]}-{round_number}"
            firewall.allow_peers(side.subnet, JOBS_RANGE, address, PEERS, rank)
            problems.append(_misplaced(side.name, rank, 2 * len(PEERS)))
            firewall.forget_peers(side.subnet, JOBS_RANGE, address, PEERS, rank)
            if _rules_of(rank):
                problems.append(f"{rank}'s rules outlived it")

    with _installed() as other:
        sides = [threading.Thread(target=churn, args=(chain, ADDRESS)),
                 threading.Thread(target=churn, args=(other, "10.207.253.2"))]
        for side in sides:
            side.start()
        for side in sides:
            side.join()
    assert [problem for problem in problems if problem] == []
    assert len(problems) == 30
