"""The elastic loop's pure decision, in memory with a fake clock."""

from __future__ import annotations

from fuzz.plugin.provider import Offering
from fuzz.resources import ResourceRequest
from fuzz.scheduler.elastic import Member, MemberTimes, PoolRules, decide
from fuzz.scheduler.offerings import QueuedJob

GIB = 1024**3
SMALL = Offering("m5.large", 2, 8 * GIB, price_per_hour=0.10)
BIG = Offering("m5.xlarge", 4, 16 * GIB, price_per_hour=0.19)
POOL = PoolRules("aws", [SMALL, BIG], min=0, max=3, idle_ttl=30, boot_timeout=60,
                 boot_retries=2)


def job(key: str, cores: int) -> QueuedJob:
    return QueuedJob(key, ResourceRequest(cores=cores, memory_bytes=GIB))


def test_jobs_add_the_cheapest_fitting_members_at_the_lowest_free_indexes() -> None:
    members = {"aws": [Member("pool.aws.node[1]", "m5.xlarge", 1, joined=True, busy=True)]}
    times = {"pool.aws.node[1]": MemberTimes(1, 0.0)}
    decision = decide([POOL], members, times, [job("w/a", 3), job("w/b", 2), job("w/c", 64)],
                      now=10.0)
    pool = decision.pools["aws"]
    assert set(pool.membership) == {f"pool.aws.node[{i}]" for i in range(3)}
    assert sorted(pool.membership.values()) == ["m5.large", "m5.xlarge", "m5.xlarge"], (
        "3 cores on an xlarge, 2 on a large: cheaper than one xlarge more")
    assert set(decision.choice.unfit) == {"w/c"}
    assert "needs 64 cores" in decision.choice.unfit["w/c"]


def test_members_not_joined_are_filled_before_anything_is_added() -> None:
    members = {"aws": [Member("pool.aws.node[0]", "m5.xlarge", 1)]}
    decision = decide([POOL], members, {}, [job("w/a", 3)], now=5.0)
    assert decision.pools["aws"].membership == {"pool.aws.node[0]": "m5.xlarge"}
    assert decision.choice.placements == {"w/a": ("pool.aws.node[0]",)}
    assert decision.times["pool.aws.node[0]"] == MemberTimes(1, 5.0)


def test_a_member_that_does_not_join_is_replaced_then_the_pool_fails() -> None:
    member = Member("pool.aws.node[0]", "m5.large", 1)
    times = {member.address: MemberTimes(1, 0.0)}
    early = decide([POOL], {"aws": [member]}, times, [], now=59.0)
    assert early.pools["aws"].replace == ()
    late = decide([POOL], {"aws": [member]}, times, [], now=61.0)
    assert late.pools["aws"].replace == (member.address,)
    assert late.times[member.address] == MemberTimes(1, 61.0, replacements=1)
    second = Member(member.address, "m5.large", 2)
    again = decide([POOL], {"aws": [second]}, late.times, [], now=100.0)
    assert again.times[member.address] == MemberTimes(2, 100.0, replacements=1), (
        "a new generation starts its own boot clock and keeps the count")
    exhausted = {member.address: MemberTimes(3, 0.0, replacements=2)}
    third = Member(member.address, "m5.large", 3)
    failed = decide([POOL], {"aws": [third]}, exhausted, [job("w/a", 1)], now=61.0)
    pool = failed.pools["aws"]
    assert pool.membership == {} and pool.replace == ()
    assert pool.failing == ("pool aws: node pool.aws.node[0] did not join within 60s "
                            "after 2 replacement(s)")
    failing = PoolRules(**{**POOL.__dict__, "failing": pool.failing})
    stuck = decide([failing], {"aws": []}, {}, [job("w/a", 1)], now=62.0)
    assert stuck.pools["aws"].membership == {}, "a failing pool does not grow"
    assert "w/a" in stuck.choice.deferred


def test_idle_members_drain_then_go_keeping_min_and_standby() -> None:
    pool = PoolRules("aws", [SMALL], min=1, max=4, standby=1, idle_ttl=30)
    members = [Member(f"pool.aws.node[{i}]", "m5.large", 1, joined=True) for i in range(4)]
    members[3] = Member("pool.aws.node[3]", "m5.large", 1, joined=True, busy=True)
    first = decide([pool], {"aws": members}, {}, [], now=0.0)
    assert first.pools["aws"].drain == ()
    assert {a: t.idle_since for a, t in first.times.items()} == {
        "pool.aws.node[0]": 0.0, "pool.aws.node[1]": 0.0, "pool.aws.node[2]": 0.0,
        "pool.aws.node[3]": 0.0}
    idle_times = {a: MemberTimes(1, 0.0, idle_since=1.0 + i) for i, a in
                  enumerate(m.address for m in members[:3])}
    later = decide([pool], {"aws": members}, idle_times, [], now=40.0)
    assert later.pools["aws"].drain == ("pool.aws.node[0]", "pool.aws.node[1]"), (
        "one idle node stays for standby")
    drained = [Member(m.address, m.offering, 1, joined=True, draining=m.address in
                      later.pools["aws"].drain, busy=m.busy) for m in members]
    gone = decide([pool], {"aws": drained}, idle_times, [], now=41.0)
    assert gone.pools["aws"].released == ("pool.aws.node[0]", "pool.aws.node[1]")
    assert set(gone.pools["aws"].membership) == {"pool.aws.node[2]", "pool.aws.node[3]"}


def test_standby_keeps_idle_members_warm() -> None:
    pool = PoolRules("aws", [SMALL], min=0, max=2, standby=1)
    decision = decide([pool], {"aws": []}, {}, [], now=0.0)
    assert decision.pools["aws"].membership == {"pool.aws.node[0]": "m5.large"}
