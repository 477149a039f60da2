"""What routing reads: a member's facts, a workflow's demand, and the decision it gives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fuzz.resources import NodeCapacity, ResourceRequest
from fuzz.spec.federation import PriceList


@dataclass(frozen=True)
class OfferingFacts:
    """A kind of node one of a member's elastic pools may create: one node's capacity (with
    the labels it gets) and its price per hour."""

    pool: str
    capacity: NodeCapacity
    price_per_hour: float


@dataclass(frozen=True)
class MemberFacts:
    """One member as the CLI found it: ``unreachable`` says why it could not be asked
    (empty: it answered); ``nodes`` the whole of each node, ``free`` what each has free
    now (by node name: cores, memory bytes); ``offerings`` what its elastic pools may add;
    ``active_workflows`` its pending and running workflows; ``cached_bytes`` the bytes of
    each ingress source (URI) already in its ingress cache."""

    name: str
    site: str
    labels: Mapping[str, str] = field(default_factory=dict)
    prices: PriceList = field(default_factory=PriceList)
    nodes: tuple[NodeCapacity, ...] = ()
    free: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    active_workflows: int = 0
    cached_bytes: Mapping[str, int] = field(default_factory=dict)
    unreachable: str = ""
    offerings: tuple[OfferingFacts, ...] = ()


@dataclass(frozen=True)
class JobDemand:
    """One job or service: the request of each of its ``nodes`` nodes, run ``tasks``
    times (a task array), each for ``hours``."""

    name: str
    request: ResourceRequest
    nodes: int = 1
    tasks: int = 1
    hours: float = 1.0


@dataclass(frozen=True)
class DataDemand:
    """Ingress data: the ``uris`` under one known source (or one unknown source), where it
    lives (``site``; empty: not known), its ``size`` in bytes and its ``labels``."""

    source: str
    site: str
    size: int
    uris: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowDemand:
    """What a workflow asks of the member it runs on."""

    jobs: tuple[JobDemand, ...]
    data: tuple[DataDemand, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    account: str = ""


@dataclass(frozen=True)
class PolicyVerdict:
    """One policy on one member: whether it applies to the workflow, and if so whether the
    member is allowed."""

    policy: str
    applies: bool
    allowed: bool

    def describe(self) -> str:
        """``export-control: refused`` (``n/a`` when the policy does not apply)."""
        if not self.applies:
            return f"{self.policy}: n/a"
        return f"{self.policy}: {'allowed' if self.allowed else 'refused'}"


@dataclass(frozen=True)
class Assessment:
    """One member judged for one workflow: why it cannot run it (``unfit``, empty if it
    can), the policy verdicts and each cost term (in the price lists' currency)."""

    member: str
    unreachable: str = ""
    unfit: str = ""
    verdicts: tuple[PolicyVerdict, ...] = ()
    compute: float = 0.0
    egress: float = 0.0
    cached_gb: float = 0.0
    wait_hours: float = 0.0
    wait: float = 0.0

    @property
    def allowed(self) -> bool:
        """Whether every policy that applies allows the member."""
        return all(v.allowed for v in self.verdicts if v.applies)

    @property
    def eligible(self) -> bool:
        """Reachable, feasible and allowed by policy."""
        return not self.unreachable and not self.unfit and self.allowed

    @property
    def total(self) -> float:
        """Compute, data movement and queue wait together."""
        return self.compute + self.egress + self.wait

    def refused_by(self) -> list[str]:
        """The policies that refuse this member."""
        return [v.policy for v in self.verdicts if v.applies and not v.allowed]


@dataclass(frozen=True)
class Decision:
    """Where the workflow goes (``chosen``; None: nowhere, ``reason`` says why), with every
    member's assessment, cheapest first."""

    chosen: str | None
    assessments: tuple[Assessment, ...]
    reason: str = ""
