"""The orchestrator's records: workflows, their volumes, transfers, images and tasks, nodes.

Plain mutable dataclasses, one per table of :mod:`fuzz.orchestrate.store`; the
runner changes them in memory and writes each change through to the store before
it acts on it, so a restarted server carries on from exactly where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from fuzz.orchestrate.states import (
    TERMINAL_TASK_STATES,
    TERMINAL_WORKFLOW_STATES,
    ImageState,
    TaskState,
    TransferState,
    VolumeState,
    WorkflowState,
)


@dataclass
class WorkflowRecord:
    """One run of a named workflow."""

    TABLE: ClassVar[str] = "workflows"
    KEY: ClassVar[tuple[str, ...]] = ("id",)

    id: str
    name: str
    run: int
    owner: str
    file_name: str
    fuzzfile: str
    content_hash: str
    state: WorkflowState = WorkflowState.PENDING
    error: str = ""
    created: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    cancel_requested: bool = False
    account: str = ""  # the account (IAM group) it runs in; empty: none

    @property
    def finished_state(self) -> bool:
        """Whether the workflow has reached a final state."""
        return self.state in TERMINAL_WORKFLOW_STATES


@dataclass
class VolumeRecord:
    """A volume of a workflow and where its files live on the shared volume root."""

    TABLE: ClassVar[str] = "volumes"
    KEY: ClassVar[tuple[str, ...]] = ("workflow_id", "name")

    workflow_id: str
    name: str
    reference: str
    path: str
    ephemeral: bool
    state: VolumeState = VolumeState.PENDING
    error: str = ""


@dataclass
class TransferRecord:
    """One ingress or egress of a volume, with its progress, size and checksum."""

    TABLE: ClassVar[str] = "transfers"
    KEY: ClassVar[tuple[str, ...]] = ("workflow_id", "volume", "direction", "seq")

    workflow_id: str
    volume: str
    direction: str
    seq: int
    source: str
    destination: str
    secret: str = ""
    secret_scope: str = ""  # "account": the workflow's account's secret; else the owner's
    state: TransferState = TransferState.PENDING
    bytes_done: int = 0
    bytes_total: int = 0
    sha256: str = ""
    error: str = ""
    waiting_for: str = ""  # why a PENDING transfer does not start yet


@dataclass
class ImageRecord:
    """An image a workflow uses: pulled on each node that runs one of its tasks."""

    TABLE: ClassVar[str] = "images"
    KEY: ClassVar[tuple[str, ...]] = ("workflow_id", "uri")

    workflow_id: str
    uri: str
    state: ImageState = ImageState.PENDING
    digest: str = ""
    error: str = ""


@dataclass
class TaskRecord:
    """One task: a job, one index of a task array, or all ranks of a multinode job.

    ``nodes``, ``leases`` and ``containers`` hold one entry per rank. Container ids
    are derived from the workflow, the task and the attempt, so a restarted server
    finds the containers it started.
    """

    TABLE: ClassVar[str] = "tasks"
    KEY: ClassVar[tuple[str, ...]] = ("workflow_id", "key")

    workflow_id: str
    key: str
    job: str
    index: int
    seq: int
    state: TaskState = TaskState.WAITING
    attempt: int = 0
    nodes: list[str] = field(default_factory=list)
    leases: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    exit_code: int = 0
    started: float = 0.0
    finished: float = 0.0
    error: str = ""
    waiting_for: str = ""
    # How the attempt in flight ended (SUCCEEDED, FAILED or CANCELED), kept from before its
    # containers are removed until the task's state says it: a restart then finds the
    # outcome instead of an attempt without containers, which it would run again.
    outcome: str = ""
    # A service's task (``kind`` "service"): whether it is ready (STARTING until its
    # readiness probe passes, then READY; empty for a job), the probe's last error, how
    # many times its container was restarted, and its job network addresses (one per
    # rank; empty on the host network), which the workflow's other containers reach it at.
    kind: str = "job"
    readiness: str = ""
    probe_error: str = ""
    restarts: int = 0
    addresses: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """Whether the task reached a final state."""
        return self.state in TERMINAL_TASK_STATES


@dataclass
class NodeRecord:
    """A registered node: where its agent is, how to call it, and what it holds."""

    TABLE: ClassVar[str] = "nodes"
    KEY: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    endpoint: str
    agent_token: bytes
    cores: int
    memory_bytes: int
    devices: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    architecture: str = "x86_64"
    registered: float = 0.0
    last_seen: float = 0.0
    sockets: int = 1
    threads_per_core: int = 1
    inventory_labels: dict[str, str] = field(default_factory=dict)
    """The labels the agent's inventory reports (hardware, declared, its ``--label``s);
    ``labels`` holds them under the labels of its latest heartbeat."""


@dataclass
class JoinTokenRecord:
    """A join token issued for one node (stored as a hash only)."""

    TABLE: ClassVar[str] = "join_tokens"
    KEY: ClassVar[tuple[str, ...]] = ("token_hash",)

    token_hash: str
    node: str
    created: float


@dataclass
class SecretRecord:
    """A user's secret (or an account's: owner ``@ACCOUNT``), sealed with the server's key."""

    TABLE: ClassVar[str] = "secrets"
    KEY: ClassVar[tuple[str, ...]] = ("owner", "name")

    owner: str
    name: str
    sealed: bytes
    size: int
    created: float


@dataclass
class EnrollmentRecord:
    """A join token spent for a node's certificate: the key certified, the certificate's serial.

    The node's latest enrollment's certificate (by serial) is the one that
    identifies it; a retried enrollment with the same join token and the same key
    gets a fresh one, any other key is refused.
    """

    TABLE: ClassVar[str] = "enrollments"
    KEY: ClassVar[tuple[str, ...]] = ("join_token_hash",)

    node: str
    join_token_hash: str
    key_id: str
    serial: str
    created: float


@dataclass
class UserRecord:
    """A user: the roles they have directly and the groups they belong to."""

    TABLE: ClassVar[str] = "users"
    KEY: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    roles: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    created: float = 0.0


@dataclass
class GroupRecord:
    """A group of users and the roles its members have."""

    TABLE: ClassVar[str] = "user_groups"
    KEY: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    roles: list[str] = field(default_factory=list)


@dataclass
class RoleRecord:
    """A role defined by an admin: a policy document (statements as plain data)."""

    TABLE: ClassVar[str] = "roles"
    KEY: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    statements: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TokenRecord:
    """A bearer token or a one-time login code of a user (stored as a hash only).

    ``kind``: ``session`` (from a login), ``code`` (a login code, spent by logging
    in) or ``admin`` (the data dir's ``admin.token``). ``expires`` 0: never.
    """

    TABLE: ClassVar[str] = "tokens"
    KEY: ClassVar[tuple[str, ...]] = ("token_hash",)

    token_hash: str
    user: str
    kind: str
    created: float
    expires: float
    revoked: bool = False


@dataclass
class SettingRecord:
    """A server setting changed through the API (the curtain)."""

    TABLE: ClassVar[str] = "settings"
    KEY: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    value: str


@dataclass
class DrainRecord:
    """A node cordoned or being drained: the scheduler places nothing more there.

    ``mode``: ``draining`` (on its way out: idle past ``idle_ttl``, or about to be
    deleted) or ``cordoned`` (an admin's ``fuzz node cordon``).
    """

    TABLE: ClassVar[str] = "drains"
    KEY: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    since: float
    mode: str = "draining"


@dataclass
class PoolMemberRecord:
    """What the elastic loop remembers of one member of an elastic pool (see
    :class:`fuzz.scheduler.elastic.MemberTimes`)."""

    TABLE: ClassVar[str] = "pool_members"
    KEY: ClassVar[tuple[str, ...]] = ("address",)

    address: str
    pool: str
    generation: int
    since: float
    replacements: int = 0
    idle_since: float = 0.0


@dataclass
class PoolStatusRecord:
    """An elastic pool's trouble: why it is failing (boot timeouts), the last provider error.

    ``fingerprint`` is the pool's and its provider block's spec when it was marked
    failing: a changed spec clears the mark.
    """

    TABLE: ClassVar[str] = "pool_status"
    KEY: ClassVar[tuple[str, ...]] = ("pool",)

    pool: str
    failing: str = ""
    fingerprint: str = ""
    error: str = ""
    error_at: float = 0.0


@dataclass
class OwnerIdsRecord:
    """The uid and gid every job and volume of one owner runs as and belongs to.

    Given once from ``orchestrator.job_ids`` and never changed nor given to another
    owner (rows are never deleted); see :mod:`fuzz.orchestrate.workflows.jobids`.
    """

    TABLE: ClassVar[str] = "owner_ids"
    KEY: ClassVar[tuple[str, ...]] = ("owner",)

    owner: str
    uid: int
    gid: int
    created: float


RECORD_TYPES: tuple[type[Any], ...] = (
    WorkflowRecord,
    VolumeRecord,
    TransferRecord,
    ImageRecord,
    TaskRecord,
    NodeRecord,
    JoinTokenRecord,
    SecretRecord,
    EnrollmentRecord,
    UserRecord,
    GroupRecord,
    RoleRecord,
    TokenRecord,
    SettingRecord,
    DrainRecord,
    PoolMemberRecord,
    PoolStatusRecord,
    OwnerIdsRecord,
)
