"""The leadership lease and the store's fence, on a real PostgreSQL (two replicas'
leases and stores on one database; expiry by the database's clock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from fuzz.orchestrate.leadership import FencedError, LeaderLease, fence_check
from fuzz.orchestrate.records import NodeRecord
from fuzz.orchestrate.store import PostgresTarget, Store, StoreError
from tests.support.orchestratorutil import wait_until
from tests.support.servers import Postgres

TTL = 1.0


@pytest.fixture
def leases(pg_target: PostgresTarget) -> Iterator[tuple[LeaderLease, LeaderLease]]:
    """Two replicas' leases on one fresh database."""
    first = LeaderLease(pg_target, "inst", "replica-a", "127.0.0.1:1", TTL)
    second = LeaderLease(pg_target, "inst", "replica-b", "127.0.0.1:2", TTL)
    yield first, second
    first.close()
    second.close()


def _node(name: str) -> NodeRecord:
    return NodeRecord(name=name, endpoint="127.0.0.1:9", agent_token=b"t", cores=1,
                      memory_bytes=1)


def test_one_replica_leads_until_its_lease_expires(
        leases: tuple[LeaderLease, LeaderLease]) -> None:
    first, second = leases
    assert first.leader() is None
    assert first.try_take() and first.epoch == 1 and first.held()
    assert not second.try_take()  # live: nobody else takes it
    leader = second.leader()
    assert leader is not None and (leader.holder, leader.address, leader.epoch, leader.live) \
        == ("replica-a", "127.0.0.1:1", 1, True)
    assert first.renew()
    wait_until("the lease to lapse by its own clock", lambda: not first.held(), timeout=5)
    wait_until("the second replica to take the lease", second.try_take, timeout=5)
    assert second.epoch == 2  # the fencing token only grows
    assert not first.renew() and not first.held()  # the old leader cannot come back
    assert not first.try_take()


def test_a_replica_restarted_on_its_data_dir_takes_its_own_lease_back(
        pg_target: PostgresTarget) -> None:
    before = LeaderLease(pg_target, "inst", "replica-a", "127.0.0.1:1", 30.0)
    assert before.try_take()
    before.close()  # killed: the row still says it is live for 30 s
    after = LeaderLease(pg_target, "inst", "replica-a", "127.0.0.1:1", 30.0)
    try:
        assert after.try_take() and after.epoch == 2  # a new epoch fences the old process
    finally:
        after.close()


def test_a_new_replica_takes_the_cluster_instance_and_another_is_refused(
        pg_target: PostgresTarget) -> None:
    LeaderLease(pg_target, "inst", "replica-a", "127.0.0.1:1", TTL).close()
    joining = LeaderLease(pg_target, None, "replica-b", "127.0.0.1:2", TTL)
    joining.close()
    assert joining.instance == "inst"
    with pytest.raises(StoreError, match=r"belongs to the cluster instance inst.*instance-id "
                       r"is other"):
        LeaderLease(pg_target, "other", "replica-c", "127.0.0.1:3", TTL)


def test_the_fenced_store_of_an_old_leader_writes_nothing(
        pg_target: PostgresTarget, leases: tuple[LeaderLease, LeaderLease]) -> None:
    first, second = leases
    old, new = Store(pg_target), Store(pg_target)
    fenced: list[FencedError] = []
    try:
        assert first.try_take()
        old.fence(first.epoch, fenced.append)
        old.save(_node("a"))  # the leader writes
        wait_until("the second replica to take the lease", second.try_take, timeout=5)
        new.fence(second.epoch, fenced.append)
        with pytest.raises(FencedError, match="epoch 1"):
            old.save(_node("b"))
        with pytest.raises(FencedError):
            old.delete(_node("a"))
        assert len(fenced) == 2
        assert [node.name for node in new.load(NodeRecord)] == ["a"]  # nothing written
        new.save(_node("c"))  # the new leader writes
        assert [node.name for node in old.load(NodeRecord, order_by="name")] == ["a", "c"]
    finally:
        old.close()
        new.close()


def test_a_takeover_waits_for_the_old_leaders_write_in_flight(
        postgres: Postgres, pg_target: PostgresTarget,
        leases: tuple[LeaderLease, LeaderLease]) -> None:
    """The fence's row lock orders them: the old epoch's write commits before the
    new epoch exists, never after."""
    first, second = leases
    assert first.try_take()
    database = pg_target.url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.conninfo, dbname=database, autocommit=True) as db:
        with db.transaction():  # the old leader's write transaction, in flight
            fence_check(db, first.epoch)
            time.sleep(TTL * 1.5)  # its lease expires meanwhile
            taker = threading.Thread(target=second.try_take)
            taker.start()
            taker.join(TTL)
            assert taker.is_alive()  # the takeover waits for the write's row lock
        taker.join(10)
    assert second.epoch == 2
