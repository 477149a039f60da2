"""The pure routing of fuzz.federate: cost, data location, policy, feasibility, load, ties."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.federate.demand import data_demand, source_site, workflow_demand
from fuzz.federate.model import JobDemand, MemberFacts, OfferingFacts, WorkflowDemand
from fuzz.federate.route import route
from fuzz.resources import GPU_DEVICE, NodeCapacity, ResourceRequest
from fuzz.spec.federation import FederationSpec, PriceList, load_federation
from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.spec.problems import SpecError

GIB = 2**30


def federation(**extra: object) -> FederationSpec:
    """Three members a, b, c (as the e2e test declares them) and ``extra`` keys."""
    members = {name: {"server": "127.0.0.1:1", "token_file": "t", "insecure": True,
                      "site": site}
               for name, site in (("a", "hq"), ("b", "aws:us-east-1"), ("c", "aws:eu-west-1"))}
    return FederationSpec.model_validate(
        {"version": 1, "federation": "test", "members": members, **extra})


def member(name: str, site: str, core_hour: float, *, gpus: int = 0, cores: int = 8,
           labels: dict[str, str] | None = None, busy: bool = False,
           cached: dict[str, int] | None = None, active: int = 0) -> MemberFacts:
    devices = {GPU_DEVICE: gpus} if gpus else {}
    node = NodeCapacity(f"{name}-n0", cores, 32 * GIB, devices)
    return MemberFacts(name, site, labels or {}, PriceList(core_hour=core_hour,
                                                           gpu_hour={"*": 2.0}),
                       (node,), {node.name: (0, 0) if busy else (cores, 32 * GIB)},
                       active, cached or {})


def job(cores: int = 2, gpus: int = 0, hours: float = 1.0) -> JobDemand:
    devices = {GPU_DEVICE: gpus} if gpus else {}
    return JobDemand("run", ResourceRequest(cores=cores, memory_bytes=GIB, devices=devices),
                     hours=hours)


def test_the_cheapest_compute_wins_and_every_term_is_shown() -> None:
    members = [member("a", "hq", 0.10), member("b", "aws:us-east-1", 0.04),
               member("c", "aws:eu-west-1", 0.06)]
    decision = route(WorkflowDemand((job(cores=4, hours=2),)), members, federation())
    assert decision.chosen == "b"
    assert [a.member for a in decision.assessments] == ["b", "c", "a"]
    assert decision.assessments[0].compute == pytest.approx(4 * 2 * 0.04)


def test_data_location_outweighs_cheaper_compute_and_the_cache_cuts_the_move() -> None:
    spec = federation(egress=[{"from": "aws:us-east-1", "to": "*", "per_gb": 0.09}],
                      data=[{"source": "s3://climate/", "site": "aws:us-east-1",
                             "size": "100GB"}])
    demand = WorkflowDemand((job(),), data_demand(["s3://climate/t.nc"], spec.data))
    members = [member("a", "hq", 0.01), member("b", "aws:us-east-1", 0.05)]
    decision = route(demand, members, spec)
    assert decision.chosen == "b"
    far = {a.member: a for a in decision.assessments}["a"]
    assert far.egress == pytest.approx(100 * 0.09)
    cached = [member("a", "hq", 0.01, cached={"s3://climate/t.nc": 100 * 10**9}), members[1]]
    again = route(demand, cached, spec)
    assert again.chosen == "a"
    assert again.assessments[0].egress == 0 and again.assessments[0].cached_gb == 100


def test_a_policy_refuses_the_cheaper_member_and_the_pin_on_it() -> None:
    spec = federation(
        data=[{"source": "s3://secret/", "site": "hq", "size": "1GB",
               "labels": {"classification": "export-controlled"}}],
        policies=[{"name": "export-control",
                   "when": {"data": {"classification": "export-controlled"}},
                   "allow": {"labels": {"on-prem": "true"}}}])
    demand = WorkflowDemand((job(),), data_demand(["s3://secret/x"], spec.data))
    members = [member("a", "hq", 1.0, labels={"on-prem": "true"}),
               member("b", "aws:us-east-1", 0.01)]
    decision = route(demand, members, spec)
    assert decision.chosen == "a"
    cheaper = {a.member: a for a in decision.assessments}["b"]
    assert cheaper.total < decision.assessments[0].total
    assert cheaper.refused_by() == ["export-control"]
    pinned = route(demand, members, spec, pinned="b")
    assert pinned.chosen is None
    assert pinned.reason == "--cluster b is refused: policy export-control does not allow it"
    unlabelled = WorkflowDemand((job(),))
    assert route(unlabelled, members, spec).chosen == "b"


def test_an_account_restricted_to_some_members() -> None:
    spec = federation(policies=[{"name": "physics-on-a", "when": {"accounts": ["physics"]},
                                 "allow": {"members": ["a"]}}])
    members = [member("a", "hq", 1.0), member("b", "aws:us-east-1", 0.01)]
    assert route(WorkflowDemand((job(),), account="physics"), members, spec).chosen == "a"
    assert route(WorkflowDemand((job(),), account="chem"), members, spec).chosen == "b"


def test_gpu_jobs_go_where_the_gpus_are() -> None:
    members = [member("a", "hq", 0.01), member("b", "aws:us-east-1", 0.5, gpus=2),
               member("c", "aws:eu-west-1", 0.02)]
    decision = route(WorkflowDemand((job(gpus=1),)), members, federation())
    assert decision.chosen == "b"
    unfit = {a.member: a.unfit for a in decision.assessments}
    assert unfit["a"] == f"job run needs 1 {GPU_DEVICE}; the largest node has 0"
    assert decision.assessments[0].compute == pytest.approx(2 * 0.5 + 2.0)


def test_no_member_fits_says_why_for_each() -> None:
    members = [member("a", "hq", 0.1), member("b", "aws:us-east-1", 0.1)]
    decision = route(WorkflowDemand((job(cores=64),)), members, federation())
    assert decision.chosen is None
    assert decision.reason.startswith("no member can run it: a: job run needs 64 cores")


def test_ties_go_to_the_shorter_wait_then_the_first_member() -> None:
    spec = federation(routing={"wait_price_per_hour": 0})
    members = [member("a", "hq", 0.1, busy=True, active=3), member("b", "aws:us-east-1", 0.1),
               member("c", "aws:eu-west-1", 0.1)]
    assert route(WorkflowDemand((job(),)), members, spec).chosen == "b"
    idle = [member("c", "aws:eu-west-1", 0.1), member("b", "aws:us-east-1", 0.1)]
    assert route(WorkflowDemand((job(),)), idle, spec).chosen == "c"


def test_a_priced_queue_sends_work_to_the_idle_member() -> None:
    spec = federation(routing={"wait_price_per_hour": 1.0})
    members = [member("a", "hq", 0.1, busy=True, active=4), member("b", "aws:us-east-1", 0.3)]
    decision = route(WorkflowDemand((job(),)), members, spec)
    assert decision.chosen == "b"
    assert {a.member: a.wait_hours for a in decision.assessments}["a"] == pytest.approx(4.0)


def test_an_unreachable_member_is_skipped() -> None:
    down = MemberFacts("a", "hq", unreachable="nothing listens at 127.0.0.1:1")
    decision = route(WorkflowDemand((job(),)), [down, member("b", "aws:us-east-1", 1.0)],
                     federation())
    assert decision.chosen == "b"
    assert decision.assessments[-1].unreachable == "nothing listens at 127.0.0.1:1"


def test_demand_from_a_fuzzfile() -> None:
    text = """version: v1
annotations: {classification: export-controlled}
volumes:
  data:
    reference: volume://user/ephemeral
    ingress:
      - source: {uri: "https://b.s3.eu-west-1.amazonaws.com/k"}
        destination: {uri: file://k}
jobs:
  run:
    image: {uri: docker://busybox}
    command: [true]
    policy: {timeout: {execute: 30m}}
    task-array: {start: 1, end: 4}
    resource: {cpu: {cores: 2}, memory: {size: 1GiB}}
"""
    fuzzfile = parse_fuzzfile(text, "wf.yaml").fuzzfile
    demand = workflow_demand(fuzzfile, federation(), "physics")
    assert demand.labels == {"classification": "export-controlled"}
    assert demand.jobs[0].hours == 0.5 and demand.jobs[0].tasks == 4
    assert [(d.source, d.site) for d in demand.data] == [
        ("https://b.s3.eu-west-1.amazonaws.com/k", "aws:eu-west-1")]
    assert source_site("s3://bucket/key") == ""


def test_federation_spec_problems_name_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "federation.yaml"
    path.write_text("version: 1\nfederation: f\nmembers:\n  a:\n    site: hq\n"
                    "    prices: {core_hour: -1}\npolicies:\n  - name: p\n"
                    "    allow: {members: [zz]}\n")
    with pytest.raises(SpecError) as caught:
        load_federation(path, "federation.yaml")
    assert str(caught.value).splitlines() == [
        "federation.yaml:4:3: members.a: needs server and token_file (or context: a "
        "`fuzz login` context)",
        "federation.yaml:6:25: members.a.prices.core_hour: must be >= 0.0",
        "federation.yaml:9:23: policies[0].allow.members[0]: no member 'zz' (members: a)",
    ]


def test_labels_held_only_by_different_nodes_make_the_member_unfit() -> None:
    arm = NodeCapacity("arm", 8, 32 * GIB, labels={"fuzz.io/cpu.architecture": "aarch64"})
    gpu = NodeCapacity("gpu", 8, 32 * GIB, {GPU_DEVICE: 1},
                       labels={"nvidia.com/gpu.model": "H100"})
    facts = MemberFacts("a", "hq", nodes=(arm, gpu))
    wanted = {"fuzz.io/cpu.architecture": "aarch64", "nvidia.com/gpu.model": "H100"}
    demand = WorkflowDemand((JobDemand("run", ResourceRequest(labels=wanted)),))
    decision = route(demand, [facts], federation())
    assert decision.chosen is None
    assert decision.assessments[0].unfit == (
        "job run needs annotations fuzz.io/cpu.architecture=aarch64, "
        "nvidia.com/gpu.model=H100 on one node; no node has them all")


def test_an_elastic_pool_offering_makes_a_member_feasible_at_its_price() -> None:
    gpu_box = NodeCapacity("g.4x", 16, 64 * GIB, {GPU_DEVICE: 4},
                           labels={"nvidia.com/gpu.model": "H100"})
    cloud = MemberFacts("b", "aws:us-east-1", offerings=(OfferingFacts("gpu", gpu_box, 12.0),))
    onprem = member("a", "hq", 0.01)
    multinode = JobDemand("mpi", ResourceRequest(cores=8, devices={GPU_DEVICE: 4}), nodes=3,
                          hours=2)
    decision = route(WorkflowDemand((multinode,)), [onprem, cloud], federation())
    assert decision.chosen == "b"
    assert decision.assessments[0].compute == pytest.approx(12.0 * 2 * 3)
    assert decision.assessments[0].wait_hours == 0
