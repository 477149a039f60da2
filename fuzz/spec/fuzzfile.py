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


class MultinodeSpec(FuzzfileModel):
    """An MPI (or GASNet) job across ``nodes`` nodes; ``resource`` is per node."""

    nodes: int = Field(ge=1)
    implementation: Literal["openmpi", "mpich", "gasnet"]


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


class JobSpec(FuzzfileModel):
    """One job: a container from ``image`` running ``command`` + ``args`` or a ``script``.

    ``env`` entries are ``NAME=VALUE``; ``mounts`` maps a declared volume to where it
    appears; ``requires`` names the jobs that must finish first. A task-array task
    also sees its index in ``FB_TASK_ID`` and ``FUZZ_TASK_ID``.
    """

    image: ImageSpec
    command: list[str] | None = Field(default=None, min_length=1)
    script: str | None = Field(default=None, min_length=1)
    args: list[str] | None = None
    cwd: AbsolutePath | None = None
    env: list[EnvEntry] = Field(default_factory=list)
    mounts: dict[Name, MountSpec] = Field(default_factory=dict)
    resource: ResourceSpec = Field(default_factory=ResourceSpec)
    requires: list[str] = Field(default_factory=list)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    multinode: MultinodeSpec | None = None
    task_array: TaskArraySpec | None = Field(default=None, alias="task-array")

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

    @field_validator("task_array")
    @classmethod
    def _not_multinode(
        cls, value: TaskArraySpec | None, info: ValidationInfo
    ) -> TaskArraySpec | None:
        if value is not None and info.data.get("multinode") is not None:
            raise ValueError("a job cannot be both a task array and multinode")
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


class TransferEndpoint(WithSecret):
    """One end of a data transfer: a ``uri`` and, if it needs credentials, a ``secret``."""

    uri: str


class IngressSource(TransferEndpoint):
    """Where ingress data comes from: ``http(s)://``, ``s3://BUCKET/KEY`` or ``file:///path``."""

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        return values.external_uri(value, ("http", "https", "s3", "file"))


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
    """A copy from ``source`` to ``destination``."""

    source: TransferEndpoint
    destination: TransferEndpoint


class IngressSpec(TransferSpec):
    """Data copied into the volume before the first job that mounts it."""

    source: IngressSource
    destination: VolumeFile


class EgressSpec(TransferSpec):
    """Data copied out of the volume after the workflow's jobs finish."""

    source: VolumeFile
    destination: EgressDestination


class VolumeSpec(FuzzfileModel):
    """A volume: ``volume://user/ephemeral`` (lives as long as the workflow) or
    ``volume://user/persistent/NAME``, with data to copy in (``ingress``) and out (``egress``).
    """

    reference: Annotated[str, AfterValidator(values.volume_reference)]
    ingress: list[IngressSpec] = Field(default_factory=list)
    egress: list[EgressSpec] = Field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        """True for a volume that lives only as long as its workflow."""
        return self.reference == values.EPHEMERAL_VOLUME

    @property
    def persistent_name(self) -> str | None:
        """The name of a persistent volume; None for an ephemeral one."""
        if self.ephemeral:
            return None
        return self.reference.removeprefix(values.PERSISTENT_VOLUME_PREFIX)


class Fuzzfile(FuzzfileModel):
    """A whole workflow: ``version: v1``, ``volumes`` and (at least one of) ``jobs``."""

    version: Literal["v1"]
    volumes: dict[Name, VolumeSpec] = Field(default_factory=dict)
    jobs: dict[Name, JobSpec] = Field(min_length=1)

    def job_order(self) -> list[str]:
        """Every job after the jobs it requires: wave by wave, each wave in file order.

        Expects a checked Fuzzfile (:func:`fuzz.spec.fuzzfile_loader.parse_fuzzfile`),
        whose ``requires`` name only its own jobs and form no cycle.
        """
        position = {name: index for index, name in enumerate(self.jobs)}
        sorter = TopologicalSorter({name: job.requires for name, job in self.jobs.items()})
        sorter.prepare()
        order: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=position.__getitem__)
            order += ready
            sorter.done(*ready)
        return order
