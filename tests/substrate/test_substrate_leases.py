"""Leases on a declared 2 sockets x 2 NUMA x 8 cores node with GPUs on NUMA 0 and 2."""

from __future__ import annotations

import json
import random
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fuzz.errors import FuzzError
from fuzz.substrate.capacity.declared import parse_declared_inventory
from fuzz.substrate.capacity.inventory import MachineInventory
from fuzz.substrate.capacity.leases import (
    AFFINITIES,
    GPU,
    Lease,
    LeaseBook,
    LeaseExhausted,
    LeaseNotFound,
    LeaseRequest,
    LeaseRequestError,
    LeaseStateError,
)
from tests.support.declared import GiB, declared_node_yaml

NODE_YAML = declared_node_yaml()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def node() -> MachineInventory:
    return parse_declared_inventory(NODE_YAML, "inventory file t", (0, 1), GiB, "h", "x86_64")


@pytest.fixture
def book(node: MachineInventory) -> LeaseBook:
    return LeaseBook(node, None)


def _take(book: LeaseBook, cores: int = 0, affinity: str = "NONE", **kw: Any) -> Lease:
    return book.acquire(LeaseRequest(cores, affinity, **kw))


# --- packing -------------------------------------------------------------------------------


def test_numa_best_fit_prefers_one_domain_the_smallest_that_fits(book: LeaseBook) -> None:
    first = _take(book, 4, "NUMA")
    assert first.cpus == (0, 1, 2, 3) and first.numa_nodes == (0,)
    assert first.host_cpus == (0, 1)  # the declared CPUs run on the 2 real ones
    second = _take(book, 4, "NUMA")  # domain 0 has exactly 4 left: best fit
    assert second.cpus == (4, 5, 6, 7)
    third = _take(book, 6, "NUMA")
    assert third.numa_nodes == (1,)
    fourth = _take(book, 2, "NUMA")  # domain 1's 2 left beat the 8 of domains 2 and 3
    assert fourth.cpus == (14, 15)


def test_numa_spans_as_few_domains_as_possible(book: LeaseBook) -> None:
    _take(book, 3, "CORE")  # domain 0: 5 free
    assert _take(book, 7, "NUMA").cpus == tuple(range(8, 15))  # domain 1: 1 free
    lease = _take(book, 12, "NUMA")  # no domain holds 12: a largest one, then the best fit
    assert lease.numa_nodes == (0, 2)
    assert lease.cpus == (3, 4, 5, 6, *range(16, 24))
    big = _take(book, 9, "NUMA")  # domain 3 whole, then domain 0's last core over domain 1's
    assert big.cpus == (7, *range(24, 32))


def test_numa_prefers_a_domain_with_the_gpus_asked_for(book: LeaseBook) -> None:
    full = _take(book, 8, "CORE")  # domain 0
    _take(book, 4, "CORE")  # domain 1: 4 free (the best fit without GPUs)
    book.release(full.id)
    with_gpu = _take(book, 4, "NUMA", devices={GPU: 1})
    assert with_gpu.numa_nodes == (0,) and with_gpu.devices == {GPU: ("0",)}
    assert _take(book, 4, "NUMA").numa_nodes == (0,)  # 4 free in domains 0 and 1: lowest id
    assert _take(book, 4, "NUMA").numa_nodes == (1,)
    on_domain_2 = _take(book, 2, "NUMA", devices={GPU: 1})
    assert on_domain_2.numa_nodes == (2,) and on_domain_2.devices == {GPU: ("1",)}


def test_gpus_follow_the_lease_numa_domains(book: LeaseBook) -> None:
    _take(book, 16, "CORE")  # socket 0
    lease = _take(book, 2, "CORE", devices={GPU: 1})
    assert lease.numa_nodes == (2,)
    assert lease.devices == {GPU: ("1",)}  # GPU 1 sits on NUMA 2, GPU 0 on NUMA 0
    remote = _take(book, 1, "CORE", devices={GPU: 1})
    assert remote.devices == {GPU: ("0",)}


def test_socket_affinity_keeps_a_lease_in_one_socket(book: LeaseBook) -> None:
    assert {c // 16 for c in _take(book, 10, "SOCKET").cpus} == {0}
    second = _take(book, 10, "SOCKET")
    assert {c // 16 for c in second.cpus} == {1}
    assert second.numa_nodes == (2, 3)
    third = _take(book, 8, "SOCKET")  # 6 + 6 free: two sockets, all of the first
    assert third.cpus == (*range(10, 16), 26, 27)
    with pytest.raises(LeaseExhausted) as caught:
        _take(book, 5, "SOCKET")
    assert str(caught.value) == (
        "not enough free cores: asked 5, free 4 of 32 (SOCKET affinity: at most 4 in one socket)"
    )


@pytest.mark.parametrize("affinity", ["CORE", "NONE", "core", ""])
def test_core_and_none_take_any_free_cores(book: LeaseBook, affinity: str) -> None:
    first = _take(book, 3, affinity)
    book.release(_take(book, 2, affinity).id)
    assert first.cpus == (0, 1, 2)
    assert _take(book, 3, affinity).cpus == (3, 4, 5)
    assert first.affinity == (affinity.upper() or "NONE")


def test_memory_only_leases_and_memory_shortage(book: LeaseBook) -> None:
    lease = _take(book, 0, memory_bytes=56 * GiB)
    assert (lease.cpus, lease.host_cpus, lease.numa_nodes) == ((), (), ())
    assert lease.memory_bytes == 56 * GiB
    with pytest.raises(LeaseExhausted) as caught:
        _take(book, 1, memory_bytes=32 * GiB)
    assert str(caught.value) == "not enough memory: asked 32.0 GiB, free 8.0 GiB"
    assert _take(book, 1, memory_bytes=8 * GiB).memory_bytes == 8 * GiB


def test_exhaustion_messages_say_exactly_what_is_short(book: LeaseBook) -> None:
    _take(book, 28, "NONE", devices={GPU: 1})
    with pytest.raises(LeaseExhausted) as cores:
        _take(book, 6, "NUMA")
    assert str(cores.value) == (
        "not enough free cores: asked 6, free 4 of 32 (NUMA affinity: at most 4 in one domain)"
    )
    with pytest.raises(LeaseExhausted) as gpus:
        _take(book, 1, devices={GPU: 2})
    assert str(gpus.value) == "no free nvidia.com/gpu: asked 2, free 1"
    with pytest.raises(LeaseExhausted) as everything:
        _take(book, 5, "CORE", memory_bytes=65 * GiB, devices={GPU: 2})
    assert str(everything.value) == (
        "not enough free cores: asked 5, free 4 of 32; "
        "not enough memory: asked 65.0 GiB, free 64.0 GiB; "
        "no free nvidia.com/gpu: asked 2, free 1"
    )
    assert isinstance(everything.value, FuzzError)


def test_exclusive_takes_the_whole_node(book: LeaseBook, node: MachineInventory) -> None:
    whole = _take(book, 2, exclusive=True, devices={GPU: 1}, holder="wf/job")
    assert whole.cpus == tuple(range(32)) and whole.memory_bytes == node.memory_bytes
    assert whole.devices == {GPU: ("0",)} and whole.exclusive
    with pytest.raises(LeaseExhausted, match=rf"^node is held exclusively by lease {whole.id} "
                       r"\(holder wf/job\)$"):
        _take(book, 0, memory_bytes=1)
    book.release(whole.id)
    small = _take(book, 1)
    with pytest.raises(LeaseExhausted, match=r"^node is not free for an exclusive lease: 1 lease"):
        _take(book, 0, exclusive=True)
    book.release(small.id)
    with pytest.raises(LeaseExhausted, match="not enough free cores: asked 33, free 32 of 32"):
        _take(book, 33, exclusive=True)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (LeaseRequest(-1), "cores must be a non-negative integer, got -1"),
        (LeaseRequest(1, memory_bytes=-5), "memory_bytes must be a non-negative integer"),
        (LeaseRequest(1, "RACK"), "unknown affinity 'RACK': expected one of NONE, CORE,"),
        (LeaseRequest(1, devices={"amd.com/gpu": 1}), "unknown device kind 'amd.com/gpu'"),
        (LeaseRequest(1, devices={GPU: -1}), "nvidia.com/gpu must be a non-negative integer"),
        (LeaseRequest(1, ttl_seconds=0), "ttl_seconds must be a positive number, got 0"),
        (LeaseRequest(0), "a lease must ask for cores, memory, a device or exclusive"),
    ],
)
def test_invalid_requests(book: LeaseBook, request_: LeaseRequest, message: str) -> None:
    with pytest.raises(LeaseRequestError, match=f"^{message}".replace("(", r"\(")):
        book.acquire(request_)
    assert book.list() == []


# --- lifetime -------------------------------------------------------------------------------


def test_leases_expire_unless_renewed(node: MachineInventory) -> None:
    clock = FakeClock()
    book = LeaseBook(node, None, clock)
    lease = book.acquire(LeaseRequest(30, holder="orchestrator", ttl_seconds=10))
    assert (lease.created_at, lease.expires_at) == (clock.now, clock.now + 10)
    clock.now += 9
    renewed = book.renew(lease.id, 10)
    assert renewed.expires_at == clock.now + 10 and renewed.cpus == lease.cpus
    assert book.get(lease.id) == renewed
    clock.now += 9.5
    assert book.list() == [renewed]
    with pytest.raises(LeaseExhausted):
        book.acquire(LeaseRequest(3))
    clock.now += 0.5  # the holder stopped renewing: it is gone at expires_at
    assert book.get(lease.id) is None
    assert book.acquire(LeaseRequest(32, ttl_seconds=1)).cpus == tuple(range(32))
    with pytest.raises(LeaseNotFound, match=rf"^no lease '{lease.id}' on this node"):
        book.renew(lease.id)
    assert book.expire() == []
    clock.now += 1
    assert [gone.cpus for gone in book.expire()] == [tuple(range(32))]
    with pytest.raises(LeaseRequestError):
        book.renew("x", -1)


def test_release_is_idempotent(book: LeaseBook) -> None:
    lease = _take(book, 4)
    book.release(lease.id)
    book.release(lease.id)
    book.release("never-was")
    assert book.list() == [] and book.get(lease.id) is None


def test_leases_survive_a_restart_and_expire_while_down(
    tmp_path: Path, node: MachineInventory
) -> None:
    path = tmp_path / "leases.json"
    clock = FakeClock()
    book = LeaseBook(node, path, clock)
    long = book.acquire(LeaseRequest(4, "NUMA", 2 * GiB, {GPU: 1}, holder="a", ttl_seconds=100))
    short = book.acquire(LeaseRequest(2, holder="b", ttl_seconds=10))
    gone = book.acquire(LeaseRequest(1))
    book.release(gone.id)
    again = LeaseBook(node, path, clock)
    assert again.list() == [long, short]
    clock.now += 50  # the agent was down while `short` ran out
    later = LeaseBook(node, path, clock)
    assert later.list() == [long]
    assert [r["id"] for r in json.loads(path.read_text())["leases"]] == [long.id]
    assert set(later.acquire(LeaseRequest(28)).cpus).isdisjoint(long.cpus)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not valid JSON"),
        ('{"version": 9, "leases": []}', "is not a version 1 leases file"),
        ('{"version": 1, "leases": [{"id": 3}]}', "lease #0: "),
    ],
)
def test_a_bad_leases_file_is_refused(
    tmp_path: Path, node: MachineInventory, text: str, message: str
) -> None:
    path = tmp_path / "leases.json"
    path.write_text(text)
    with pytest.raises(LeaseStateError, match=message):
        LeaseBook(node, path)


# --- concurrency -----------------------------------------------------------------------------

THREADS = 32
CYCLES = 40


def _overcommit(node: MachineInventory, leases: Iterable[Lease]) -> str | None:
    """Say how ``leases`` overcommit ``node``, or None."""
    held = list(leases)
    cpus = [cpu for lease in held for cpu in lease.cpus]
    gpus = [gpu for lease in held for gpu in lease.devices.get(GPU, ())]
    if len(cpus) != len(set(cpus)):
        return f"CPU granted twice: {sorted(cpus)}"
    if len(gpus) != len(set(gpus)):
        return f"GPU granted twice: {gpus}"
    if sum(lease.memory_bytes for lease in held) > node.memory_bytes:
        return "memory overcommitted"
    if any(lease.exclusive for lease in held) and len(held) > 1:
        return "an exclusive lease shares the node"
    return None


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make threads switch far more often than usual, to shake out races."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("fast_switching")
def test_many_threads_never_overcommit(tmp_path: Path, node: MachineInventory) -> None:
    path = tmp_path / "leases.json"
    book = LeaseBook(node, path)
    held: dict[str, Lease] = {}  # granted and not yet released, as the holders see it
    guard = threading.Lock()
    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    start = threading.Barrier(THREADS)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(CYCLES):
            request = LeaseRequest(
                cores=rng.randint(1, 12),
                affinity=rng.choice(AFFINITIES),
                memory_bytes=rng.choice((0, 4 * GiB, 16 * GiB)),
                devices={GPU: rng.choice((0, 0, 1))},
                exclusive=rng.random() < 0.02,
                holder=f"t{seed}",
            )
            try:
                lease = book.acquire(request)
            except LeaseExhausted:
                with guard:
                    outcomes["exhausted"] += 1
                continue
            with guard:
                outcomes["granted"] += 1
                held[lease.id] = lease
                problem = _overcommit(node, held.values())
                if problem:
                    problems.append(problem)
            problem = _overcommit(node, book.list())  # the book's own snapshot
            if problem:
                with guard:
                    problems.append(problem)
            with guard:
                del held[lease.id]
            book.release(lease.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
    assert outcomes["granted"] + outcomes["exhausted"] == THREADS * CYCLES
    assert outcomes["granted"] > THREADS and outcomes["exhausted"] > THREADS  # real contention
    assert book.list() == []
    assert json.loads(path.read_text())["leases"] == []
