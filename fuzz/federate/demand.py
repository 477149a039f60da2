"""What a workflow asks of a member, read from its Fuzzfile and the federation's data."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from fuzz.federate.model import DataDemand, JobDemand, WorkflowDemand
from fuzz.spec.federation import DataSpec, FederationSpec
from fuzz.spec.fuzzfile import Fuzzfile, JobSpec, ServiceSpec

SECONDS_PER_HOUR = 3600.0
AWS_HOST = re.compile(r"^https?://(?:[^/]+\.)?s3[.-]([a-z0-9-]+)\.amazonaws\.com(?:/|$)")
"""An S3 URL's host names its region (``https://b.s3.eu-west-1.amazonaws.com/k``)."""


def _job(name: str, container: JobSpec | ServiceSpec, job_hours: float) -> JobDemand:
    """One job's or service's demand: its timeout is how long it may run, else ``job_hours``
    (seconds)."""
    timeout = container.policy.timeout.execute if container.policy is not None else None
    array = container.task_array if isinstance(container, JobSpec) else None
    tasks = len(array.task_ids()) if array is not None else 1
    nodes = container.multinode.nodes if container.multinode is not None else 1
    seconds = timeout if timeout is not None else job_hours
    return JobDemand(name, container.resource.request(), nodes, tasks,
                     seconds / SECONDS_PER_HOUR)


def source_site(uri: str) -> str:
    """Where a source not declared in the federation lives, as far as its URI says:
    ``aws:REGION`` for an S3 URL naming its region; empty when it does not say."""
    match = AWS_HOST.match(uri)
    return f"aws:{match.group(1)}" if match else ""


def _declared(uri: str, data: Sequence[DataSpec]) -> DataSpec | None:
    """The declared data holding ``uri``: the longest ``source`` prefix of it."""
    found = [item for item in data if uri.startswith(item.source)]
    return max(found, key=lambda item: len(item.source)) if found else None


def data_demand(uris: Iterable[str], data: Sequence[DataSpec]) -> tuple[DataDemand, ...]:
    """The ingress sources grouped by the declared data they belong to (each once); a
    source the federation does not declare is its own, of unknown size (0 bytes)."""
    grouped: dict[str, list[str]] = {}
    declared: dict[str, DataSpec] = {}
    for uri in uris:
        item = _declared(uri, data)
        key = item.source if item is not None else uri
        if item is not None:
            declared[key] = item
        if uri not in grouped.setdefault(key, []):
            grouped[key].append(uri)
    result = []
    for key, members in grouped.items():
        item = declared.get(key)
        if item is None:
            result.append(DataDemand(key, source_site(key), 0, tuple(members)))
        else:
            result.append(DataDemand(key, item.site, item.size, tuple(members), item.labels))
    return tuple(result)


def workflow_demand(fuzzfile: Fuzzfile, federation: FederationSpec, account: str = ""
                    ) -> WorkflowDemand:
    """What ``fuzzfile`` asks of a member: its jobs and services, its ingress data (inline
    ``file://KEY`` sources travel with the Fuzzfile and are left out), its annotations
    (the workflow labels policies read) and the ``account`` it runs in."""
    hours = federation.routing.job_hours
    jobs = [_job(name, job, hours) for name, job in fuzzfile.jobs.items()]
    jobs += [_job(name, service, hours) for name, service in fuzzfile.services.items()]
    uris = [ingress.source.uri for volume in fuzzfile.volumes.values()
            for ingress in volume.ingress if ingress.source.inline_file is None]
    return WorkflowDemand(tuple(jobs), data_demand(uris, federation.data),
                          dict(fuzzfile.annotations), account)
