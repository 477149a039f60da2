"""The plan of a Fuzzfile: what the orchestrator would run, as plain JSON-able data.

:func:`workflow_plan` reads only the parsed model (:class:`~fuzz.spec.fuzzfile.Fuzzfile`),
which both dialects (``v1`` and ``v4``) parse into, and leaves out whatever says how the
file was written (``version``, the mount form, ``requires`` spelled as a list): two files
that mean the same workflow have equal plans. ``fuzz workflow validate --json`` prints
it, and the tests compare the plan of a v1 file with that of its upgrade to v4.

Jobs come in :meth:`~fuzz.spec.fuzzfile.Fuzzfile.job_order`, volumes and services in
file order; every mapping inside is in file order too, so the plan of a file is the
same on every run (``json.dumps`` of it is byte-for-byte stable).
"""

from __future__ import annotations

from typing import Any

from fuzz.spec.containerfiles import SCRIPT_PATH
from fuzz.spec.fuzzfile import (
    ContainerSpec,
    Fuzzfile,
    JobSpec,
    PolicySpec,
    ResourceSpec,
    ServiceSpec,
    TransferEndpoint,
    TransferSpec,
    VolumeSpec,
    WithSecret,
)

Plan = dict[str, Any]


def _secret(holder: WithSecret) -> str | None:
    return holder.secret


def _endpoint(end: TransferEndpoint) -> Plan:
    return {"uri": end.uri, "secret": _secret(end)}


def policy_plan(policy: PolicySpec) -> Plan:
    """A timeout (seconds, None: no limit) and how many attempts in all."""
    return {"timeout_seconds": policy.timeout.execute, "attempts": policy.retry.attempts}


def resource_plan(resource: ResourceSpec) -> Plan:
    """One node's share: the request the scheduler places (``by-core`` memory multiplied
    out) and the placement hints the file gives beside it."""
    request = resource.request()
    return {
        "cores": request.cores,
        "affinity": request.affinity,
        "memory_bytes": request.memory_bytes,
        "devices": dict(request.devices),
        "exclusive": request.exclusive,
        "sockets": resource.cpu.sockets,
        "threads": resource.cpu.threads,
        "annotations": dict(resource.annotations),
    }


def _files(item: ContainerSpec) -> dict[str, str]:
    """The container's ``files`` as written, and its script where it is placed as a file."""
    script = item.script_file()
    return {**item.files, SCRIPT_PATH: script} if script is not None else dict(item.files)


def _container_plan(name: str, item: ContainerSpec) -> Plan:
    """What a job and a service share: image, what runs, where, with what, after what."""
    return {
        "name": name,
        "image": {"uri": item.image.uri, "secret": _secret(item.image)},
        "argv": item.argv(),
        "cwd": item.cwd,
        "environment": item.environment(),
        "files": _files(item),
        "mounts": {mount.location: volume for volume, mount in item.mounts.items()},
        "resource": resource_plan(item.resource),
        "dependencies": [{"name": other, "condition": condition}
                         for other, condition in item.dependencies()],
        "multinode": None if item.multinode is None else {
            "nodes": item.multinode.nodes, "implementation": item.multinode.implementation,
            "procs_per_node": item.multinode.procs_per_node},
    }


def job_plan(name: str, job: JobSpec) -> Plan:
    """One job, its defaults merged (the parse merges them): container, policy, task array."""
    array = job.task_array
    return {
        **_container_plan(name, job),
        "annotations": dict(job.annotations),
        "policy": policy_plan(job.policy),
        "task_array": None if array is None else {
            "start": array.start, "end": array.end, "concurrency": array.concurrency},
    }


def service_plan(name: str, service: ServiceSpec) -> Plan:
    """One service (validated, not run yet): container, persistence, policy (v4), network,
    readiness."""
    return {
        **_container_plan(name, service),
        "persist": service.persist,
        "policy": None if service.policy is None else policy_plan(service.policy),
        "network": service.network.model_dump(mode="json", by_alias=True),
        "readiness_probe": None if service.readiness_probe is None
        else service.readiness_probe.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def _transfer_plan(move: TransferSpec) -> Plan:
    return {
        "source": _endpoint(move.source),
        "destination": _endpoint(move.destination),
        "policy": None if move.policy is None else policy_plan(move.policy),
    }


def volume_plan(name: str, volume: VolumeSpec) -> Plan:
    """Whose volume it is, whether it lives with the run or persists (and under which
    name), the most it may hold by its own ``size`` (None: the cluster's limit), and the
    data copied in before and out after."""
    return {
        "name": name,
        "scope": volume.scope,
        "ephemeral": volume.ephemeral,
        "persistent_name": volume.persistent_name,
        "size_bytes": volume.size,
        "ingress": [_transfer_plan(move) for move in volume.ingress],
        "egress": [_transfer_plan(move) for move in volume.egress],
    }


def workflow_plan(fuzzfile: Fuzzfile) -> Plan:
    """The plan of a checked Fuzzfile: its jobs in run order, volumes, services, inline
    files and annotations; no trace of the dialect it was written in."""
    return {
        "jobs": [job_plan(name, fuzzfile.jobs[name]) for name in fuzzfile.job_order()],
        "volumes": [volume_plan(name, volume) for name, volume in fuzzfile.volumes.items()],
        "services": [service_plan(name, service)
                     for name, service in fuzzfile.services.items()],
        "files": dict(fuzzfile.files),
        "annotations": dict(fuzzfile.annotations),
    }
