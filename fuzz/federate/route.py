"""The routing decision: every member judged, the cheapest eligible one chosen.

A member is eligible when it answered, some of its nodes can hold every job
(feasibility) and every policy that applies allows it; no cost overrides a policy.
Of the eligible, the lowest total cost (compute + data movement + queue wait) wins;
ties go to the shorter wait, then the member named first in the spec.
"""

from __future__ import annotations

from collections.abc import Sequence

from fuzz.federate.cost import compute_cost, egress_cost, wait_hours
from fuzz.federate.model import Assessment, Decision, JobDemand, MemberFacts, WorkflowDemand
from fuzz.federate.policy import verdicts
from fuzz.resources import holds, shortfall
from fuzz.spec.federation import FederationSpec


def _job_unfit(job: JobDemand, member: MemberFacts) -> str:
    """Why no node or offering of ``member`` could hold ``job`` (empty: some could; an
    offering holding it makes as many nodes as a multinode job needs)."""
    offerings = [offering.capacity for offering in member.offerings]
    why = shortfall(job.request, [*member.nodes, *offerings])
    if why:
        return f"job {job.name} {why}"
    if job.nodes > 1 and not any(holds(capacity, job.request) for capacity in offerings):
        able = sum(1 for node in member.nodes if holds(node, job.request))
        if able < job.nodes:
            return f"job {job.name} needs {job.nodes} nodes; {able} could hold it"
    return ""


def unfit(demand: WorkflowDemand, member: MemberFacts) -> str:
    """Why ``member`` cannot run the workflow (empty: it can), job by job."""
    return "; ".join(why for why in (_job_unfit(job, member) for job in demand.jobs) if why)


def assess(demand: WorkflowDemand, member: MemberFacts, federation: FederationSpec
           ) -> Assessment:
    """``member`` judged for the workflow: reachability, feasibility, policy, each cost."""
    judged = verdicts(federation.policies, demand, member)
    if member.unreachable:
        return Assessment(member.name, unreachable=member.unreachable, verdicts=judged)
    why = unfit(demand, member)
    if why:
        return Assessment(member.name, unfit=why, verdicts=judged)
    egress, cached = egress_cost(demand, member, federation.egress)
    hours = wait_hours(demand, member, federation.routing)
    return Assessment(member.name, verdicts=judged, compute=compute_cost(demand, member),
                      egress=egress, cached_gb=cached, wait_hours=hours,
                      wait=hours * federation.routing.wait_price_per_hour)


def _order(assessment: Assessment, rank: dict[str, int]
           ) -> tuple[bool, bool, float, float, int]:
    """Eligible members first, cheapest first; the unreachable last."""
    return (not assessment.eligible, bool(assessment.unreachable), assessment.total,
            assessment.wait_hours, rank[assessment.member])


def route(demand: WorkflowDemand, members: Sequence[MemberFacts], federation: FederationSpec,
          pinned: str | None = None) -> Decision:
    """Where the workflow should run, with the reasons.

    ``pinned`` (``--cluster NAME``) is taken only if it is eligible: a policy that
    refuses it, or a member that cannot run the workflow, refuses the pin.
    """
    rank = {member.name: index for index, member in enumerate(members)}
    judged = tuple(sorted((assess(demand, member, federation) for member in members),
                          key=lambda a: _order(a, rank)))
    if pinned is not None:
        return _pinned(judged, pinned)
    eligible = [a for a in judged if a.eligible]
    if eligible:
        return Decision(eligible[0].member, judged)
    return Decision(None, judged, "no member can run it: " + "; ".join(
        f"{a.member}: {why_not(a)}" for a in judged))


def _pinned(judged: tuple[Assessment, ...], pinned: str) -> Decision:
    found = [a for a in judged if a.member == pinned]
    if not found:
        known = ", ".join(sorted(a.member for a in judged))
        return Decision(None, judged, f"--cluster {pinned}: no such member (members: {known})")
    if found[0].eligible:
        return Decision(pinned, judged)
    return Decision(None, judged, f"--cluster {pinned} is refused: {why_not(found[0])}")


def why_not(assessment: Assessment) -> str:
    """Why an assessed member was not eligible, in a few words."""
    if assessment.unreachable:
        return f"unreachable ({assessment.unreachable})"
    refused = assessment.refused_by()
    if refused:
        return f"policy {', '.join(refused)} does not allow it"
    return assessment.unfit or "eligible"
