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
from fuzz.spec.cluster import LimitsSpec
from fuzz.spec.fuzzfile import MultinodeSpec, ResourceSpec, TaskArraySpec
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


def _task_count(job: Any) -> tuple[int, tuple[Hashable, ...]]:
    """How many tasks (containers) a job makes, and the key that decides it.

    Arithmetic on the bounds: the tasks themselves are never made here.
    """
    if not isinstance(job, Mapping):
        return 1, ()
    array = _valid(TaskArraySpec, job.get("task-array"))
    if array is not None:
        return len(array.task_ids()), ("task-array", "end")
    multinode = _valid(MultinodeSpec, job.get("multinode"))
    if multinode is not None:
        return multinode.nodes, ("multinode", "nodes")
    return 1, ()


def limit_issues(jobs: Mapping[Any, Any], limits: LimitsSpec) -> Iterator[Issue]:
    """What the cluster's ``orchestrator.limits`` refuse: too many tasks in all (reported
    at the job that makes the most), a task array allowed to run too many at once."""
    counts = {name: _task_count(job) for name, job in jobs.items()}
    total = sum(count for count, _ in counts.values())
    if total > limits.tasks_per_workflow:
        name, (count, key) = max(counts.items(), key=lambda item: item[1][0])
        yield Issue(("jobs", name, *key),
                    f"this workflow would make {total:,} tasks (job {name!r} makes {count:,}), "
                    f"over the cluster's limit of {limits.tasks_per_workflow:,} tasks per "
                    "workflow (orchestrator.limits.tasks_per_workflow)",
                    at="value" if key else "key")
    for name, job in jobs.items():
        array = _valid(TaskArraySpec, job.get("task-array")) if isinstance(job, Mapping) \
            else None
        if array is not None and (array.concurrency or 0) > limits.task_array_concurrency:
            yield Issue(("jobs", name, "task-array", "concurrency"),
                        f"at most {limits.task_array_concurrency} tasks of a task array may "
                        "run at once here (orchestrator.limits.task_array_concurrency)")


def fuzzfile_issues(
    data: Mapping[Any, Any],
    capacities: Sequence[NodeCapacity] | None = None,
    *,
    capacities_are_nodes: bool = False,
    limits: LimitsSpec | None = None,
) -> list[Issue]:
    """Every cross-job problem of a Fuzzfile given as plain data (e.g. straight from YAML).

    ``capacities`` None skips the checks of what the cluster could hold; ``limits``
    None those of the cluster's limits.
    """
    jobs = data.get("jobs")
    if not isinstance(jobs, Mapping):
        return []
    issues = [*requires_issues(jobs), *cycle_issues(jobs), *mount_issues(jobs, data.get("volumes"))]
    if capacities is not None:
        issues += capacity_issues(jobs, capacities, capacities_are_nodes)
    if limits is not None:
        issues += limit_issues(jobs, limits)
    return issues
