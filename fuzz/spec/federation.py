"""The federation spec (``federation.yaml``): member clusters, prices, data and policies.

A federation names the clusters a workflow may be routed to (each member's
orchestrator, how to reach it, its site and labels, its compute price list), what
moving a gigabyte between sites costs, where known ingress data lives (and its
labels), and the policies no cost overrides::

    version: 1
    federation: research
    members:
      onprem:
        server: 127.0.0.1:7401
        ca_file: onprem/.fuzz/server/ca.pem        # relative to this file
        token_file: onprem/.fuzz/server/admin.token
        site: hq
        labels: {on-prem: "true"}
        prices: {core_hour: 0.10, memory_gib_hour: 0.01, gpu_hour: {"*": 3.0}}
    egress:
      - {from: aws:us-east-1, to: "*", per_gb: 0.09}
    data:
      - {source: s3://climate/, site: aws:us-east-1, size: 200GB,
         labels: {classification: export-controlled}}
    policies:
      - name: export-control
        when: {data: {classification: export-controlled}}
        allow: {labels: {on-prem: "true"}}

Problems are one line each, ``federation.yaml:12:5: members.onprem.prices: ...``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from fuzz.spec.federation_file import DEFAULT_FILE as DEFAULT_FILE
from fuzz.spec.problems import Issue
from fuzz.spec.validation import validate_document
from fuzz.spec.yamlsource import SourceMap, read_yaml
from fuzz.units import parse_duration, parse_size

ANY_SITE = "*"

Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]
Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Price = Annotated[float, Field(ge=0)]
Labels = dict[str, str]


class FederationModel(BaseModel):
    """A part of the federation spec: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PriceList(FederationModel):
    """What an hour of a member's node costs, by what a job holds of it: each core, each
    GiB of memory, each GPU (by model, as the node's ``nvidia.com/gpu.model`` label
    says; ``"*"`` any model)."""

    core_hour: Price = 0.0
    memory_gib_hour: Price = 0.0
    gpu_hour: dict[str, Price] = Field(default_factory=dict)


class MemberSpec(FederationModel):
    """One member cluster: its orchestrator (``server`` with ``token_file`` and
    ``ca_file``, or ``insecure``; or a ``context`` from ``fuzz login``), its ``site``
    (where data moves from and to), ``labels`` (what policies select) and ``prices``."""

    server: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    context: str | None = None
    site: str = Field(min_length=1)
    labels: Labels = Field(default_factory=dict)
    prices: PriceList = Field(default_factory=PriceList)


class EgressPrice(FederationModel):
    """What a GB costs to move from site ``from`` to site ``to`` (``"*"``: any site)."""

    from_site: str = Field(alias="from", min_length=1)
    to_site: str = Field(alias="to", min_length=1)
    per_gb: Price


class DataSpec(FederationModel):
    """Ingress data the federation knows: the sources under the URI prefix ``source``
    live at ``site``, hold ``size`` bytes in all, and carry ``labels``."""

    source: str = Field(min_length=1)
    site: str = Field(min_length=1)
    size: Size = 0
    labels: Labels = Field(default_factory=dict)


class PolicyWhen(FederationModel):
    """When a policy applies: every condition given holds (none given: always).
    ``workflow``: the Fuzzfile's annotations; ``data``: the labels of some ingress
    source; ``accounts``: the account (IAM group) the workflow runs in."""

    workflow: Labels = Field(default_factory=dict)
    data: Labels = Field(default_factory=dict)
    accounts: list[str] = Field(default_factory=list)


class PolicyAllow(FederationModel):
    """Which members a workflow the policy applies to may run on: those named in
    ``members``, and those with all of ``labels``."""

    members: list[str] = Field(default_factory=list)
    labels: Labels = Field(default_factory=dict)


class PolicySpec(FederationModel):
    """A rule no cost overrides: ``when`` it applies, only the members it ``allow``s."""

    name: str = Field(min_length=1)
    when: PolicyWhen = Field(default_factory=PolicyWhen)
    allow: PolicyAllow


class RoutingSettings(FederationModel):
    """How routing turns time into money: ``job_hours``, what a job without
    ``policy.timeout.execute`` is expected to run; ``wait_price_per_hour``, what an
    hour of queue wait costs; ``queue_hours_per_workflow``, the wait each workflow
    already queued on a full member adds."""

    job_hours: Duration = 3600.0
    wait_price_per_hour: Price = 0.0
    queue_hours_per_workflow: Duration = 3600.0


class FederationSpec(FederationModel):
    """A whole federation spec."""

    version: int = Field(ge=1, le=1)
    federation: str = Field(min_length=1)
    members: dict[str, MemberSpec] = Field(min_length=1)
    egress: list[EgressPrice] = Field(default_factory=list)
    data: list[DataSpec] = Field(default_factory=list)
    policies: list[PolicySpec] = Field(default_factory=list)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)


def _member_issues(name: str, member: Mapping[str, Any]) -> Iterator[Issue]:
    """How a member's orchestrator is reached: a context, or a server and token file."""
    path = ("members", name)
    has_server = "server" in member or "token_file" in member
    if "context" in member and has_server:
        yield Issue(path, "give context, or server with token_file, not both", at="key")
    elif "context" not in member and not ("server" in member and "token_file" in member):
        yield Issue(path, "needs server and token_file (or context: a `fuzz login` context)",
                    at="key")
    if member.get("insecure") and "ca_file" in member:
        yield Issue((*path, "insecure"), "insecure and ca_file do not go together")


def federation_issues(data: Mapping[Any, Any]) -> Iterator[Issue]:
    """Cross-field rules: how members are reached, and policies naming known members."""
    members = data.get("members")
    known = set(members) if isinstance(members, Mapping) else set()
    for name, member in (members or {}).items() if isinstance(members, Mapping) else ():
        if isinstance(member, Mapping):
            yield from _member_issues(str(name), member)
    policies = data.get("policies")
    for index, policy in enumerate(policies if isinstance(policies, list) else []):
        allow = policy.get("allow") if isinstance(policy, Mapping) else None
        named = allow.get("members") if isinstance(allow, Mapping) else None
        for position, member in enumerate(named if isinstance(named, list) else []):
            if member not in known:
                yield Issue(("policies", index, "allow", "members", position),
                            f"no member {member!r} (members: {', '.join(sorted(known))})")


@dataclass(frozen=True)
class LoadedFederation:
    """A validated federation spec, its absolute ``path`` and its source map."""

    spec: FederationSpec
    path: Path
    source: SourceMap

    @property
    def base_dir(self) -> Path:
        """Relative paths in the spec are relative to its directory."""
        return self.path.parent


def load_federation(path: Path, display_name: str | None = None) -> LoadedFederation:
    """Read and validate a federation spec; SpecError with every problem, one a line."""
    document = read_yaml(path, display_name if display_name is not None else str(path))
    spec = validate_document(document, FederationSpec, federation_issues)
    return LoadedFederation(spec, path.absolute(), document.source)
