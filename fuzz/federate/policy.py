"""The federation's policies on one member: which apply to a workflow, and their verdicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fuzz.federate.model import MemberFacts, PolicyVerdict, WorkflowDemand
from fuzz.spec.federation import PolicySpec


def _has(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in wanted.items())


def applies(policy: PolicySpec, demand: WorkflowDemand) -> bool:
    """Whether every condition of the policy holds for the workflow."""
    when = policy.when
    if when.workflow and not _has(demand.labels, when.workflow):
        return False
    if when.data and not any(_has(data.labels, when.data) for data in demand.data):
        return False
    return not when.accounts or demand.account in when.accounts


def allows(policy: PolicySpec, member: MemberFacts) -> bool:
    """Whether the policy lets a workflow it applies to run on ``member``."""
    allow = policy.allow
    if allow.members and member.name not in allow.members:
        return False
    return _has(member.labels, allow.labels)


def verdicts(policies: Sequence[PolicySpec], demand: WorkflowDemand, member: MemberFacts
             ) -> tuple[PolicyVerdict, ...]:
    """Each policy's verdict on running the workflow on ``member``."""
    found = []
    for policy in policies:
        applying = applies(policy, demand)
        found.append(PolicyVerdict(policy.name, applying, not applying or allows(policy, member)))
    return tuple(found)
