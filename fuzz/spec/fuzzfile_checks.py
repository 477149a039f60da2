"""Checks across a Fuzzfile's jobs and volumes, run on the raw data of the file.

``requires`` must name other jobs of the file and form no cycle, ``mounts`` must
name declared volumes, and, given the capacities of the cluster, each job must fit
on some node (and a multinode job on enough nodes). Each finding is an
:class:`~fuzz.spec.problems.Issue` at the exact path of the offending key or value.
Values of the wrong type are skipped here: the models report them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from graphlib import CycleError, TopologicalSorter
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fuzz.resources import NodeCapacity, shortages, shortfall
from fuzz.spec.fuzzfile import MultinodeSpec, ResourceSpec
from fuzz.spec.problems import Issue, did_you_mean

ModelT = TypeVar("ModelT", bound=BaseModel)


def _valid(model: type[ModelT], data: Any) -> ModelT | None:
    """``data`` validated by ``model``, or None (the model's errors are reported elsewhere)."""
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def _requires(job: Any) -> list[tuple[int, str]]:
    """The string entries of a job's ``requires`` list, with their indices."""
    requires = job.get("requires") if isinstance(job, Mapping) else None
    if not isinstance(requires, list):
        return []
    return [(index, other) for index, other in enumerate(requires) if isinstance(other, str)]


def requires_issues(jobs: Mapping[Any, Any]) -> Iterator[Issue]:
    """``requires`` entries naming the job itself or a job the file does not have."""
    for name, job in jobs.items():
        for index, other in _requires(job):
            path = ("jobs", name, "requires", index)
            shown = ("jobs", name, "requires")
            if other == name:
                yield Issue(path, "a job cannot require itself", shown=shown)
            elif other not in jobs:
                hint = did_you_mean(other, [str(known) for known in jobs if known != name])
                yield Issue(path, f"unknown job {other!r}{hint}", shown=shown)


def cycle_issues(jobs: Mapping[Any, Any]) -> list[Issue]:
    """One issue per cycle in ``requires`` (``cycle: a -> b -> a``), at its first job's entry.

    A found cycle is broken at that entry and the search goes on, so every cycle is named.
    """
    position = {name: index for index, name in enumerate(jobs)}
    graph = {
        name: [other for _, other in _requires(job) if other != name and other in jobs]
        for name, job in jobs.items()
    }
    issues: list[Issue] = []
    while True:
        try:
            TopologicalSorter(graph).prepare()
        except CycleError as exc:
            # graphlib lists a required job before the job requiring it; reverse that, and
            # start at the job that comes first in the file so the message is stable
            loop = list(reversed(exc.args[1]))[:-1]
            start = min(range(len(loop)), key=lambda index: position[loop[index]])
            loop = loop[start:] + loop[:start]
            first, second = loop[0], loop[1]
            index = next(i for i, other in _requires(jobs[first]) if other == second)
            issues.append(
                Issue(
                    ("jobs", first, "requires", index),
                    "cycle: " + " -> ".join([*loop, first]),
                    shown=("jobs", first, "requires"),
                )
            )
            graph[first].remove(second)
            continue
        return issues


def _unknown_volume(volume: object, declared: Sequence[str]) -> str:
    if not declared:
        return f"unknown volume {volume!r} (no volumes are declared)"
    names = ", ".join(declared)
    return f"unknown volume {volume!r} (declared: {names}){did_you_mean(volume, declared)}"


def mount_issues(jobs: Mapping[Any, Any], volumes: Any) -> Iterator[Issue]:
    """Mounts of volumes that the file's ``volumes:`` does not declare."""
    if volumes is None:
        declared: list[str] = []
    elif isinstance(volumes, Mapping):
        declared = [str(name) for name in volumes]
    else:
        return  # already reported as "must be a mapping"
    for name, job in jobs.items():
        mounts = job.get("mounts") if isinstance(job, Mapping) else None
        if not isinstance(mounts, Mapping):
            continue
        for volume in mounts:
            if volume not in declared:
                yield Issue(("jobs", name, "mounts", volume), _unknown_volume(volume, declared),
                            at="key")


def _node_count_problem(nodes: int, fitting: int, total: int) -> str | None:
    """Why ``nodes`` nodes of which ``fitting`` of ``total`` can hold a share are too few."""
    if fitting >= nodes:
        return None
    if fitting == total:
        return f"needs {nodes} nodes; the cluster has {total}"
    return (f"needs {nodes} nodes that can each hold its resource; "
            f"{fitting} of the cluster's {total} nodes can")


def capacity_issues(
    jobs: Mapping[Any, Any], capacities: Sequence[NodeCapacity], capacities_are_nodes: bool
) -> Iterator[Issue]:
    """Jobs whose per-node request no capacity could ever hold.

    When ``capacities_are_nodes`` (each capacity is one real node, not an offering a
    pool could create many of), a multinode job must also find enough nodes.
    """
    for name, job in jobs.items():
        if not isinstance(job, Mapping):
            continue
        resource = _valid(ResourceSpec, job.get("resource", {}))
        if resource is None:
            continue
        path: tuple[Hashable, ...] = ("jobs", name)
        request = resource.request()
        reason = shortfall(request, capacities)
        if reason is not None:
            yield Issue((*path, "resource"), reason, at="key")
            continue
        multinode = _valid(MultinodeSpec, job.get("multinode"))
        if multinode is None or not capacities_are_nodes:
            continue
        fitting = sum(1 for capacity in capacities if not shortages(request, capacity))
        problem = _node_count_problem(multinode.nodes, fitting, len(capacities))
        if problem is not None:
            yield Issue((*path, "multinode", "nodes"), problem)


def fuzzfile_issues(
    data: Mapping[Any, Any],
    capacities: Sequence[NodeCapacity] | None = None,
    *,
    capacities_are_nodes: bool = False,
) -> list[Issue]:
    """Every cross-job problem of a Fuzzfile given as plain data (e.g. straight from YAML).

    ``capacities`` None skips the checks of what the cluster could hold.
    """
    jobs = data.get("jobs")
    if not isinstance(jobs, Mapping):
        return []
    issues = [*requires_issues(jobs), *cycle_issues(jobs), *mount_issues(jobs, data.get("volumes"))]
    if capacities is not None:
        issues += capacity_issues(jobs, capacities, capacities_are_nodes)
    return issues
