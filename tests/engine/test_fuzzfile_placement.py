"""A start honours the placement keys: ``annotations`` (resource, job and workflow level),
``cpu.sockets`` and ``cpu.threads`` reach the request, and a job no node could ever
match is refused naming the annotation (or the sockets, or the threads)."""

from __future__ import annotations

import textwrap

from fuzz.resources import NodeCapacity
from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.spec.problems import SpecError

GiB = 2**30
MODEL = "nvidia.com/gpu.model"
SITE = "example.org/site"
NODES = [
    NodeCapacity("l4", cores=16, memory_bytes=64 * GiB, devices={"nvidia.com/gpu": 1},
                 labels={MODEL: "NVIDIA L4", "zone": "a", SITE: "lab1"}, sockets=2,
                 threads_per_core=2),
    NodeCapacity("cpu", cores=8, memory_bytes=64 * GiB, labels={"zone": "b", SITE: "lab1"}),
]

FILE = """
    version: v1
    annotations: {description: a sweep, example.org/site: lab0, fuzzball.io/connect/x: y}
    defaults:
      job: {resource: {cpu: {cores: 2, sockets: 2, threads: true}}}
    jobs:
      gpu:
        image: {uri: docker://alpine}
        command: ["true"]
        annotations: {example.org/site: lab1, nvidia.com/gpu.model: NVIDIA L4}
      cpu:
        image: {uri: docker://alpine}
        command: ["true"]
        annotations: {owner: lab}
        resource:
          cpu: {cores: 1}
          annotations: {zone: b, example.org/site: lab1}
"""


def start(text: str, nodes: list[NodeCapacity] | None = None) -> list[str]:
    """The problems a start of ``text`` on ``nodes`` reports ([] when it is accepted)."""
    try:
        parse_fuzzfile(textwrap.dedent(text).lstrip("\n"), "wf.yaml", NODES if nodes is None
                       else nodes, capacities_are_nodes=True, for_start=True)
    except SpecError as error:
        return [str(problem) for problem in error.problems]
    return []


def test_a_start_takes_sockets_threads_and_annotations_into_the_request() -> None:
    assert start(FILE) == []
    flow = parse_fuzzfile(textwrap.dedent(FILE).lstrip("\n"), "wf.yaml").fuzzfile
    gpu, cpu = flow.jobs["gpu"].resource.request(), flow.jobs["cpu"].resource.request()
    assert (gpu.sockets, gpu.threads, gpu.cores) == (2, True, 2)
    # label-like keys select (the job's win over the workflow's, the resource's over both);
    # description, owner and fuzzball.io/ keys stay metadata
    assert gpu.labels == {MODEL: "NVIDIA L4", SITE: "lab1"}
    assert cpu.labels == {"zone": "b", SITE: "lab1"}
    assert (cpu.sockets, cpu.threads) == (0, False)
    assert flow.annotations["description"] == "a sweep"
    assert flow.jobs["cpu"].annotations == {"owner": "lab"}
    assert start(FILE.replace("site: lab1, nvidia", "site: lab0, nvidia")) == [
        "wf.yaml:6:3: jobs.gpu.resource: needs annotation example.org/site=lab0; no node has"
        " it (nodes have example.org/site: lab1)"]


def test_a_job_no_node_could_match_is_refused_naming_the_annotation() -> None:
    text = FILE.replace("zone: b,", "zone: c,")
    assert start(text) == [
        "wf.yaml:14:5: jobs.cpu.resource: needs annotation zone=c; no node has it "
        "(nodes have zone: a, b)"]


def test_sockets_and_threads_no_node_has_are_refused() -> None:
    text = FILE.replace("cores: 2, sockets: 2", "cores: 10, sockets: 2")
    assert start(text) == [
        "wf.yaml:6:3: jobs.gpu.resource: needs 5 cores with their hardware threads on "
        "each of 2 sockets; the largest node has 4 cores of 2 threads per socket"]
    assert start(FILE.replace("sockets: 2", "sockets: 4")) == [
        "wf.yaml:6:3: jobs.gpu.resource: needs 4 sockets; the largest node has 2"]


def test_a_bare_key_that_is_a_node_label_is_not_silently_metadata() -> None:
    text = FILE.replace("owner: lab", "zone: a")
    assert start(text) == [
        "wf.yaml:13:19: jobs.cpu.annotations.zone: 'zone' is a node label here, but a job's"
        " annotations select nodes only by keys with a domain prefix (nvidia.com/gpu.model):"
        " move it to resource.annotations to select by it, or rename it to keep it as"
        " metadata"]
