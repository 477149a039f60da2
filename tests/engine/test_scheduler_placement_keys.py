"""The placement keys in the pure scheduler: ``resource.annotations`` (node labels),
``cpu.sockets`` and ``cpu.threads``, through :mod:`fuzz.resources`,
:mod:`fuzz.scheduler.placement` and :mod:`fuzz.scheduler.offerings`."""

from __future__ import annotations

from fuzz.plugin.provider import Offering
from fuzz.resources import NodeCapacity, ResourceRequest, cpus_taken, shortages, shortfall
from fuzz.scheduler.offerings import ElasticPool, QueuedJob, choose_offerings, offering_capacity
from fuzz.scheduler.placement import NodeView, PendingTask, place

GiB = 1024**3
MODEL = "nvidia.com/gpu.model"
L4 = NodeCapacity("l4", cores=16, memory_bytes=64 * GiB, devices={"nvidia.com/gpu": 1},
                  labels={MODEL: "NVIDIA L4", "site": "a"})
H100 = NodeCapacity("h100", cores=16, memory_bytes=64 * GiB, devices={"nvidia.com/gpu": 1},
                    labels={MODEL: "NVIDIA H100"})
SMT = NodeCapacity("smt", cores=16, memory_bytes=64 * GiB, sockets=2, threads_per_core=2)


def view(capacity: NodeCapacity, used_cores: int = 0) -> NodeView:
    return NodeView(capacity.name, capacity, capacity.cores - used_cores, capacity.memory_bytes,
                    dict(capacity.devices), lease_count=1 if used_cores else 0)


def test_labels_match_every_requested_key_exactly_and_ignore_extra_node_labels() -> None:
    assert shortages(ResourceRequest(labels={MODEL: "NVIDIA L4"}), L4) == []
    assert shortages(ResourceRequest(labels={}), H100) == []
    assert shortages(ResourceRequest(labels={MODEL: "NVIDIA L4"}), H100) == [
        "annotation nvidia.com/gpu.model=NVIDIA L4 (has NVIDIA H100)"]
    assert shortages(ResourceRequest(labels={"site": "a"}), H100) == [
        "annotation site=a (no such label)"]
    assert shortages(ResourceRequest(labels={MODEL: "nvidia l4"}), L4) != []  # exact only


def test_shortfall_names_the_annotation_and_the_values_nodes_have() -> None:
    request = ResourceRequest(labels={MODEL: "NVIDIA A100"})
    assert shortfall(request, [L4, H100]) == (
        "needs annotation nvidia.com/gpu.model=NVIDIA A100; no node has it "
        "(nodes have nvidia.com/gpu.model: NVIDIA H100, NVIDIA L4)")
    assert shortfall(ResourceRequest(labels={"rack": "7"}), [L4]) == (
        "needs annotation rack=7; no node has it (no node has the label rack)")


def test_placement_takes_only_a_node_whose_labels_match() -> None:
    tasks = [PendingTask("h", ResourceRequest(labels={MODEL: "NVIDIA H100"})),
             PendingTask("l", ResourceRequest(labels={MODEL: "NVIDIA L4"}), seq=1)]
    result = place(tasks, [view(L4), view(H100)])
    assert {a.key: a.nodes for a in result.assigned} == {"h": ("h100",), "l": ("l4",)}


def test_a_matching_node_that_is_busy_makes_the_job_wait_not_go_elsewhere() -> None:
    busy = view(H100, used_cores=16)
    result = place([PendingTask("h", ResourceRequest(labels={MODEL: "NVIDIA H100"}))],
                   [view(L4), busy])
    assert result.assigned == ()
    assert "waiting" in result.waiting["h"]
    never = place([PendingTask("x", ResourceRequest(labels={MODEL: "NVIDIA B200"}))],
                  [view(L4), view(H100)])
    assert never.waiting["x"].startswith(
        "cannot run on the current nodes: needs annotation nvidia.com/gpu.model=NVIDIA B200")


def test_threads_take_every_hardware_thread_of_each_core() -> None:
    assert cpus_taken(ResourceRequest(cores=3), SMT) == 3
    assert cpus_taken(ResourceRequest(cores=3, threads=True), SMT) == 6
    assert shortages(ResourceRequest(cores=9, threads=True), SMT) == [
        "9 cores with their hardware threads (has 8 cores of 2 threads)"]
    result = place([PendingTask("t", ResourceRequest(cores=5, threads=True)),
                    PendingTask("u", ResourceRequest(cores=7), seq=1),
                    PendingTask("v", ResourceRequest(cores=1), seq=2)], [view(SMT)])
    assert [a.key for a in result.assigned] == ["t", "v"]  # 10 CPUs taken, 6 free: u waits
    assert "u" in result.waiting


def test_sockets_need_that_many_sockets_each_holding_its_share() -> None:
    assert shortages(ResourceRequest(cores=8, sockets=2), SMT) == []
    assert shortages(ResourceRequest(cores=4, sockets=3), SMT) == ["3 sockets (has 2)"]
    assert shortages(ResourceRequest(cores=10, sockets=1), SMT) == [
        "10 cores on 1 socket (has 8 per socket)"]
    assert shortages(ResourceRequest(cores=6, sockets=2, threads=True), SMT) == []
    assert shortages(ResourceRequest(cores=10, sockets=2, threads=True), SMT) == [
        "5 cores with their hardware threads on each of 2 sockets "
        "(has 4 cores of 2 threads per socket)"]
    assert shortfall(ResourceRequest(cores=2, sockets=2), [L4]) == (
        "needs 2 sockets; the largest node has 1")


def test_the_elastic_loop_grows_only_a_pool_whose_labels_match() -> None:
    offering = Offering("g1", cores=8, memory_bytes=32 * GiB, gpus=1, gpu_model="NVIDIA L4")
    pools = [ElasticPool("plain", [Offering("c1", cores=8, memory_bytes=32 * GiB)], 4),
             ElasticPool("l4", [offering], 4),
             ElasticPool("tagged", [Offering("c2", cores=8, memory_bytes=32 * GiB)], 4,
                         labels={"zone": "b"})]
    assert offering_capacity(offering, {"zone": "x"}).labels == {
        MODEL: "NVIDIA L4", "nvidia.com/gpu.count": "1", "zone": "x",
        "fuzz.io/cpu.architecture": "x86_64"}
    jobs = [QueuedJob("gpu", ResourceRequest(cores=2, labels={MODEL: "NVIDIA L4"})),
            QueuedJob("zone", ResourceRequest(cores=2, labels={"zone": "b"})),
            QueuedJob("none", ResourceRequest(cores=2, labels={MODEL: "NVIDIA H100"}))]
    choice = choose_offerings(jobs, pools)
    assert {key: nodes[0].split("/")[0] for key, nodes in choice.placements.items()} == {
        "gpu": "l4", "zone": "tagged"}
    assert choice.unfit["none"].startswith(
        "needs annotation nvidia.com/gpu.model=NVIDIA H100; no pool that may grow has it")
