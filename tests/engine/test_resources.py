"""Tests for :mod:`fuzz.resources`: whether a request could ever fit, and why not."""

from __future__ import annotations

from fuzz.resources import NodeCapacity, ResourceRequest, shortages, shortfall

GiB = 1024**3
SMALL = NodeCapacity("small", cores=4, memory_bytes=8 * GiB)
GPU = NodeCapacity("gpu", cores=16, memory_bytes=64 * GiB, devices={"nvidia.com/gpu": 2})


def test_a_request_that_fits_one_node_has_no_shortfall() -> None:
    request = ResourceRequest(cores=8, memory_bytes=32 * GiB, devices={"nvidia.com/gpu": 1})
    assert shortages(request, SMALL) == ["8 cores (has 4)", "32.0 GiB memory (has 8.0 GiB)",
                                         "1 nvidia.com/gpu (has 0)"]
    assert shortages(request, GPU) == []
    assert shortfall(request, [SMALL, GPU]) is None


def test_shortfall_names_the_largest_node_on_each_count() -> None:
    request = ResourceRequest(cores=64, memory_bytes=128 * GiB, devices={"nvidia.com/gpu": 4})
    assert shortfall(request, [SMALL, GPU]) == (
        "needs 64 cores; the largest node has 16; "
        "needs 128.0 GiB memory; the largest node has 64.0 GiB; "
        "needs 4 nvidia.com/gpu; the largest node has 2"
    )


def test_no_single_node_has_everything_at_once() -> None:
    request = ResourceRequest(cores=16, devices={"fpga": 1})
    fpga = NodeCapacity("fpga", cores=2, memory_bytes=GiB, devices={"fpga": 1})
    assert shortfall(request, [GPU, fpga]) == "no single node has all of it at once"


def test_no_nodes_at_all() -> None:
    assert shortfall(ResourceRequest(), []) == "no node or pool exists to run it"
