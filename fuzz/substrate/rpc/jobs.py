"""The image and container RPCs of the agent, on top of :class:`~fuzz.substrate.jobs.JobRunner`.

Every failure a caller can cause maps to one gRPC status with a one-line message;
credentials in requests are used for that request only and never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

import grpc

from fuzz.api import substrate_pb2
from fuzz.errors import ConfigError, FuzzError
from fuzz.rpc.server import StatusTable, abort_with, status_for
from fuzz.substrate.capacity.cdi import CdiError
from fuzz.substrate.capacity.leases import LeaseNotFound
from fuzz.substrate.images.reference import (
    Credentials,
    ImageAuthError,
    ImageNotFoundError,
    RegistryUnreachableError,
)
from fuzz.substrate.jobs import (
    JobPermissionError,
    JobRequest,
    JobRequestError,
    JobRunner,
    JobStatus,
)
from fuzz.substrate.launch.sockets import LaunchSocketError
from fuzz.substrate.runtime.bundle import ContainerFile, Mount
from fuzz.substrate.runtime.containers import (
    ContainerExistsError,
    ContainerNotFoundError,
    ContainerStateError,
    ContainerWaitTimeoutError,
)

DEFAULT_GRACE = 10.0
_Reply = TypeVar("_Reply")

_STATUS: tuple[tuple[type[FuzzError], grpc.StatusCode], ...] = (  # for image and job calls
    (ImageNotFoundError, grpc.StatusCode.NOT_FOUND),
    (ContainerNotFoundError, grpc.StatusCode.NOT_FOUND),
    (ImageAuthError, grpc.StatusCode.PERMISSION_DENIED),
    (JobPermissionError, grpc.StatusCode.PERMISSION_DENIED),
    # Not UNAVAILABLE: to a client that means the agent itself is unreachable.
    (RegistryUnreachableError, grpc.StatusCode.FAILED_PRECONDITION),
    (ContainerExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (LeaseNotFound, grpc.StatusCode.FAILED_PRECONDITION),
    (ContainerStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (CdiError, grpc.StatusCode.FAILED_PRECONDITION),  # the node's CDI specs, not the request
    (JobRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (LaunchSocketError, grpc.StatusCode.FAILED_PRECONDITION),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
)


def abort_for(
    context: grpc.ServicerContext, exc: FuzzError, table: StatusTable | None = None
) -> NoReturn:
    """End the call with the status ``table`` (default: the job errors') gives ``exc``."""
    abort_with(context, exc, _STATUS if table is None else table)


def job_status_code(exc: FuzzError) -> grpc.StatusCode:
    """The status a job call ends with for ``exc``."""
    return status_for(exc, _STATUS)


def credentials_from(message: substrate_pb2.RegistryCredentials) -> Credentials | None:
    """Credentials of a request, or None when it carries none."""
    if not message.username and not message.password:
        return None
    return Credentials(message.username, message.password)


def job_request(message: substrate_pb2.StartContainerRequest) -> JobRequest:
    """Turn the wire request into a :class:`JobRequest`."""
    return JobRequest(
        id=message.id,
        image=message.image,
        lease_id=message.lease_id,
        credentials=credentials_from(message.credentials),
        args=tuple(message.args),
        env=tuple(message.env),
        cwd=message.cwd,
        uid=message.uid if message.HasField("uid") else None,
        gid=message.gid if message.HasField("gid") else None,
        mounts=tuple(Mount(Path(m.source), m.destination, m.read_only)
                     for m in message.mounts),
        timeout_seconds=message.timeout_seconds or None,
        stop_grace_seconds=message.stop_grace_seconds or DEFAULT_GRACE,
        log_limit_bytes=message.log_limit_bytes,
        peers=tuple(message.peers),
        files=tuple(ContainerFile(item.path, item.content) for item in message.files),
        launch_token=message.launch_token,
        hostname=message.hostname,
        sandbox=message.sandbox[:512],
        hosts=tuple(message.hosts),
        prepare_only=message.prepare_only,
    )


def status_message(job: JobStatus) -> substrate_pb2.ContainerStatus:
    """Build the wire status of a job."""
    status = job.container
    message = substrate_pb2.ContainerStatus(
        id=status.id,
        state=status.state,
        has_exit_code=status.exit_code is not None,
        exit_code=status.exit_code or 0,
        signal=status.signal or 0,
        oom_killed=status.oom_killed,
        timed_out=status.timed_out,
        cancelled=status.cancelled,
        peak_memory_bytes=status.peak_memory_bytes or 0,
        error=status.error or "",
        image_digest=job.record.image_digest if job.record else "",
        lease_id=job.record.lease_id if job.record else "",
        stdout_bytes=job.log_bytes[0],
        stderr_bytes=job.log_bytes[1],
    )
    if status.started_at is not None:
        message.started_at.FromNanoseconds(round(status.started_at * 1e9))
    if status.finished_at is not None:
        message.finished_at.FromNanoseconds(round(status.finished_at * 1e9))
    return message


class NodeJobs:
    """The base of the Substrate servicer's mixins: the node's jobs."""

    def jobs(self) -> JobRunner:
        """The node's job runner (provided by the servicer)."""
        raise NotImplementedError


class JobRpcs(NodeJobs):
    """The image and container methods of the Substrate servicer (a mixin)."""

    def _run(self, context: grpc.ServicerContext, call: Callable[[JobRunner], _Reply]) -> _Reply:
        try:
            return call(self.jobs())
        except FuzzError as exc:
            abort_for(context, exc)

    def PullImage(
        self, request: substrate_pb2.PullImageRequest, context: grpc.ServicerContext
    ) -> Iterator[substrate_pb2.PullProgress]:
        """Pull an image, streaming progress; the last message carries digest and size."""
        messages: list[str] = []
        try:
            image = self.jobs().images.pull(request.image, credentials_from(request.credentials),
                                            progress=messages.append)
        except FuzzError as exc:
            yield from (substrate_pb2.PullProgress(message=m) for m in messages)
            abort_for(context, exc)
        yield from (substrate_pb2.PullProgress(message=m) for m in messages)
        yield substrate_pb2.PullProgress(message=f"ready {image.digest}", digest=image.digest,
                                         size_bytes=image.size_bytes)

    def StartContainer(
        self, request: substrate_pb2.StartContainerRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.ContainerStatus:
        """Start a job's container under its lease."""
        return self._run(context, lambda jobs: status_message(jobs.start(job_request(request))))

    def StartPreparedContainer(
        self, request: substrate_pb2.ContainerRef, context: grpc.ServicerContext
    ) -> substrate_pb2.ContainerStatus:
        """Start a job's prepared container (only ``runc start`` is left)."""
        return self._run(context, lambda jobs: status_message(jobs.start_prepared(request.id)))

    def GetContainer(
        self, request: substrate_pb2.ContainerRef, context: grpc.ServicerContext
    ) -> substrate_pb2.ContainerStatus:
        """A job's status now."""
        return self._run(context, lambda jobs: status_message(jobs.status(request.id)))

    def WaitContainer(
        self, request: substrate_pb2.WaitContainerRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.ContainerStatus:
        """Block until a job has finished, or the timeout passed: then its status as it is.

        The wait ends early when the call does (the caller went away, or the agent's
        server stopped and cancelled it), so that no worker outlives its call.
        """
        timeout = request.timeout_seconds or None

        def wait(jobs: JobRunner) -> substrate_pb2.ContainerStatus:
            try:
                return status_message(jobs.wait(request.id, timeout, context.is_active))
            except ContainerWaitTimeoutError:
                return status_message(jobs.status(request.id))

        return self._run(context, wait)

    def CancelContainer(
        self, request: substrate_pb2.CancelContainerRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.ContainerStatus:
        """SIGTERM a job, then SIGKILL after the grace."""
        grace = request.grace_seconds or DEFAULT_GRACE
        return self._run(context, lambda jobs: status_message(jobs.cancel(request.id, grace)))

    def ListContainers(
        self, request: substrate_pb2.ListContainersRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.ListContainersResponse:
        """Every job the node knows."""
        return self._run(context, lambda jobs: substrate_pb2.ListContainersResponse(
            containers=[status_message(job) for job in jobs.list()]))

    def StreamLogs(
        self, request: substrate_pb2.StreamLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[substrate_pb2.LogChunk]:
        """A job's stdout or stderr from an offset, following until it has finished."""
        stream: Literal["stdout", "stderr"]
        if request.stream in ("", "stdout"):
            stream = "stdout"
        elif request.stream == "stderr":
            stream = "stderr"
        else:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown log stream {request.stream!r}: use stdout or stderr")
        offset = request.offset
        chunks: Iterator[bytes] = self._run(context, lambda jobs: jobs.containers.read_logs(
            request.id, stream, offset=offset, follow=request.follow, wanted=context.is_active))
        try:
            for data in chunks:
                if not context.is_active():
                    return
                yield substrate_pb2.LogChunk(data=data, offset=offset)
                offset += len(data)
        except FuzzError as exc:
            abort_for(context, exc)

