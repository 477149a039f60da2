"""Benchmark: how close federated routing comes to the cheapest member, and how fast it decides.

A federation of 10 random members (6 sites, 3 of them on premises; 2-6 nodes
each, some with GPUs, some arm; every third member also 1-4 elastic-pool offerings;
prices per core-, GiB- and GPU-hour with noise; queues of 0-8 workflows; caches
holding some of the data) and 1,000 random workflows
(1-6 jobs of 1-32 cores, some with GPUs, some arm-only, task arrays and multinode
jobs; 0-3 ingress sources from 40 datasets of up to 500 GB in the 6 sites, some
export-controlled; one of 3 accounts). For every workflow the member
:func:`fuzz.federate.route.route` chooses is priced again by a reference written
here from first principles (every job against every node of every member, every
policy, every cost term) and compared with the exhaustive optimum over all 10
members under the same rules; a workflow no member may run counts only if the router
disagrees. Then the routing of all 1,000 is timed in CPU time of this process (the
median of 5), so that other load on the machine counts as little as it can.

Prints the mean and worst cost ratio and the time per workflow, as ``BENCH`` lines.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from collections.abc import Sequence

from fuzz.federate.demand import data_demand
from fuzz.federate.model import JobDemand, MemberFacts, OfferingFacts, WorkflowDemand
from fuzz.federate.route import route
from fuzz.resources import GPU_DEVICE, NodeCapacity, ResourceRequest
from fuzz.spec.federation import FederationSpec, PriceList
from fuzz.spec.labels import CPU_ARCHITECTURE_LABEL

GIB = 1 << 30
GB = 10**9
SEED = 20_261_207
MEMBERS = 10
WORKFLOWS = 1_000
TIMING_REPEATS = 5
SITES = ("hq", "lab", "aws:us-east-1", "aws:eu-west-1", "gcp:europe-west4", "azure:westus")
ACCOUNTS = ("physics", "chem", "bio")
GPU_MODELS = ("A100", "H100", "L4")
ARCH = CPU_ARCHITECTURE_LABEL
MODEL = "nvidia.com/gpu.model"


def federation(rng: random.Random) -> FederationSpec:
    """The members (reached nowhere: the bench never connects), egress prices, the
    datasets and three policies: export-controlled data on premises, physics only on
    two named members, workflows marked ``tier: gold`` not on spot-labelled members."""
    members = {f"m{i}": {"context": "none", "site": SITES[i % len(SITES)]}
               for i in range(MEMBERS)}
    egress = [{"from": a, "to": b, "per_gb": round(rng.uniform(0.0, 0.12), 3)}
              for a in SITES for b in SITES if a != b and rng.random() < 0.7]
    egress.append({"from": "*", "to": "*", "per_gb": 0.09})
    data = [{"source": f"s3://d{i}/", "site": rng.choice(SITES),
             "size": rng.choice([0, rng.randrange(1, 500) * GB]),
             "labels": {"classification": "export-controlled"} if rng.random() < 0.1 else {}}
            for i in range(40)]
    policies = [
        {"name": "export-control", "when": {"data": {"classification": "export-controlled"}},
         "allow": {"labels": {"on-prem": "true"}}},
        {"name": "physics-home", "when": {"accounts": ["physics"]},
         "allow": {"members": ["m0", "m1", "m2", "m6"]}},
        {"name": "gold-not-spot", "when": {"workflow": {"tier": "gold"}},
         "allow": {"labels": {"spot": "false"}}},
    ]
    return FederationSpec.model_validate({
        "version": 1, "federation": "bench", "members": members, "egress": egress,
        "data": data, "policies": policies,
        "routing": {"wait_price_per_hour": 0.8, "queue_hours_per_workflow": "30m"}})


def _node(rng: random.Random, name: str) -> NodeCapacity:
    cores = rng.choice([8, 16, 32, 64, 96])
    labels = {ARCH: "aarch64" if rng.random() < 0.3 else "x86_64"}
    devices = {}
    if rng.random() < 0.4:
        devices[GPU_DEVICE] = rng.choice([1, 2, 4, 8])
        labels[MODEL] = rng.choice(GPU_MODELS)
    return NodeCapacity(name, cores, cores * rng.choice([2, 4, 8]) * GIB, devices,
                        labels[ARCH], labels)


def members(rng: random.Random, spec: FederationSpec) -> list[MemberFacts]:
    """Random facts for every member of ``spec``."""
    found = []
    for index, (name, declared) in enumerate(spec.members.items()):
        nodes = tuple(_node(rng, f"{name}-n{i}") for i in range(rng.randint(2, 6)))
        free = {n.name: (rng.randint(0, n.cores), rng.randint(0, n.memory_bytes)) for n in nodes}
        prices = PriceList(core_hour=round(0.02 * rng.uniform(0.5, 2.0), 4),
                           memory_gib_hour=round(0.004 * rng.uniform(0.5, 2.0), 5),
                           gpu_hour={model: round(rng.uniform(0.5, 4.0), 3)
                                     for model in GPU_MODELS if rng.random() < 0.8}
                           | {"*": 2.5})
        cached = {f"s3://d{d}/obj": rng.randrange(0, 300) * GB
                  for d in range(40) if rng.random() < 0.15}
        labels = {"on-prem": "true" if declared.site in ("hq", "lab") else "false",
                  "spot": "true" if index % 4 == 3 else "false"}
        offerings = tuple(
            OfferingFacts("cloud", capacity, round(
                (0.03 * capacity.cores + 0.004 * capacity.memory_bytes / GIB
                 + 1.5 * capacity.devices.get(GPU_DEVICE, 0)) * rng.uniform(0.8, 1.3), 4))
            for capacity in (_node(rng, f"{name}-o{i}") for i in range(rng.randint(1, 4)))
        ) if index % 3 == 2 else ()
        found.append(MemberFacts(name, declared.site, labels, prices, nodes, free,
                                 rng.randint(0, 8), cached, offerings=offerings))
    return found


def workflow(rng: random.Random, spec: FederationSpec) -> WorkflowDemand:
    """A random workflow: its jobs, data, labels and account."""
    jobs = []
    for index in range(rng.randint(1, 6)):
        labels = {ARCH: "aarch64"} if rng.random() < 0.05 else {}
        devices = {}
        if rng.random() < 0.1:
            devices[GPU_DEVICE] = rng.choice([1, 2, 4])
            if rng.random() < 0.5:
                labels[MODEL] = rng.choice(GPU_MODELS)
        cores = rng.choice([1, 2, 4, 8, 16, 32])
        request = ResourceRequest(cores=cores, memory_bytes=cores * rng.choice([1, 2, 4]) * GIB,
                                  devices=devices, labels=labels)
        jobs.append(JobDemand(f"j{index}", request, rng.choice([1, 1, 1, 1, 2]),
                              rng.choice([1, 1, 10, 100]), rng.uniform(0.1, 12.0)))
    uris = [f"s3://d{rng.randrange(40)}/obj" for _ in range(rng.randint(0, 3))]
    labels = {"tier": "gold"} if rng.random() < 0.2 else {}
    return WorkflowDemand(tuple(jobs), data_demand(uris, spec.data), labels,
                          rng.choice(ACCOUNTS))


# --- the reference: every rule and term again, from first principles -----------------------

def _fits(request: ResourceRequest, node: NodeCapacity) -> bool:
    return (request.cores <= node.cores and request.memory_bytes <= node.memory_bytes
            and all(node.devices.get(k, 0) >= v for k, v in request.devices.items())
            and all(node.labels.get(k) == v for k, v in request.labels.items()))


def _allowed(spec: FederationSpec, demand: WorkflowDemand, member: MemberFacts) -> bool:
    for policy in spec.policies:
        when = policy.when
        hits = (all(demand.labels.get(k) == v for k, v in when.workflow.items())
                and (not when.data or any(all(d.labels.get(k) == v
                                              for k, v in when.data.items())
                                          for d in demand.data))
                and (not when.accounts or demand.account in when.accounts))
        if hits and ((policy.allow.members and member.name not in policy.allow.members)
                     or any(member.labels.get(k) != v for k, v in policy.allow.labels.items())):
            return False
    return True


def _egress(spec: FederationSpec, source: str, destination: str) -> float:
    if source == destination or not source:
        return 0.0
    table = {(e.from_site, e.to_site): e.per_gb for e in spec.egress}
    for key in ((source, destination), (source, "*"), ("*", destination), ("*", "*")):
        if key in table:
            return table[key]
    return 0.0


def reference_cost(spec: FederationSpec, demand: WorkflowDemand, member: MemberFacts
                   ) -> float | None:
    """What running ``demand`` on ``member`` costs, None when it may not or cannot."""
    if not _allowed(spec, demand, member):
        return None
    compute = 0.0
    fits_now = True
    for job in demand.jobs:
        holders = [n for n in member.nodes if _fits(job.request, n)]
        offered = [o.price_per_hour for o in member.offerings if _fits(job.request, o.capacity)]
        if not offered and (len(holders) < job.nodes or not holders):
            return None
        fits_now &= bool(offered) or any(job.request.cores <= member.free[n.name][0]
                                         and job.request.memory_bytes <= member.free[n.name][1]
                                         for n in holders)
        options = list(offered)
        if holders:
            gpus = job.request.devices.get(GPU_DEVICE, 0)
            gpu_price = 0.0
            if gpus:
                prices = member.prices.gpu_hour
                model = job.request.labels.get(MODEL)
                candidates = [model] if model else [n.labels.get(MODEL) for n in holders]
                gpu_price = min(prices.get(m or "", prices.get("*", 0.0)) for m in candidates)
            options.append(job.request.cores * member.prices.core_hour
                           + job.request.memory_bytes / GIB * member.prices.memory_gib_hour
                           + gpus * gpu_price)
        compute += min(options) * job.hours * job.nodes * job.tasks
    moved = sum((d.size - min(d.size, sum(member.cached_bytes.get(u, 0) for u in d.uris)))
                / GB * _egress(spec, d.site, member.site) for d in demand.data)
    wait = 0.0 if fits_now else max(member.active_workflows, 1) * (
        spec.routing.queue_hours_per_workflow / 3600) / len(member.nodes)
    return compute + moved + wait * spec.routing.wait_price_per_hour


def ratios(spec: FederationSpec, facts: Sequence[MemberFacts],
           demands: Sequence[WorkflowDemand]) -> tuple[list[float], int]:
    """The router's cost over the optimum per workflow, and how many no member may run."""
    found, nowhere = [], 0
    for demand in demands:
        costs = {m.name: reference_cost(spec, demand, m) for m in facts}
        possible = [c for c in costs.values() if c is not None]
        chosen = route(demand, facts, spec).chosen
        if not possible:
            nowhere += 1
            found.append(1.0 if chosen is None else math.inf)
            continue
        cost = costs.get(chosen) if chosen is not None else None
        best = min(possible)
        found.append(math.inf if cost is None else (cost / best if best > 0 else
                                                    1.0 if cost == 0 else math.inf))
    return found, nowhere


def main() -> int:
    """Run the benchmark and print one BENCH line per headline figure."""
    rng = random.Random(SEED)
    spec = federation(rng)
    facts = members(rng, spec)
    demands = [workflow(rng, spec) for _ in range(WORKFLOWS)]
    found, nowhere = ratios(spec, facts, demands)
    timings = []
    for _ in range(TIMING_REPEATS):
        started = time.process_time()
        for demand in demands:
            route(demand, facts, spec)
        timings.append((time.process_time() - started) * 1000 / len(demands))
    print(f"{WORKFLOWS} workflows x {MEMBERS} members; {nowhere} fit no member "
          f"(the router agreed: {sum(1 for r in found if r == 1.0)} of {WORKFLOWS} at the "
          "optimum)")
    print(f"BENCH route_cost_ratio_mean={statistics.mean(found):.4f} x target<=1.02")
    print(f"BENCH route_cost_ratio_worst={max(found):.4f} x target<=1.02")
    print(f"BENCH route_ms_per_workflow={statistics.median(timings):.3f} ms target<5")
    return 0 if statistics.mean(found) <= 1.02 else 1


if __name__ == "__main__":
    sys.exit(main())
