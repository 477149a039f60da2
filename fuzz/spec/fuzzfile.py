"""The Fuzzfile: a workflow of volumes and jobs, in the public Fuzzball shape (``version: v1``).

A Fuzzball workflow runs unchanged: the keys, their spelling (``by-core``,
``task-array``) and their meaning follow Fuzzball's Fuzzfile. Unknown keys are
errors. Checks of one value (sizes, durations, uris, paths, env entries) and of
fields within one job (command or script, two mounts at one place) are pydantic
validators, so a problem points at its own value. Checks across jobs and volumes
(``requires``, cycles, mounts of undeclared volumes, what no node could hold) are
in :mod:`fuzz.spec.fuzzfile_checks`; :mod:`fuzz.spec.fuzzfile_loader` runs both.
"""

from __future__ import annotations

from graphlib import TopologicalSorter
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fuzz.resources import Affinity, ResourceRequest
from fuzz.spec import fuzzfile_values as values
from fuzz.spec.cluster import FUZZBALL_MAX_CONCURRENCY
from fuzz.units import parse_duration, parse_size

FUZZFILE_VERSION = "v1"
DEFAULT_MEMORY = 2**30
"""Memory a job gets when it names none: 1 GiB."""
SCRIPT_SHELL = "/bin/sh"
"""The shell that runs a job's ``script``."""

Name = Annotated[str, AfterValidator(values.check_name)]
"""A job or volume name."""
AbsolutePath = Annotated[str, AfterValidator(values.absolute_path)]
EnvEntry = Annotated[str, AfterValidator(values.env_entry)]
SecretReference = Annotated[str, AfterValidator(values.secret_reference)]
Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
"""Bytes, written ``12GB``, ``512MiB`` or as a number."""
Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
"""Seconds, written ``30m``, ``1h30m`` or as a number."""
Argument = Annotated[str, BeforeValidator(values.scalar_text)]
"""A ``command`` or ``args`` item: a YAML number or boolean becomes its text, as in Fuzzball."""
Annotations = dict[str, Annotated[str, BeforeValidator(values.scalar_text)]]
"""Free-form ``annotations``: string keys, scalar values kept as text."""
FileKey = Annotated[str, AfterValidator(values.file_key)]
DependencyStatus = Annotated[
    Literal["RUNNING", "STARTED", "FINISHED"], BeforeValidator(values.upper_text)]
"""When a dependency is met (any case): once the other has started running (STARTED is the
v3.0 word for it), or once it finished whatever its result. Fuzzball v3.0's ERROR and
CANCELLED are refused (see :data:`REFUSED_STATUSES`)."""
REFUSED_STATUSES = ("ERROR", "CANCELLED")


class FuzzfileModel(BaseModel):
    """A part of a Fuzzfile: unknown keys are errors and types are not coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CpuSpec(FuzzfileModel):
    """Cores per node and how they are picked (``affinity``: CORE, SOCKET, NUMA or NONE).

    ``sockets`` asks for that many sockets; ``threads`` lets hardware threads count as cores.
    """

    cores: int = Field(default=1, ge=1)
    affinity: Affinity = "CORE"
    sockets: int | None = Field(default=None, ge=1)
    threads: bool = False


class MemorySpec(FuzzfileModel):
    """Memory per node in bytes; with ``by-core: true`` the size is per core."""

    size: Size = DEFAULT_MEMORY
    by_core: bool = Field(default=False, alias="by-core")


class ResourceSpec(FuzzfileModel):
    """What one node of a job holds: cpu, memory, devices (``nvidia.com/gpu: 1``), exclusivity."""

    cpu: CpuSpec = Field(default_factory=CpuSpec)
    memory: MemorySpec = Field(default_factory=MemorySpec)
    devices: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    exclusive: bool = False
    annotations: Annotations = Field(default_factory=dict)

    def request(self) -> ResourceRequest:
        """The request for one node, with ``by-core`` memory multiplied out."""
        memory = self.memory.size * (self.cpu.cores if self.memory.by_core else 1)
        return ResourceRequest(
            cores=self.cpu.cores,
            affinity=self.cpu.affinity,
            memory_bytes=memory,
            devices=dict(self.devices),
            exclusive=self.exclusive,
        )


class WithSecret(FuzzfileModel):
    """Something fetched with credentials: ``secret: secret://user/NAME`` (or ``account``)."""

    secret: SecretReference | None = None

    @property
    def secret_name(self) -> str | None:
        """The secret's bare name (``secret://user/ghcr`` → ``ghcr``), or None."""
        return None if self.secret is None else values.secret_name(self.secret)

    @property
    def secret_scope(self) -> str | None:
        """``user`` or ``account`` (whose secret it is), or None without a secret."""
        return None if self.secret is None else self.secret.split("/")[2]


class ImageSpec(WithSecret):
    """The job's container image: ``docker://REPOSITORY[:TAG]`` or ``…@sha256:DIGEST``, or
    an Apptainer SIF image ``oras://REPOSITORY[:TAG]``.

    No tag means ``latest``. ``decryption-secret`` (``decryptionSecret``) is refused:
    encrypted SIF images are not supported.
    """

    uri: Annotated[str, AfterValidator(values.image_uri)]
    decryption_secret: Annotated[object, AfterValidator(values.no_decryption_secret)] = Field(
        default=None, validation_alias=AliasChoices("decryption-secret", "decryptionSecret"))

    @property
    def reference(self) -> str:
        """The image reference without ``docker://`` (``127.0.0.1:5000/busybox:latest``)."""
        return self.uri.removeprefix(values.DOCKER_PREFIX)


class MountSpec(FuzzfileModel):
    """Where a volume appears in the job's container: an absolute path, stored normalised."""

    location: Annotated[str, AfterValidator(values.mount_location)]


class TimeoutPolicy(FuzzfileModel):
    """``execute``: the longest one attempt of the job may run, in seconds (None: no limit)."""

    execute: Duration | None = None


class RetryPolicy(FuzzfileModel):
    """``attempts``: how many times in all the job may run (1 means it is not retried)."""

    attempts: int = Field(default=1, ge=1)


class PolicySpec(FuzzfileModel):
    """A job's timeout and retry policy."""

    timeout: TimeoutPolicy = Field(default_factory=TimeoutPolicy)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


class DependencySpec(FuzzfileModel):
    """One ``depends-on`` entry: wait for job or service ``name`` to reach ``status``."""

    name: str
    status: DependencyStatus = "FINISHED"
    description: str | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _refused_status(cls, value: object) -> object:
        if isinstance(value, str) and value.upper() in REFUSED_STATUSES:
            raise ValueError(
                f"status {value!r} (Fuzzball v3.0) is not supported: use FINISHED (whatever"
                " the result) or RUNNING")
        return value

    @property
    def condition(self) -> Literal["RUNNING", "FINISHED"]:
        """RUNNING (STARTED reads the same) or FINISHED."""
        return "FINISHED" if self.status == "FINISHED" else "RUNNING"


class MultinodeSpec(FuzzfileModel):
    """An MPI (or GASNet) job across ``nodes`` nodes; ``resource`` is per node.

    ``generic`` wraps nothing: the job's own launcher reads the ``MULTINODE_*`` variables.
    ``ompi`` is Fuzzball's other spelling of ``openmpi``. ``procs-per-node``: MPI
    processes per node (default: the cores each node's container is given).
    """

    nodes: int = Field(ge=1)
    implementation: Literal["openmpi", "ompi", "mpich", "gasnet", "generic"]
    procs_per_node: int | None = Field(
        default=None, ge=1, validation_alias=AliasChoices("procs-per-node", "procsPerNode"))


class TaskArraySpec(FuzzfileModel):
    """Run the job once per index ``start``..``end`` (inclusive), at most ``concurrency`` at once.

    Each task sees its index in ``FB_TASK_ID`` (as in Fuzzball) and ``FUZZ_TASK_ID``.
    """

    start: int = Field(ge=0)
    end: int
    concurrency: int | None = Field(default=None, ge=1)

    @field_validator("concurrency")
    @classmethod
    def _fuzzball_bound(cls, value: int | None) -> int | None:
        if value is not None and value > FUZZBALL_MAX_CONCURRENCY:
            raise ValueError(f"must be at most {FUZZBALL_MAX_CONCURRENCY} (Fuzzball's limit)")
        return value

    @field_validator("end")
    @classmethod
    def _end_not_before_start(cls, value: int, info: ValidationInfo) -> int:
        start = info.data.get("start")
        if start is not None and value < start:
            raise ValueError(f"must be >= start ({start})")
        return value

    def task_ids(self) -> range:
        """The task indices, in order."""
        return range(self.start, self.end + 1)


Dependency = tuple[str, Literal["SUCCEEDED", "RUNNING", "FINISHED"]]
"""(job or service, condition): ``requires`` waits for SUCCEEDED, ``depends-on`` for its status."""


class ContainerSpec(FuzzfileModel):
    """What a job and a service share: a container from ``image`` running ``command`` +
    ``args`` or a ``script``, its env, mounts, files, resource and dependencies.

    ``env`` entries are ``NAME=VALUE``; ``mounts`` maps a declared volume to where it
    appears; ``files`` maps an absolute path in the container to content or to
    ``file://KEY`` (an entry of the top-level ``files``); ``requires`` names what must
    succeed first, ``depends-on`` what must be RUNNING or FINISHED (whatever its result);
    a file gives one of the two. ``name``, if given, must be the map key.
    """

    name: str | None = None
    image: ImageSpec
    command: list[Argument] | None = Field(default=None, min_length=1)
    script: str | None = Field(default=None, min_length=1)
    args: list[Argument] | None = None
    cwd: AbsolutePath | None = None
    env: list[EnvEntry] = Field(default_factory=list)
    mounts: dict[Name, MountSpec] = Field(default_factory=dict)
    files: dict[AbsolutePath, str] = Field(default_factory=dict)
    resource: ResourceSpec = Field(default_factory=ResourceSpec)
    requires: list[str] = Field(default_factory=list)
    depends_on: list[DependencySpec] = Field(default_factory=list, alias="depends-on")
    multinode: MultinodeSpec | None = None

    @field_validator("depends_on")
    @classmethod
    def _not_with_requires(cls, value: list[DependencySpec], info: ValidationInfo
                           ) -> list[DependencySpec]:
        if value and info.data.get("requires"):
            raise ValueError("give requires or depends-on, not both (Fuzzball ignores"
                             " requires beside depends-on)")
        return value

    @field_validator("script")
    @classmethod
    def _script_or_command(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("command") is not None:
            raise ValueError("give a command or a script, not both")
        return value

    @field_validator("args")
    @classmethod
    def _args_need_command(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is not None and "command" in info.data and info.data["command"] is None:
            raise ValueError("args need a command (a script takes none)")
        return value

    @field_validator("env")
    @classmethod
    def _env_names_unique(cls, value: list[str]) -> list[str]:
        first: dict[str, int] = {}
        for index, entry in enumerate(value):
            name = entry.partition("=")[0]
            if name in first:
                raise ValueError(f"{name} is set twice (env[{first[name]}] and env[{index}])")
            first[name] = index
        return value

    @field_validator("mounts")
    @classmethod
    def _one_mount_per_location(cls, value: dict[str, MountSpec]) -> dict[str, MountSpec]:
        mounted: dict[str, str] = {}
        for volume, mount in value.items():
            if mount.location in mounted:
                raise ValueError(
                    f"volumes {mounted[mount.location]!r} and {volume!r} are both mounted"
                    f" at {mount.location}"
                )
            mounted[mount.location] = volume
        return value

    @model_validator(mode="after")
    def _runs_something(self) -> Self:
        if self.command is None and self.script is None:
            raise ValueError("needs a command or a script")
        return self

    def argv(self) -> list[str]:
        """What the container runs: ``command`` + ``args``, or the script under ``/bin/sh -c``."""
        if self.script is not None:
            return [SCRIPT_SHELL, "-c", self.script]
        return [*(self.command or []), *(self.args or [])]

    def environment(self) -> dict[str, str]:
        """``env`` as a mapping, in file order."""
        return {name: value for name, _, value in (entry.partition("=") for entry in self.env)}

    def dependencies(self) -> list[Dependency]:
        """What must happen first: each (name, SUCCEEDED | RUNNING | FINISHED), in file order."""
        if self.depends_on:
            return [(entry.name, entry.condition) for entry in self.depends_on]
        return [(name, "SUCCEEDED") for name in self.requires]


class JobSpec(ContainerSpec):
    """One job: a container (see :class:`ContainerSpec`) with a ``policy`` and, optionally,
    a ``task-array``; a task-array task also sees its index in ``FB_TASK_ID`` and
    ``FUZZ_TASK_ID``. ``annotations`` are free-form metadata.
    """

    annotations: Annotations = Field(default_factory=dict)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    task_array: TaskArraySpec | None = Field(default=None, alias="task-array")

    @field_validator("task_array")
    @classmethod
    def _not_multinode(
        cls, value: TaskArraySpec | None, info: ValidationInfo
    ) -> TaskArraySpec | None:
        if value is not None and info.data.get("multinode") is not None:
            raise ValueError("a job cannot be both a task array and multinode")
        return value


class TransferEndpoint(WithSecret):
    """One end of a data transfer: a ``uri`` and, if it needs credentials, a ``secret``."""

    uri: str


class IngressSource(TransferEndpoint):
    """Where ingress data comes from: ``http(s)://``, ``s3://BUCKET/KEY``, ``file:///path``
    (a host path under the cluster's allowed roots) or ``file://KEY`` (an inline file)."""

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        return values.external_uri(value, ("http", "https", "s3", "file"), inline_files=True)

    @property
    def inline_file(self) -> str | None:
        """``KEY`` when the source is ``file://KEY``, the top-level ``files`` entry KEY."""
        return values.inline_file_key(self.uri)


class EgressDestination(TransferEndpoint):
    """Where egress data goes: ``s3://BUCKET/KEY`` or ``file:///path``."""

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        return values.external_uri(value, ("s3", "file"))


class VolumeFile(TransferEndpoint):
    """A path inside the volume, ``file://relative/path``; it cannot leave the volume."""

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        values.volume_path(value)
        return value

    @property
    def path(self) -> str:
        """The normalised path relative to the volume's root (``results/out.txt``)."""
        return values.volume_path(self.uri)


class TransferSpec(FuzzfileModel):
    """A copy from ``source`` to ``destination``, with its own ``policy`` (timeout, attempts)."""

    source: TransferEndpoint
    destination: TransferEndpoint
    policy: PolicySpec | None = None


class IngressSpec(TransferSpec):
    """Data copied into the volume before the first job that mounts it."""

    source: IngressSource
    destination: VolumeFile


class EgressSpec(TransferSpec):
    """Data copied out of the volume after the workflow's jobs finish."""

    source: VolumeFile
    destination: EgressDestination


class VolumeSpec(FuzzfileModel):
    """A volume: ``volume://user/ephemeral`` (lives as long as the workflow; a name after it
    is Fuzzball's too and changes nothing) or ``volume://user/persistent[/NAME]`` (no name:
    the class's own, ``persistent``), or the same under ``account`` (``group``), with data
    to copy in (``ingress``) and out (``egress``). ``name``, if given, must be the map key.
    """

    name: str | None = None
    reference: Annotated[str, AfterValidator(values.volume_reference)]
    ingress: list[IngressSpec] = Field(default_factory=list)
    egress: list[EgressSpec] = Field(default_factory=list)

    @property
    def scope(self) -> str:
        """``user`` or ``account`` (``group`` reads ``account``): whose volume it is."""
        return values.volume_parts(self.reference)[0]

    @property
    def ephemeral(self) -> bool:
        """True for a volume that lives only as long as its workflow."""
        return values.volume_parts(self.reference)[1] == "ephemeral"

    @property
    def persistent_name(self) -> str | None:
        """The name of a persistent volume; None for an ephemeral one."""
        if self.ephemeral:
            return None
        return values.volume_parts(self.reference)[2] or values.DEFAULT_PERSISTENT_NAME


class JobDefaults(FuzzfileModel):
    """``defaults.job``: the ``env``, ``mounts``, ``policy`` and ``resource`` of every job
    that does not give its own (``env`` is merged by variable name, the job's winning)."""

    env: list[EnvEntry] = Field(default_factory=list)
    mounts: dict[Name, MountSpec] = Field(default_factory=dict)
    policy: PolicySpec | None = None
    resource: ResourceSpec | None = None


class DefaultsSpec(FuzzfileModel):
    """``defaults``: only ``job`` exists."""

    job: JobDefaults = Field(default_factory=JobDefaults)


class PortSpec(FuzzfileModel):
    """A named container port of a service (``protocol`` tcp or udp, any case)."""

    name: Name
    port: int = Field(ge=1, le=65535)
    protocol: Annotated[Literal["tcp", "udp"], BeforeValidator(values.lower_text)] = "tcp"


class EndpointSpec(FuzzfileModel):
    """An endpoint reachable through Fuzzball's proxy, on the port named ``port-name``."""

    name: Name
    port_name: str = Field(alias="port-name")
    protocol: Annotated[Literal["http", "https", "grpc", "grpcs", "tcp", "tls"],
                        BeforeValidator(values.lower_text)] = "http"
    type: Annotated[Literal["path", "subdomain"], BeforeValidator(values.lower_text)] = "path"
    scope: Annotated[Literal["user", "group", "organization", "public"],
                     BeforeValidator(values.lower_text)] = "group"


class ServiceNetworkSpec(FuzzfileModel):
    """A service's named ``ports`` and the ``endpoints`` that expose them."""

    ports: list[PortSpec] = Field(default_factory=list)
    endpoints: list[EndpointSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _endpoints_name_ports(self) -> Self:
        names = [port.name for port in self.ports]
        for endpoint in self.endpoints:
            if endpoint.port_name not in names:
                known = ", ".join(names) or "none"
                raise ValueError(f"endpoint {endpoint.name!r} names port"
                                 f" {endpoint.port_name!r}, which is not in ports ({known})")
        return self


class ExecProbe(FuzzfileModel):
    """A probe command: ready when it exits 0."""

    command: list[Argument] = Field(min_length=1)


class HttpHeader(FuzzfileModel):
    """One header an http probe sends."""

    name: str
    value: str


class HttpProbe(FuzzfileModel):
    """An http(s) GET: ready on a 2xx or 3xx answer."""

    path: str = "/"
    port: int = Field(ge=1, le=65535)
    scheme: Annotated[Literal["HTTP", "HTTPS"], BeforeValidator(values.upper_text)] = "HTTP"
    http_headers: list[HttpHeader] = Field(default_factory=list, alias="http-headers")


class TcpProbe(FuzzfileModel):
    """A TCP connect: ready when it connects."""

    port: int = Field(ge=1, le=65535)


class GrpcProbe(FuzzfileModel):
    """A gRPC health check."""

    port: int = Field(ge=1, le=65535)
    service: str | None = None


class ReadinessProbe(FuzzfileModel):
    """When a service counts as RUNNING: exactly one of ``exec``, ``http-get``,
    ``tcp-socket``, ``grpc``, with Kubernetes' timing fields (and defaults)."""

    exec: ExecProbe | None = None
    http_get: HttpProbe | None = Field(default=None, alias="http-get")
    tcp_socket: TcpProbe | None = Field(default=None, alias="tcp-socket")
    grpc: GrpcProbe | None = None
    initial_delay_seconds: int = Field(default=0, ge=0, alias="initial-delay-seconds")
    period_seconds: int = Field(default=10, ge=1, alias="period-seconds")
    timeout_seconds: int = Field(default=1, ge=1, alias="timeout-seconds")
    success_threshold: int = Field(default=1, ge=1, alias="success-threshold")
    failure_threshold: int = Field(default=3, ge=1, alias="failure-threshold")

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        given = [key for key, action in (("exec", self.exec), ("http-get", self.http_get),
                                         ("tcp-socket", self.tcp_socket), ("grpc", self.grpc))
                 if action is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of exec, http-get, tcp-socket or grpc"
                             + (f" (given: {', '.join(given)})" if given else ""))
        return self


class ServiceSpec(ContainerSpec):
    """A long-running container (see :class:`ContainerSpec`): ``persist`` keeps it up until
    the workflow is stopped, ``network`` names its ports and endpoints, ``readiness-probe``
    says when it is RUNNING. Parsed and checked; fuzz does not run services yet."""

    persist: bool = False
    network: ServiceNetworkSpec = Field(default_factory=ServiceNetworkSpec)
    readiness_probe: ReadinessProbe | None = Field(default=None, alias="readiness-probe")


class Fuzzfile(FuzzfileModel):
    """A whole workflow: ``version: v1``, inline ``files``, job ``defaults``, free-form
    ``annotations``, ``volumes``, (at least one of) ``jobs`` and ``services``.

    The jobs hold their defaults already merged: ``defaults.job.env`` under the job's
    own ``env`` (by variable name), and ``mounts``, ``policy`` and ``resource`` where
    the job gives none of its own.
    """

    version: Literal["v1"]
    files: dict[FileKey, str] = Field(default_factory=dict)
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    annotations: Annotations = Field(default_factory=dict)
    volumes: dict[Name, VolumeSpec] = Field(default_factory=dict)
    jobs: dict[Name, JobSpec] = Field(min_length=1)
    services: dict[Name, ServiceSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _merge_defaults(self) -> Self:
        defaults = self.defaults.job
        merged = {name: merge_defaults(job, defaults) for name, job in self.jobs.items()}
        object.__setattr__(self, "jobs", merged)  # frozen: the merge is part of validation
        return self

    def job_order(self) -> list[str]:
        """Every job after the jobs it requires: wave by wave, each wave in file order.

        Expects a checked Fuzzfile (:func:`fuzz.spec.fuzzfile_loader.parse_fuzzfile`),
        whose dependencies form no cycle (those on services are left out).
        """
        position = {name: index for index, name in enumerate(self.jobs)}
        sorter = TopologicalSorter({
            name: [other for other, _ in job.dependencies() if other in self.jobs]
            for name, job in self.jobs.items()})
        sorter.prepare()
        order: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=position.__getitem__)
            order += ready
            sorter.done(*ready)
        return order


def merge_defaults(job: JobSpec, defaults: JobDefaults) -> JobSpec:
    """``job`` with ``defaults`` applied: env merged by name (the job's entries win, after
    the defaults'), ``mounts``, ``policy`` and ``resource`` taken whole where the job
    gives none."""
    given = job.model_fields_set
    own = {entry.partition("=")[0] for entry in job.env}
    update: dict[str, object] = {
        "env": [e for e in defaults.env if e.partition("=")[0] not in own] + job.env}
    if "mounts" not in given and defaults.mounts:
        update["mounts"] = dict(defaults.mounts)
    if "policy" not in given and defaults.policy is not None:
        update["policy"] = defaults.policy
    if "resource" not in given and defaults.resource is not None:
        update["resource"] = defaults.resource
    return job.model_copy(update=update)
