"""Benchmark: how plan time grows with cluster size.

Builds a spec of one elastic pool with 1,000, 10,000 and 100,000 nodes, a
recorded state equal to it, and provider observations with 1% drift (half of
it nodes that are gone, half label changes in recorded state). Times the whole
pure pipeline that ``fuzz plan`` runs after the provider calls, as
:func:`fuzz.lifecycle.reconcile.refresh_and_plan` runs it: refresh, desired state and diff.
Prints the time per resource and the growth ratio time(100k) / time(10k), which
is linear growth at 10.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace

from fuzz.engine.desired import desired_nodes
from fuzz.engine.gcpause import gc_paused
from fuzz.engine.model import Plan, RecordedNode, State, client_token
from fuzz.engine.refresh import observed_attributes, refresh
from fuzz.lifecycle.reconcile import PlanRequest, plan_changes
from fuzz.plugin.provider import NodeObservation
from fuzz.spec.cluster import ClusterSpec

SIZES = (1_000, 10_000, 100_000)
REPEATS = 7


def scenario(count: int) -> tuple[ClusterSpec, State, dict[str, list[NodeObservation]]]:
    """A spec of ``count`` nodes, equal recorded state, observations with 1% drift."""
    spec = ClusterSpec.model_validate({
        "version": 1, "cluster": "bench", "providers": {"cloud": {"kind": "aws"}},
        "pools": {"cpu": {"provider": "cloud", "offerings": ["c7i.large"], "min": count,
                          "labels": {"tier": "batch"}}},
    })
    state = State.new("bench")
    observations: list[NodeObservation] = []
    drift_every = 100
    for i, (address, node) in enumerate(desired_nodes(spec).items()):
        token = client_token(state.lineage, address, 1)
        seen = NodeObservation(f"i-{i:08x}", address, token, "running",
                               f"10.0.{i // 250}.{i % 250}:7000")
        record = RecordedNode(address, node.pool, node.provider, node.kind, "created", 1, token,
                              provider_id=seen.provider_id, offering=node.offering,
                              labels=dict(node.labels), observed=observed_attributes(seen))
        if i % drift_every == 0:
            record = replace(record, labels={"tier": "old"})
        state.resources[address] = record
        if i % drift_every != drift_every // 2:
            observations.append(seen)
    return spec, state, {"cloud": observations}


@gc_paused  # as fuzz.lifecycle.reconcile.refresh_and_plan runs it
def pipeline(spec: ClusterSpec, state: State, observations: dict[str, list[NodeObservation]]
             ) -> Plan:
    """Refresh, desired state and diff: everything plan does between the provider calls."""
    return plan_changes(spec, refresh(state, observations, {"cloud": "aws"}), PlanRequest())


def time_plan(count: int) -> tuple[float, int]:
    """Median seconds of the plan pipeline for ``count`` nodes, and the change count."""
    spec, state, observations = scenario(count)
    timings = []
    changes = 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        plan = pipeline(spec, state, observations)
        timings.append(time.perf_counter() - started)
        changes = len(plan.changes)
        del plan
    return statistics.median(timings), changes


def main() -> int:
    """Run the benchmark and print one BENCH line per headline figure."""
    results = {}
    for count in SIZES:
        seconds, changes = time_plan(count)
        results[count] = seconds
        print(f"{count:>7} nodes: plan {seconds:.4f} s, {seconds / count * 1e6:.2f} us/resource, "
              f"{changes} changes (1% drift)")
    growth = results[100_000] / results[10_000]
    print(f"growth 100k/10k: {growth:.2f} x (linear = 10)")
    print(f"BENCH plan_10k_seconds={results[10_000]:.3f} s target<1.0")
    print(f"BENCH plan_growth_100k_over_10k={growth:.2f} x target<12")
    return 0


if __name__ == "__main__":
    sys.exit(main())
