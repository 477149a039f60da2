"""The Fuzzfile: a workflow of volumes and jobs, in the public Fuzzball shape (``version: v1``
or ``v4``).

A Fuzzball workflow runs unchanged: the keys, their spelling (``by-core``,
``task-array``) and their meaning follow Fuzzball's Fuzzfile. Unknown keys are
errors. Checks of one value (sizes, durations, uris, paths, env entries) and of
fields within one job (command or script, two mounts at one place) are pydantic
validators, so a problem points at its own value. Checks across jobs and volumes
(``requires``, cycles, mounts of undeclared volumes, what no node could hold) are
in :mod:`fuzz.spec.fuzzfile_checks`; :mod:`fuzz.spec.fuzzfile_loader` runs both.

Both dialects parse into these models: the loader passes the file's dialect in the
validation context, and the few forms that differ (mounts keyed by path, the v4 volume
keys) are read by :mod:`fuzz.spec.fuzzfile_dialect`; ``version`` keeps which it was.
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
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)

from fuzz.resources import Affinity, ResourceRequest
from fuzz.spec import fuzzfile_values as values
from fuzz.spec.cluster import FUZZBALL_MAX_CONCURRENCY
from fuzz.spec.containerfiles import SCRIPT_PATH
from fuzz.spec.fuzzfile_dialect import (
    Dialect,
    dialect,
    mounts_in_v1_form,
    v1_only,
    v4_only,
)
from fuzz.spec.labels import inherited_selectors
from fuzz.units import parse_duration, parse_size

DEFAULT_MEMORY = 2**30
"""Memory a job gets when it names none: 1 GiB."""
SCRIPT_SHELL = "/bin/sh"
"""The shell that runs a job's ``script``."""

Name = Annotated[str, AfterValidator(values.check_name)]
"""A job or volume name."""
AbsolutePath = Annotated[str, AfterValidator(values.absolute_path)]
ContainerFilePath = Annotated[str, AfterValidator(values.container_file_path)]
"""Where a ``files`` entry goes in the container (absolute, in normal form, not reserved)."""
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

    ``sockets``: the cores come from exactly that many sockets, split as evenly as
    possible; ``threads``: each core comes with all its hardware (SMT) threads.
    """

    cores: int = Field(default=1, ge=1)
    affinity: Annotated[Affinity, BeforeValidator(values.upper_text)] = "CORE"
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
            labels=dict(self.annotations),
            sockets=self.cpu.sockets or 0,
            threads=self.cpu.threads,
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
        return None if self.secret is None else values.secret_scope(self.secret)


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


Mounts = Annotated[dict[Name, MountSpec], WrapValidator(mounts_in_v1_form)]
"""Volume → where it appears. A v1 file writes it so; a v4 file keys each mount by its
path (``/work: {volume: work}`` or ``/work: work``), read into this form."""


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
    ``args`` or a ``script`` (given ``args`` as ``$1``...), its env, mounts, files,
    resource and dependencies.

    ``env`` entries are ``NAME=VALUE`` (``NAME=secret://SCOPE/SECRET``: the secret's
    value, see :meth:`env_secrets`); ``mounts`` maps a declared volume to where it
    appears (see :data:`Mounts` for the v4 form); ``files`` maps an absolute path in the
    container to content or to ``file://KEY`` (an entry of the top-level ``files``);
    ``requires`` names what must succeed first, ``depends-on`` what must be RUNNING or
    FINISHED (whatever its result); a file gives one of the two. ``name``, if given, must
    be the map key.
    """

    name: str | None = None
    image: ImageSpec
    command: list[Argument] | None = Field(default=None, min_length=1)
    script: str | None = Field(default=None, min_length=1)
    args: list[Argument] | None = None
    cwd: AbsolutePath | None = None
    env: list[EnvEntry] = Field(default_factory=list)
    mounts: Mounts = Field(default_factory=dict)
    files: dict[ContainerFilePath, str] = Field(default_factory=dict)
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
        """What the container runs: ``command`` + ``args``; or a script with a ``#!`` line
        run as the file :data:`SCRIPT_PATH` (placed by :meth:`Fuzzfile.placed_files`), so
        its interpreter line is honoured as in Fuzzball; or a script without one under
        ``/bin/sh -c`` (``$0`` is the shell). ``args`` are the script's ``$1``..."""
        if self.script_file() is not None:
            return [SCRIPT_PATH, *(self.args or [])]
        if self.script is not None:
            given = [SCRIPT_SHELL, *self.args] if self.args is not None else []
            return [SCRIPT_SHELL, "-c", self.script, *given]
        return [*(self.command or []), *(self.args or [])]

    def script_file(self) -> str | None:
        """The script when it is placed and run as the file :data:`SCRIPT_PATH`: it has a
        ``#!`` line (None: no script, or one run by ``/bin/sh -c``)."""
        return self.script if self.script is not None and self.script.startswith("#!") \
            else None

    def environment(self) -> dict[str, str]:
        """``env`` as a mapping, in file order (a secret's entry holds its reference)."""
        return {name: value for name, _, value in (entry.partition("=") for entry in self.env)}

    def env_secrets(self) -> dict[str, str]:
        """The ``env`` variables whose value is a secret (``secret://SCOPE/NAME``): the job
        gets the secret's value, opened by the runner at launch. Variable → reference."""
        return {name: value for name, value in self.environment().items()
                if value.startswith(values.SECRET_PREFIX)}

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
    """A path inside the volume, ``file://relative/path``; it cannot leave the volume.

    ``file:///results/x`` (a leading ``/``: the volume's root, as in Fuzzball's files) is
    kept as ``file://results/x``, so what moves the data never sees an absolute path.
    """

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        path = values.volume_path(value)
        return values.FILE_PREFIX + path if value.startswith(values.FILE_PREFIX + "/") else value

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
    to copy in (``ingress``) and out (``egress``).

    v1 gives the ``reference``; ``name``, if given, must be the map key. v4 may give the
    ``reference`` the same way (most real v4 files do), or choose with ``use`` and
    ``name``: ``use: ephemeral`` (or nothing) is a new ephemeral volume of the user's,
    ``use: persistent`` the user's own persistent volume, ``name: NAME`` (``use:
    persistent`` or none) the persistent volume NAME; fuzz has no storage provisioners,
    so ``use`` names no other. ``size`` (v4, ephemeral volumes) is the most the volume
    may hold, enforced as ``orchestrator.limits.volume_bytes`` is (which caps it); the
    v4 ``annotations`` are parsed, and a start refuses them
    (:data:`fuzz.spec.fuzzfile_checks.NOT_RUN_YET`). After validation ``reference``
    always holds the chosen volume.
    """

    reference: Annotated[str, AfterValidator(values.volume_reference)] = ""
    use: Annotated[str | None, BeforeValidator(v4_only("use"))] = None
    name: str | None = None
    size: Annotated[Size | None, BeforeValidator(v4_only("size"))] = None
    annotations: Annotated[Annotations | None, BeforeValidator(v4_only("annotations"))] = None
    ingress: list[IngressSpec] = Field(default_factory=list)
    egress: list[EgressSpec] = Field(default_factory=list)

    @field_validator("use")
    @classmethod
    def _provisioner(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("reference"):
            raise ValueError("give reference (the v1 way) or use, not both")
        if value not in values.V4_VOLUME_USES:
            raise ValueError(
                f"fuzz has no storage provisioners, so use {value!r} names none here: use"
                " ephemeral (a new volume for the run) or persistent (with name: one of your"
                " persistent volumes)")
        return value

    @field_validator("name")
    @classmethod
    def _persistent_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or dialect(info) == "v1" or info.data.get("reference"):
            return value  # the v1 echo of the key (checked against it on the raw data)
        if info.data.get("use") == "ephemeral":
            raise ValueError("name names an existing persistent volume, but use: ephemeral"
                             " asks for a new ephemeral one: leave one of them out")
        return values.persistent_name(value)

    @field_validator("size")
    @classmethod
    def _ephemeral_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        reference, use, name = (info.data.get(key) for key in ("reference", "use", "name"))
        persistent = values.volume_parts(reference)[1] == "persistent" if reference \
            else use == "persistent" or name is not None
        if value is not None and persistent:
            raise ValueError("size sizes a new ephemeral volume; a persistent volume keeps"
                             " the size it has: leave size out")
        return value

    @model_validator(mode="after")
    def _choose(self, info: ValidationInfo) -> Self:
        if "reference" in self.model_fields_set:
            return self
        if dialect(info) == "v1":  # as pydantic says a missing field
            raise ValidationError.from_exception_data(
                "VolumeSpec", [{"type": "missing", "loc": ("reference",), "input": {}}])
        reference = values.v4_volume_reference(self.use, self.name)
        object.__setattr__(self, "reference", reference)  # frozen: chosen while validating
        return self

    def _parts(self) -> tuple[str, str, str | None]:
        return values.volume_parts(self.reference)

    @property
    def scope(self) -> str:
        """``user`` or ``account`` (``group`` reads ``account``): whose volume it is."""
        return self._parts()[0]

    @property
    def ephemeral(self) -> bool:
        """True for a volume that lives only as long as its workflow."""
        return self._parts()[1] == "ephemeral"

    @property
    def persistent_name(self) -> str | None:
        """The name of a persistent volume; None for an ephemeral one."""
        if self.ephemeral:
            return None
        return self._parts()[2] or values.DEFAULT_PERSISTENT_NAME


class JobDefaults(FuzzfileModel):
    """``defaults.job``: the ``env``, ``mounts``, ``policy`` and ``resource`` of every job
    that does not give its own (``env`` is merged by variable name, the job's winning)."""

    env: list[EnvEntry] = Field(default_factory=list)
    mounts: Mounts = Field(default_factory=dict)
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
    """A service's named ``ports`` and the ``endpoints`` that expose them; ``host`` (v4):
    the service uses the node's network."""

    host: Annotated[bool, BeforeValidator(v4_only("host"))] = False
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
    says when it is ready, ``policy`` (v4) limits its run time. ``export: workflow`` (v1
    only) is the early catalog's legacy key, accepted and inert (reference §1.3). The
    orchestrator runs it as a task of its workflow (docs/fuzzfile.md, "Services")."""

    persist: bool = False
    export: Annotated[Literal["workflow"] | None, BeforeValidator(values.lower_text),
                      BeforeValidator(v1_only("export"))] = None
    policy: Annotated[PolicySpec | None, BeforeValidator(v4_only("policy"))] = None
    network: ServiceNetworkSpec = Field(default_factory=ServiceNetworkSpec)
    readiness_probe: ReadinessProbe | None = Field(default=None, alias="readiness-probe")


class Fuzzfile(FuzzfileModel):
    """A whole workflow: ``version`` (``v1`` or ``v4``: the dialect it was written in),
    inline ``files``, job ``defaults``, free-form ``annotations``, ``volumes``, (at least
    one of) ``jobs`` and ``services`` (:func:`fuzz.spec.fuzzfile_checks.workload_issues`
    requires one).

    The jobs hold their defaults already merged: ``defaults.job.env`` under the job's
    own ``env`` (by variable name), and ``mounts``, ``policy`` and ``resource`` where
    the job gives none of its own; and their ``resource.annotations`` hold the node
    selectors of the workflow's and the job's annotations (:func:`inherit_selectors`).
    """

    version: Dialect
    files: dict[FileKey, str] = Field(default_factory=dict)
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    annotations: Annotations = Field(default_factory=dict)
    volumes: dict[Name, VolumeSpec] = Field(default_factory=dict)
    jobs: dict[Name, JobSpec] = Field(default_factory=dict)
    services: dict[Name, ServiceSpec] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _read_as_written(cls, value: Dialect, info: ValidationInfo) -> Dialect:
        if value != dialect(info):  # a caller that skipped fuzz.spec.fuzzfile_loader
            raise ValueError(f"a {value} file must be read as {value}"
                             " (fuzz.spec.fuzzfile_loader.parse_fuzzfile does)")
        return value

    @model_validator(mode="after")
    def _merge_defaults(self) -> Self:
        defaults = self.defaults.job
        merged = {name: inherit_selectors(merge_defaults(job, defaults), self.annotations)
                  for name, job in self.jobs.items()}
        object.__setattr__(self, "jobs", merged)  # frozen: the merge is part of validation
        return self

    def placed_files(self, container: ContainerSpec) -> tuple[tuple[str, bytes], ...]:
        """``container``'s ``files`` as (path in the container, content): a ``file://KEY``
        value is the top-level entry KEY, any other text is the content itself; UTF-8.
        Then its script, when it runs as the file :data:`SCRIPT_PATH` (:meth:`argv`).

        Expects a checked Fuzzfile, whose ``file://KEY`` values name entries."""
        placed = []
        for path, value in container.files.items():
            key = values.placed_file_key(value)
            text = self.files[key] if key is not None else value
            placed.append((path, text.encode()))
        script = container.script_file()
        if script is not None:
            placed.append((SCRIPT_PATH, script.encode()))
        return tuple(placed)

    def container(self, name: str) -> JobSpec | ServiceSpec:
        """The job, else the service, of that name (KeyError when neither is)."""
        return self.jobs[name] if name in self.jobs else self.services[name]

    def runnables(self) -> dict[str, JobSpec | ServiceSpec]:
        """Every job and service by name: the services first, then the jobs in
        :meth:`job_order` (a start refuses a job and a service of one name)."""
        return {**self.services, **{name: self.jobs[name] for name in self.job_order()}}

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


def inherit_selectors(job: JobSpec, workflow: dict[str, str]) -> JobSpec:
    """``job`` with the selector keys (:func:`~fuzz.spec.labels.is_selector_key`) of the
    ``workflow``'s and then its own annotations under its ``resource.annotations``, which
    win over both."""
    inherited = inherited_selectors(workflow, job.annotations)
    if not inherited:
        return job
    resource = job.resource.model_copy(
        update={"annotations": {**inherited, **job.resource.annotations}})
    return job.model_copy(update={"resource": resource})


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
