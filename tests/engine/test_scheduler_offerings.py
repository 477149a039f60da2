"""choose_offerings: the cheapest nodes that hold the queued jobs, within limits, with reasons.

Every choice is checked for feasibility by :func:`_check` (sizes, architecture,
labels, distinct nodes for multinode jobs, exclusive nodes, pool limits, the
price); small random problems are compared with the optimum found by brute force.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence

import pytest

from fuzz.plugin.provider import Offering
from fuzz.resources import GPU_DEVICE, NodeCapacity, ResourceRequest
from fuzz.scheduler.offerings import (
    BootingNode,
    ElasticPool,
    OfferingChoice,
    QueuedJob,
    Quota,
    choose_offerings,
    normal_architecture,
)

GIB = 1 << 30


def _offering(name: str, cores: int, memory_gib: int, price: float, gpus: int = 0,
              architecture: str = "x86_64") -> Offering:
    return Offering(name, cores, memory_gib * GIB, gpus=gpus, architecture=architecture,
                    price_per_hour=price)


def _job(key: str, cores: int = 1, memory_gib: float = 1, gpus: int = 0, nodes: int = 1,
         exclusive: bool = False, architecture: str | None = None,
         labels: Mapping[str, str] | None = None) -> QueuedJob:
    devices = {GPU_DEVICE: gpus} if gpus else {}
    request = ResourceRequest(cores=cores, memory_bytes=int(memory_gib * GIB), devices=devices,
                              exclusive=exclusive)
    return QueuedJob(key, request, nodes, architecture, labels or {})


SMALL = _offering("small", 2, 4, 0.10)
LARGE = _offering("large", 16, 32, 0.64)
CPU = ElasticPool("cpu", [SMALL, LARGE], max_size=100)


def _check(choice: OfferingChoice, jobs: Sequence[QueuedJob], pools: Sequence[ElasticPool],
           booting: Sequence[BootingNode] = ()) -> None:
    """Fail unless ``choice`` places every admitted job on nodes that can hold it."""
    by_key = {job.key: job for job in jobs}
    assert set(choice.placements) | set(choice.unfit) | set(choice.deferred) == set(by_key)
    assert not set(choice.placements) & (set(choice.unfit) | set(choice.deferred))
    offerings = {(p.name, o.name): (o, p) for p in pools for o in p.offerings}
    rooms = {node.name: node for node in booting}
    load: dict[str, list[QueuedJob]] = defaultdict(list)
    for key, nodes in choice.placements.items():
        job = by_key[key]
        assert len(nodes) == job.nodes and len(set(nodes)) == job.nodes, (key, nodes)
        for node in nodes:
            load[node].append(job)
    new: Counter[tuple[str, str]] = Counter()
    for node, placed in load.items():
        if node in rooms:
            room = rooms[node].room()
            capacity = rooms[node].capacity
            architecture, labels = capacity.architecture, capacity.labels
            sizes = (room.cores, room.memory_bytes, room.devices.get(GPU_DEVICE, 0))
            idle = rooms[node].idle()
        else:
            pool, rest = node.split("/")
            offering, pool_spec = offerings[(pool, rest.split("#")[0])]
            new[(pool, offering.name)] += 1
            architecture, labels = offering.architecture, pool_spec.labels
            sizes = (offering.cores, offering.memory_bytes, offering.gpus)
            idle = True
        used = [sum(j.request.cores for j in placed), sum(j.request.memory_bytes for j in placed),
                sum(j.request.devices.get(GPU_DEVICE, 0) for j in placed)]
        assert all(u <= s for u, s in zip(used, sizes, strict=True)), (node, used, sizes)
        for job in placed:
            assert job.architecture is None or (normal_architecture(job.architecture)
                                                == normal_architecture(architecture))
            assert all(labels.get(k) == v for k, v in job.labels.items()), (node, job.key)
            if job.request.exclusive:
                assert placed == [job] and idle, f"exclusive {job.key} shares {node}"
    assert {(n.pool, n.offering): n.count for n in choice.add} == dict(new)
    price = sum(n.count * n.price_per_hour for n in choice.add)
    assert choice.price_per_hour == pytest.approx(price)
    for pool in pools:
        added = sum(n.count for n in choice.add if n.pool == pool.name)
        assert pool.size + added <= pool.max_size, f"pool {pool.name} grows past its max"


def _choose(jobs: Sequence[QueuedJob], pools: Sequence[ElasticPool] = (CPU,),
            booting: Sequence[BootingNode] = (), quota: Quota | None = None) -> OfferingChoice:
    choice = choose_offerings(jobs, pools, booting, quota or Quota())
    _check(choice, jobs, pools, booting)
    return choice


def _added(choice: OfferingChoice) -> dict[str, int]:
    return {f"{n.pool}/{n.offering}": n.count for n in choice.add}


# --- cheapest mixes ---------------------------------------------------------------------------


def test_one_small_job_gets_the_cheapest_offering_that_holds_it() -> None:
    choice = _choose([_job("a", cores=2, memory_gib=4)])
    assert _added(choice) == {"cpu/small": 1}
    assert choice.price_per_hour == pytest.approx(0.10)
    assert choice.placements == {"a": ("cpu/small#0",)}


def test_many_small_jobs_share_a_large_node_when_it_costs_less() -> None:
    cheap_large = ElasticPool("cpu", [SMALL, _offering("large", 16, 32, 0.56)], max_size=10)
    choice = _choose([_job(f"j{i}") for i in range(16)], [cheap_large])
    assert _added(choice) == {"cpu/large": 1}
    choice = _choose([_job(f"j{i}") for i in range(16)])  # large costs as much as 8 small
    assert choice.price_per_hour == pytest.approx(0.64)


def test_a_leftover_job_takes_a_small_node_not_another_large_one() -> None:
    cheap_large = ElasticPool("cpu", [SMALL, _offering("large", 16, 32, 0.56)], max_size=10)
    choice = _choose([_job(f"j{i}") for i in range(17)], [cheap_large])
    assert _added(choice) == {"cpu/large": 1, "cpu/small": 1}


def test_core_heavy_and_memory_heavy_jobs_share_balanced_nodes() -> None:
    pool = ElasticPool("cpu", [
        _offering("compute", 8, 8, 0.32), _offering("memory", 2, 16, 0.12),
        _offering("balanced", 16, 64, 0.70)], max_size=10)
    jobs = [_job(f"c{i}", cores=3, memory_gib=1) for i in range(4)]
    jobs += [_job(f"m{i}", cores=1, memory_gib=12) for i in range(4)]
    choice = _choose(jobs, [pool])
    # apart: 2 compute (6 of 8 cores each) + 4 memory = 1.12; together: 1 balanced = 0.70
    assert _added(choice) == {"cpu/balanced": 1}


def test_gpu_jobs_go_to_gpu_offerings_and_cpu_jobs_fill_their_spare_cores() -> None:
    gpu = ElasticPool("gpu", [_offering("g1", 8, 32, 1.0, gpus=1)], max_size=4)
    jobs = [_job("train", cores=2, memory_gib=8, gpus=1), _job("prep", cores=4, memory_gib=8)]
    choice = _choose(jobs, [CPU, gpu])
    assert _added(choice) == {"gpu/g1": 1}
    assert choice.placements["prep"] == choice.placements["train"]


def test_multinode_jobs_get_distinct_nodes_and_exclusive_jobs_nodes_of_their_own() -> None:
    jobs = [_job("mpi", cores=1, nodes=4), _job("solo", cores=1, exclusive=True),
            _job("x"), _job("y")]
    choice = _choose(jobs)
    assert len(set(choice.placements["mpi"])) == 4
    assert sum(n.count for n in choice.add) == 5  # mpi's 4 nodes hold x and y too


def test_architecture_and_labels_pick_the_pools() -> None:
    arm = ElasticPool("arm", [_offering("a2", 2, 4, 0.08, architecture="aarch64")], max_size=9)
    fast = ElasticPool("fast", [_offering("f2", 2, 4, 0.2)], max_size=9, labels={"disk": "nvme"})
    jobs = [_job("anywhere", cores=2, memory_gib=4), _job("graviton", architecture="arm64"),
            _job("scratch", labels={"disk": "nvme"})]
    choice = _choose(jobs, [CPU, arm, fast])
    assert choice.placements["graviton"][0].startswith("arm/")
    assert choice.placements["scratch"][0].startswith("fast/")
    assert choice.placements["anywhere"][0].startswith("arm/"), "arm is cheaper and allowed"


# --- booting nodes, limits, quota ---------------------------------------------------------------


def _booting(name: str, cores: int, memory_gib: int, free_cores: int | None = None
             ) -> BootingNode:
    capacity = NodeCapacity(name, cores, memory_gib * GIB)
    free = None if free_cores is None else NodeCapacity(name, free_cores, memory_gib * GIB)
    return BootingNode(name, capacity, free)


def test_booting_nodes_are_filled_before_any_node_is_added() -> None:
    booting = [_booting("pool.cpu.node[3]", 16, 32, free_cores=6)]
    jobs = [_job(f"j{i}", cores=2) for i in range(4)]
    choice = _choose(jobs, booting=booting)
    assert _added(choice) == {"cpu/small": 1}
    assert sorted(choice.placements.values()).count(("pool.cpu.node[3]",)) == 3


def test_an_exclusive_job_takes_a_booting_node_only_while_nothing_else_is_on_it() -> None:
    used = [_booting("busy", 16, 32, free_cores=15)]
    choice = _choose([_job("solo", exclusive=True)], booting=used)
    assert choice.placements["solo"] == ("cpu/small#0",)
    idle = [_booting("idle", 16, 32)]
    choice = _choose([_job("solo", exclusive=True)], booting=idle)
    assert choice.placements["solo"] == ("idle",) and choice.add == ()


def test_a_full_pool_defers_jobs_with_its_size_in_the_reason() -> None:
    gpu = ElasticPool("gpu", [_offering("g1", 8, 32, 1.0, gpus=1)], max_size=2, size=2)
    choice = _choose([_job("train", gpus=1), _job("prep")], [CPU, gpu])
    assert choice.deferred == {
        "train": "waiting for room: the pools that could hold it are at their max: gpu (2 of 2)"}
    assert "prep" in choice.placements, "a job that cannot fit does not hold up the others"


def test_a_multinode_job_wider_than_the_room_left_waits_with_the_count() -> None:
    gpu = ElasticPool("gpu", [_offering("g1", 8, 32, 1.0, gpus=1)], max_size=4, size=2)
    choice = _choose([_job("mpi", gpus=1, nodes=3)], [gpu])
    assert choice.deferred == {"mpi": "waiting for room: needs 3 nodes; the pools that could "
                                      "hold it may add 2: gpu (2 of 4)"}
    assert choice.add == ()


def test_limits_admit_the_oldest_jobs_first() -> None:
    pool = ElasticPool("cpu", [SMALL], max_size=3, size=1)  # room for 2 more small nodes
    jobs = [_job(f"j{i}", cores=2, memory_gib=4) for i in range(4)]
    choice = _choose(jobs, [pool])
    assert set(choice.placements) == {"j0", "j1"}
    assert choice.deferred["j2"].startswith("waiting for room: older queued jobs")


def test_the_quota_bounds_what_is_added() -> None:
    jobs = [_job(f"j{i}", cores=2, memory_gib=4) for i in range(3)]
    choice = _choose(jobs, quota=Quota(cores=4))
    assert sum(n.count for n in choice.add) == 2 and len(choice.deferred) == 1
    blocked = _choose([_job("big", cores=8)], quota=Quota(cores=4))
    assert blocked.deferred == {"big": "waiting for room: the quota allows 4 more cores"}


# --- jobs that can never fit -----------------------------------------------------------------


GPU_A = ElasticPool("gpu-a", [_offering("g1", 8, 32, 1.0, gpus=1),
                              _offering("g2", 16, 64, 1.9, gpus=2)], max_size=4)
GPU_B = ElasticPool("gpu-b", [_offering("h2", 16, 64, 2.1, gpus=2)], max_size=2)


@pytest.mark.parametrize(("job", "reason"), [
    (_job("big", gpus=4),
     "needs 4 nvidia.com/gpu; the largest offering in pools cpu, gpu-a, gpu-b has 2"),
    (_job("huge", cores=64, memory_gib=512),
     "needs 64 cores; the largest offering in pools cpu, gpu-a, gpu-b has 16; "
     "needs 512.0 GiB memory; the largest offering in pools cpu, gpu-a, gpu-b has 64.0 GiB"),
    (_job("arm", architecture="aarch64"),
     "needs architecture aarch64; pools cpu, gpu-a, gpu-b offer x86_64"),
    (_job("ssd", labels={"disk": "nvme"}),
     "needs labels disk=nvme; no pool that may grow has them"),
    (_job("wide", gpus=2, nodes=7),
     "needs 7 nodes that each hold its request; pools gpu-a, gpu-b may grow to 6"),
])
def test_jobs_that_no_offering_could_hold_fail_at_once_with_the_reason(
    job: QueuedJob, reason: str
) -> None:
    choice = _choose([job, _job("fine")], [CPU, GPU_A, GPU_B])
    assert choice.unfit == {job.key: reason}
    assert set(choice.placements) == {"fine"}


# --- properties -------------------------------------------------------------------------------


def _random_problem(rng: random.Random) -> tuple[list[QueuedJob], list[ElasticPool],
                                                 list[BootingNode], Quota]:
    offerings = []
    for i in range(8):
        cores, per_core, gpus = (rng.choice((2, 4, 8, 16, 32)), rng.choice((2, 4, 8)),
                                 rng.choice((0, 0, 1, 4)))
        price = round(cores * rng.uniform(0.03, 0.06) + gpus * 0.5, 3)
        offerings.append(_offering(f"o{i}", cores, cores * per_core, price, gpus=gpus,
                                   architecture=rng.choice(("x86_64", "aarch64"))))
    pools = [ElasticPool(f"p{i}", offerings[i::3], max_size=rng.randint(0, 12),
                         labels={"zone": "a"} if i == 1 else {}) for i in range(3)]
    pools = [ElasticPool(p.name, p.offerings, p.max_size, rng.randint(0, p.max_size), p.labels)
             for p in pools]
    jobs = [_job(f"j{i}", cores=rng.choice((1, 2, 4, 8)), memory_gib=rng.choice((0.5, 2, 8, 16)),
                 gpus=rng.choice((0, 0, 0, 1, 2)), nodes=rng.choice((1, 1, 1, 2, 3)),
                 exclusive=rng.random() < 0.1,
                 architecture=rng.choice((None, None, "aarch64", "x86_64")),
                 labels=rng.choice(({}, {}, {"zone": "a"})))
            for i in range(rng.randint(1, 40))]
    booting = [_booting(f"b{i}", 8, 16, free_cores=rng.randint(0, 8)) for i in range(2)]
    quota = rng.choice((Quota(), Quota(cores=rng.randint(8, 64)), Quota(nodes=rng.randint(1, 6))))
    return jobs, pools, booting, quota


@pytest.mark.parametrize("seed", range(60))
def test_random_problems_get_feasible_deterministic_choices_within_the_quota(seed: int) -> None:
    jobs, pools, booting, quota = _random_problem(random.Random(seed))
    choice = _choose(jobs, pools, booting, quota)
    assert choose_offerings(jobs, pools, booting, quota) == choice, "same input, same answer"
    offerings = {(p.name, o.name): o for p in pools for o in p.offerings}
    added = [offerings[(n.pool, n.offering)] for n in choice.add for _ in range(n.count)]
    if quota.cores is not None:
        assert sum(o.cores for o in added) <= quota.cores
    if quota.nodes is not None:
        assert len(added) <= quota.nodes


def _optimum(jobs: Sequence[QueuedJob], offerings: Sequence[Offering]) -> float:
    """The cheapest way to hold single-node ``jobs``: every partition, each block on the
    cheapest offering holding it."""
    def cheapest(block: Sequence[QueuedJob]) -> float:
        need = (sum(j.request.cores for j in block), sum(j.request.memory_bytes for j in block))
        return min((o.price_per_hour for o in offerings
                    if o.cores >= need[0] and o.memory_bytes >= need[1]), default=float("inf"))

    def partitions(items: Sequence[QueuedJob]) -> Iterator[list[list[QueuedJob]]]:
        if not items:
            yield []
            return
        first, rest = items[0], items[1:]
        for smaller in partitions(rest):
            for n in range(len(smaller)):
                yield [*smaller[:n], [first, *smaller[n]], *smaller[n + 1:]]
            yield [[first], *smaller]

    return min(sum(cheapest(block) for block in partition) for partition in partitions(jobs))


def test_small_problems_cost_at_most_a_little_more_than_the_optimum() -> None:
    rng = random.Random(7)
    ratios = []
    for _ in range(40):
        offerings = [_offering(f"o{i}", cores, memory, round(rng.uniform(0.8, 1.2)
                                                             * (0.02 * cores + 0.005 * memory), 4))
                     for i, (cores, memory) in enumerate(itertools.product((2, 4, 8), (4, 16)))]
        jobs = [_job(f"j{i}", cores=rng.choice((1, 2, 3)), memory_gib=rng.choice((1, 2, 6)))
                for i in range(rng.randint(2, 7))]
        choice = _choose(jobs, [ElasticPool("cpu", offerings, max_size=10)])
        ratios.append(choice.price_per_hour / _optimum(jobs, offerings))
    assert max(ratios) <= 1.15, sorted(ratios)[-5:]
    assert sum(r < 1 + 1e-9 for r in ratios) >= 30, "most small problems are solved exactly"
