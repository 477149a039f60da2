"""Checks across a Fuzzfile's jobs and volumes, run on the raw data of the file.

``requires`` and ``depends-on`` must name other jobs (or services) of the file and
form no cycle, ``mounts`` must name declared volumes, ``file://KEY`` an entry of
``files``, a job's ``files`` must keep clear of its volumes and of each other and fit
what one container may be given, a ``name`` inside a job, service or volume its key,
and, given the
capacities of the cluster, each job must fit on some node (and a multinode job on
enough nodes). A start also refuses what the dialect has but fuzz cannot run yet
(:func:`not_run_issues`). Each finding is an :class:`~fuzz.spec.problems.Issue` at
the exact path of the offending key or value. Values of the wrong type are skipped
here: the models report them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import replace
from graphlib import CycleError, TopologicalSorter
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from fuzz.resources import NodeCapacity, shortages, shortfall
from fuzz.spec import containerfiles
from fuzz.spec.cluster import LimitsSpec
from fuzz.spec.fuzzfile import Annotations, MultinodeSpec, ResourceSpec, TaskArraySpec
from fuzz.spec.fuzzfile_dialect import Dialect, dialect_of, mount_locations, mount_volumes
from fuzz.spec.fuzzfile_values import inline_file_key, mount_location, placed_file_key
from fuzz.spec.labels import inherited_selectors, is_selector_key
from fuzz.spec.problems import Issue, did_you_mean
from fuzz.units import format_bytes, parse_size

ModelT = TypeVar("ModelT", bound=BaseModel)


def _valid(model: type[ModelT], data: Any) -> ModelT | None:
    """``data`` validated by ``model``, or None (the model's errors are reported elsewhere)."""
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


Entry = tuple[tuple[Hashable, ...], str]
"""(the path of a dependency entry inside its job or service, the name it gives)."""


def _dependencies(item: Any) -> list[Entry]:
    """The string names of a job's (or service's) ``requires`` and ``depends-on`` entries."""
    if not isinstance(item, Mapping):
        return []
    found: list[Entry] = []
    requires = item.get("requires")
    if isinstance(requires, list):
        found += [(("requires", index), other) for index, other in enumerate(requires)
                  if isinstance(other, str)]
    depends_on = item.get("depends-on")
    if isinstance(depends_on, list):
        found += [(("depends-on", index, "name"), entry["name"])
                  for index, entry in enumerate(depends_on)
                  if isinstance(entry, Mapping) and isinstance(entry.get("name"), str)]
    return found


def _runnables(data: Mapping[Any, Any]) -> dict[tuple[str, Any], Any]:
    """Every job and service of the file, keyed by (section, name), jobs first."""
    found: dict[tuple[str, Any], Any] = {}
    for section in ("jobs", "services"):
        items = data.get(section)
        if isinstance(items, Mapping):
            found.update({(section, name): item for name, item in items.items()})
    return found


def workload_issues(data: Mapping[Any, Any]) -> Iterator[Issue]:
    """A workflow with neither a job nor a service (services alone are valid, as in
    Fuzzball; a start refuses them until fuzz runs services)."""
    jobs, services = data.get("jobs", {}), data.get("services", {})
    if isinstance(jobs, Mapping) and isinstance(services, Mapping) and not jobs \
            and not services:
        yield Issue(("jobs",), "a workflow needs at least one job or service",
                    at="value" if "jobs" in data else "key")


def dependency_issues(data: Mapping[Any, Any]) -> Iterator[Issue]:
    """Dependencies naming the job (or service) itself or one the file does not have."""
    runnables = _runnables(data)
    names = [str(name) for _, name in runnables]
    kinds = "job or service" if any(section == "services" for section, _ in runnables) \
        else "job"
    for (section, name), item in runnables.items():
        for where, other in _dependencies(item):
            path = (section, name, *where)
            shown = (section, name, where[0])
            if other == name:
                yield Issue(path, f"a {section[:-1]} cannot depend on itself"
                            if where[0] == "depends-on" else "a job cannot require itself",
                            shown=shown)
            elif other not in names:
                hint = did_you_mean(other, [known for known in names if known != name])
                yield Issue(path, f"unknown {kinds} {other!r}{hint}", shown=shown)


def cycle_issues(data: Mapping[Any, Any]) -> list[Issue]:
    """One issue per dependency cycle (``cycle: a -> b -> a``), at its first member's entry.

    A found cycle is broken at that entry and the search goes on, so every cycle is named.
    """
    runnables = _runnables(data)
    section_of = {name: section for section, name in runnables}
    position = {name: index for index, (_, name) in enumerate(runnables)}
    graph = {
        name: [other for _, other in _dependencies(item) if other != name and other in section_of]
        for (_, name), item in runnables.items()
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
            section = section_of[first]
            where = next(w for w, other in _dependencies(runnables[section, first])
                         if other == second)
            issues.append(
                Issue(
                    (section, first, *where),
                    "cycle: " + " -> ".join([*loop, first]),
                    shown=(section, first, where[0]),
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


def mount_issues(data: Mapping[Any, Any]) -> Iterator[Issue]:
    """Mounts (of jobs, services and ``defaults.job``) of volumes that ``volumes:`` lacks;
    in v1 at the mount's key (the volume), in v4 at the volume its path names."""
    volumes = data.get("volumes")
    if volumes is None:
        declared: list[str] = []
    elif isinstance(volumes, Mapping):
        declared = [str(name) for name in volumes]
    else:
        return  # already reported as "must be a mapping"
    holders: list[tuple[tuple[Hashable, ...], Any]] = [
        ((section, name), item) for (section, name), item in _runnables(data).items()]
    defaults = data.get("defaults")
    if isinstance(defaults, Mapping):
        holders.append((("defaults", "job"), defaults.get("job")))
    dialect = dialect_of(data)
    for path, item in holders:
        mounts = item.get("mounts") if isinstance(item, Mapping) else None
        for where, volume in mount_volumes(mounts, dialect):
            if volume not in declared:
                yield Issue((*path, "mounts", *where), _unknown_volume(volume, declared),
                            at="key" if dialect == "v1" else "value")


def name_issues(data: Mapping[Any, Any]) -> Iterator[Issue]:
    """A ``name`` inside a job, service or volume that is not its map key (fuzz, like
    Fuzzball, names each by its key: a different ``name`` would be silently ignored).

    A v4 volume's ``name`` names a persistent volume, unless the volume gives a v1
    ``reference``: then it is the v1 echo of the key (as in a real catalog file).
    """
    v4 = dialect_of(data) == "v4"
    for section in ("jobs", "services", "volumes"):
        items = data.get(section)
        if not isinstance(items, Mapping):
            continue
        for key, item in items.items():
            name = item.get("name") if isinstance(item, Mapping) else None
            if v4 and section == "volumes" and isinstance(item, Mapping) \
                    and item.get("reference") is None:
                continue
            if isinstance(name, str) and name != key:
                message = f"must be the {section[:-1]}'s key {key!r} (or be left out)"
                if v4 and section == "volumes":
                    message = (f"beside reference, name is the v1 echo of the key and must be"
                               f" {key!r}; to choose the persistent volume {name!r}, leave"
                               " reference out")
                yield Issue((section, key, "name"), message)


def inline_file_issues(data: Mapping[Any, Any]) -> Iterator[Issue]:
    """``file://KEY`` (an ingress source, a job's or service's ``files`` value) naming no
    entry of the top-level ``files``."""
    files = data.get("files")
    declared = [str(key) for key in files] if isinstance(files, Mapping) else []
    uses: list[tuple[tuple[Hashable, ...], str, str | None]] = []
    volumes = data.get("volumes")
    for name, volume in volumes.items() if isinstance(volumes, Mapping) else ():
        ingress = volume.get("ingress") if isinstance(volume, Mapping) else None
        for index, move in enumerate(ingress if isinstance(ingress, list) else ()):
            source = move.get("source") if isinstance(move, Mapping) else None
            uri = source.get("uri") if isinstance(source, Mapping) else None
            if isinstance(uri, str):
                uses.append((("volumes", name, "ingress", index, "source", "uri"), uri,
                             inline_file_key(uri)))
    for (section, name), item in _runnables(data).items():
        placed = item.get("files") if isinstance(item, Mapping) else None
        for path, value in placed.items() if isinstance(placed, Mapping) else ():
            if isinstance(value, str):
                uses.append(((section, name, "files", path), value, placed_file_key(value)))
    for path, uri, key in uses:
        if key is not None and key not in declared:
            known = f"declared: {', '.join(declared)}" if declared else "none declared"
            yield Issue(path, f"{uri!r} names no entry of the top-level files ({known})"
                        f"{did_you_mean(key, declared)}")


def _mount_locations(mounts: Any, dialect: Dialect) -> list[tuple[str, str]]:
    """(volume, normal location) of each well-formed entry of a ``mounts`` mapping."""
    found: list[tuple[str, str]] = []
    for volume, location in mount_locations(mounts, dialect):
        try:
            found.append((volume, mount_location(location)))
        except ValueError:
            continue  # reported by the model
    return found


def _placed_bytes(value: Any, declared: Mapping[Any, Any]) -> int:
    """The UTF-8 size of a ``files`` value: the entry it names, or the text itself."""
    if not isinstance(value, str):
        return 0
    key = placed_file_key(value)
    content = declared.get(key) if key is not None else value
    return len(content.encode()) if isinstance(content, str) else 0


def placed_file_issues(data: Mapping[Any, Any]) -> Iterator[Issue]:
    """A job's (or service's) ``files`` entry at, under or above one of its volumes' mount
    locations or another of its files, and ``files`` holding more bytes, or more files,
    than the node agent takes for one container
    (:data:`~fuzz.spec.containerfiles.MAX_FILES_BYTES`, :data:`~.MAX_FILES`), a script
    with a ``#!`` line counted as one of them (it is placed as a file)."""
    files = data.get("files")
    declared = files if isinstance(files, Mapping) else {}
    defaults = data.get("defaults")
    job_defaults = defaults.get("job") if isinstance(defaults, Mapping) else None
    default_mounts = job_defaults.get("mounts") if isinstance(job_defaults, Mapping) else None
    for (section, name), item in _runnables(data).items():
        placed = item.get("files") if isinstance(item, Mapping) else None
        if not isinstance(placed, Mapping):
            continue
        mounts = item.get("mounts") if "mounts" in item or section != "jobs" else default_mounts
        locations = _mount_locations(mounts, dialect_of(data))
        paths = [path for path in placed if isinstance(path, str)
                 and containerfiles.path_problem(path) is None
                 and containerfiles.reserved_problem(path) is None]
        for index, path in enumerate(paths):
            clash = next(((volume, location) for volume, location in locations
                          if containerfiles.overlaps(path, location)), None)
            other = next((other for other in paths[:index]
                          if containerfiles.overlaps(path, other)), None)
            if clash is not None:
                yield Issue((section, name, "files", path),
                            f"collides with volume {clash[0]!r}, mounted at {clash[1]}: a file"
                            " cannot be at, under or above a volume's location (to put a file"
                            " in a volume, ingress it: source file://KEY)", at="key")
            elif other is not None:
                yield Issue((section, name, "files", path),
                            f"collides with the file at {other}: a file cannot be at, under or"
                            " above another", at="key")
        what = section[:-1]
        script = item.get("script")  # with a #! line it is placed too, at SCRIPT_PATH
        script_bytes = [len(script.encode())] \
            if isinstance(script, str) and script.startswith("#!") else []
        count = len(placed) + len(script_bytes)
        if count > containerfiles.MAX_FILES:
            counted = " (its script included)" if script_bytes else ""
            yield Issue((section, name, "files"),
                        f"the {what} places {count} files{counted},"
                        f" over the limit of {containerfiles.MAX_FILES} for one container",
                        at="key")
        total = sum(_placed_bytes(value, declared) for value in placed.values()) \
            + sum(script_bytes)
        limit = containerfiles.MAX_FILES_BYTES
        if total > limit:
            yield Issue((section, name, "files"),
                        f"the {what}'s files hold {total:,} bytes in all, over the limit of"
                        f" {limit:,} bytes ({format_bytes(limit)}) for one container's files"
                        " (put larger data in a volume)", at="key")


def _node_count_problem(nodes: int, fitting: int, total: int) -> str | None:
    """Why ``nodes`` nodes of which ``fitting`` of ``total`` can hold a share are too few."""
    if fitting >= nodes:
        return None
    if fitting == total:
        return f"needs {nodes} nodes; the cluster has {total}"
    return (f"needs {nodes} nodes that can each hold its resource; "
            f"{fitting} of the cluster's {total} nodes can")


def _annotations(holder: Any) -> dict[str, str]:
    """The valid ``annotations`` of a workflow or job given as plain data ({} otherwise)."""
    annotations = holder.get("annotations") if isinstance(holder, Mapping) else None
    try:
        return _ANNOTATIONS.validate_python(annotations) if annotations is not None else {}
    except ValidationError:
        return {}


_ANNOTATIONS: TypeAdapter[dict[str, str]] = TypeAdapter(Annotations)


def capacity_issues(
    jobs: Mapping[Any, Any], capacities: Sequence[NodeCapacity], capacities_are_nodes: bool,
    default_resource: Any = None, workflow_annotations: Mapping[str, str] | None = None,
    section: str = "jobs",
) -> Iterator[Issue]:
    """Jobs (or, with ``section`` "services", services) whose per-node request no
    capacity could ever hold.

    When ``capacities_are_nodes`` (each capacity is one real node, not an offering a
    pool could create many of), a multinode job must also find enough nodes. A job
    without a ``resource`` asks for ``default_resource`` (``defaults.job.resource``).
    The node selectors of ``workflow_annotations`` and of the job's own annotations
    join its resource annotations, as in the parsed model.
    """
    if default_resource is None:
        default_resource = {}
    for name, job in jobs.items():
        if not isinstance(job, Mapping):
            continue
        resource = _valid(ResourceSpec, job.get("resource", default_resource))
        if resource is None:
            continue
        path: tuple[Hashable, ...] = (section, name)
        request = resource.request()
        inherited = inherited_selectors(dict(workflow_annotations or {}), _annotations(job))
        request = replace(request, labels={**inherited, **request.labels})
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


def label_key_issues(data: Mapping[Any, Any],
                     capacities: Sequence[NodeCapacity]) -> Iterator[Issue]:
    """Workflow- and job-level annotation keys that are metadata by their form (no domain
    prefix) but are label keys of some node or pool here: a user who wrote them most
    likely meant to select nodes, so they are refused rather than silently ignored."""
    labels = {key for capacity in capacities for key in capacity.labels}
    holders: list[tuple[tuple[Hashable, ...], str, Any]] = [((), "a workflow's", data)]
    jobs = data.get("jobs")
    holders += [(("jobs", name), "a job's", job)
                for name, job in (jobs.items() if isinstance(jobs, Mapping) else ())]
    for path, whose, holder in holders:
        for key in _annotations(holder):
            if key in labels and not is_selector_key(key):
                yield Issue(
                    (*path, "annotations", key),
                    f"{key!r} is a node label here, but {whose} annotations select nodes only"
                    " by keys with a domain prefix (nvidia.com/gpu.model): move it to"
                    " resource.annotations to select by it, or rename it to keep it as"
                    " metadata", at="key")


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


def volume_size_issues(data: Mapping[Any, Any], limits: LimitsSpec) -> Iterator[Issue]:
    """A volume ``size`` (v4) over what the cluster lets one volume hold."""
    volumes = data.get("volumes")
    for name, volume in volumes.items() if isinstance(volumes, Mapping) else ():
        raw = volume.get("size") if isinstance(volume, Mapping) else None
        try:
            size = parse_size(raw) if isinstance(raw, str | int) else None
        except ValueError:
            continue  # the model reports it
        if size is not None and size > limits.volume_bytes:
            yield Issue(("volumes", name, "size"),
                        f"{raw} is more than one volume may hold here, "
                        f"{format_bytes(limits.volume_bytes)} (orchestrator.limits.volume_bytes)")


def fuzzfile_issues(
    data: Mapping[Any, Any],
    capacities: Sequence[NodeCapacity] | None = None,
    *,
    capacities_are_nodes: bool = False,
    limits: LimitsSpec | None = None,
    for_start: bool = False,
) -> list[Issue]:
    """Every cross-job problem of a Fuzzfile given as plain data (e.g. straight from YAML).

    ``capacities`` None skips the checks of what the cluster could hold; ``limits``
    None those of the cluster's limits; ``for_start`` adds what fuzz cannot run yet
    (:func:`not_run_issues`).
    """
    jobs = data.get("jobs", {})
    if not isinstance(jobs, Mapping):
        return []
    issues = [*workload_issues(data), *dependency_issues(data), *cycle_issues(data),
              *mount_issues(data), *name_issues(data), *inline_file_issues(data),
              *placed_file_issues(data)]
    if capacities is not None:
        defaults = data.get("defaults")
        job_defaults = defaults.get("job") if isinstance(defaults, Mapping) else None
        default_resource = job_defaults.get("resource") if isinstance(job_defaults, Mapping) \
            else None
        issues += capacity_issues(jobs, capacities, capacities_are_nodes, default_resource,
                                  _annotations(data))
        services = data.get("services")
        if isinstance(services, Mapping):  # no defaults, no selectors of the workflow's
            issues += capacity_issues(services, capacities, capacities_are_nodes,
                                      section="services")
        issues += label_key_issues(data, capacities)
    if limits is not None:
        issues += limit_issues(jobs, limits)
        issues += volume_size_issues(data, limits)
    if for_start:
        issues += not_run_issues(data)
    return issues


NOT_RUN_YET = {
    "grpc-probe": "grpc readiness probes are not run yet: use exec, http-get or tcp-socket",
    "volume-annotations": "not honoured: fuzz has no storage provisioners to select by"
                          " annotations; leave them out",
}
"""Why a start refuses a key that the dialect has and validate accepts."""


def not_run_issues(data: Mapping[Any, Any]) -> Iterator[Issue]:
    """What a valid Fuzzfile may hold but fuzz cannot run yet, each with its reason: a
    start (not validate) refuses these, so nothing in a file is silently ignored."""
    services = data.get("services")
    for name, service in services.items() if isinstance(services, Mapping) else ():
        probe = service.get("readiness-probe") if isinstance(service, Mapping) else None
        if isinstance(probe, Mapping) and probe.get("grpc") is not None:
            yield Issue(("services", name, "readiness-probe", "grpc"), NOT_RUN_YET["grpc-probe"],
                        at="key")
        jobs = data.get("jobs")
        if isinstance(jobs, Mapping) and name in jobs:
            yield Issue(("services", name), f"a job is named {name!r} too: a service and a job"
                        " run as tasks of the workflow by their names, which must differ",
                        at="key")
    volumes = data.get("volumes")
    for name, volume in volumes.items() if isinstance(volumes, Mapping) else ():
        if isinstance(volume, Mapping) and volume.get("annotations"):
            yield Issue(("volumes", name, "annotations"), NOT_RUN_YET["volume-annotations"],
                        at="key")
