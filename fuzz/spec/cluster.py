"""The cluster spec (``fuzz.yaml``): state backend, provider blocks and node pools.

Checks of one value (types, name patterns, ``version``, ``idle_ttl``) are pydantic
validators, so pydantic's ``loc`` already points at the value. Checks that relate
several fields (``max >= min``, a static pool setting elastic keys, duplicate node
names, a pool naming an undeclared provider) are in :func:`cluster_issues`, a pass
over the plain data that yields :class:`~fuzz.spec.problems.Issue` values with the
exact path of the offending key or value. It runs on raw data, so it reports its
findings even when other parts of the spec fail validation.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from fuzz.spec.allowlist import AllowEntry
from fuzz.spec.problems import Issue, did_you_mean
from fuzz.spec.store_url import url_problem
from fuzz.spec.workflowref import workflow_ref_problem
from fuzz.units import parse_duration, parse_size

SPEC_VERSION = 1
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
"""Cluster and pool names: lowercase letters, digits and '-', starting with a letter, ≤ 63."""
NODE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""Static node names: letters, digits, '_', '.' and '-', not starting with punctuation."""
STATIC_POOL_FORBIDDEN = ("offerings", "min", "max", "standby", "spot")
"""Keys of an elastic pool that a static pool (one with ``nodes:``) must not set."""


def _check_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"invalid name {value!r}: use 1-63 lowercase letters, digits or '-',"
            " starting with a letter"
        )
    return value


def _none_to_empty(value: Any) -> Any:
    """Let ``key:`` with no value (YAML null) mean an empty mapping."""
    return {} if value is None else value


Name = Annotated[str, AfterValidator(_check_name)]
"""A cluster or pool name (see :data:`NAME_PATTERN`)."""


def _seconds_as_text(value: Any) -> Any:
    """A duration given as a bare number of seconds, as the text ``parse_duration`` reads."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _check_duration(value: str) -> str:
    parse_duration(value)  # its ValueError names the accepted forms
    return value


def _check_positive_duration(value: str) -> str:
    if parse_duration(value) <= 0:
        raise ValueError("must be longer than 0s")
    return value


# A duration (``10m``, ``1h30m``, or a number of seconds), kept as the text given.
Duration = Annotated[str, BeforeValidator(_seconds_as_text), AfterValidator(_check_duration)]
PositiveDuration = Annotated[str, BeforeValidator(_seconds_as_text),
                             AfterValidator(_check_positive_duration)]


class StrictModel(BaseModel):
    """A model that rejects unknown keys, so typos are reported instead of ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EncryptionSpec(StrictModel):
    """``state.encryption``: how recorded state and saved plans are encrypted at rest.

    Keys come from a passphrase in an environment variable (scrypt) or from AWS
    KMS; a fallback key only decrypts, for rotation. ``enabled`` defaults to on when
    this block names a key, or for a shared backend when ``$FUZZ_STATE_PASSPHRASE``
    is set; otherwise off.
    """

    enabled: bool | None = None
    passphrase_env: str | None = Field(default=None, min_length=1)
    fallback_passphrase_env: str | None = Field(default=None, min_length=1)
    kms_key_id: str | None = Field(default=None, min_length=1)
    fallback_kms_key_id: str | None = Field(default=None, min_length=1)
    kms_region: str | None = None
    kms_endpoint_url: str | None = None

    @model_validator(mode="after")
    def _one_primary_key(self) -> EncryptionSpec:
        if self.passphrase_env and self.kms_key_id:
            raise ValueError("set passphrase_env or kms_key_id, not both (the other may be "
                             "a fallback_...)")
        return self


class StateSpec(BaseModel):
    """Where recorded state lives: ``backend`` names a state plugin, other keys are its own.

    ``encryption`` is fuzz's own: the backend never sees it, only ciphertext.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    backend: str = "local"
    encryption: EncryptionSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_if_null(cls, data: Any) -> Any:
        return _none_to_empty(data)

    def backend_config(self) -> dict[str, Any]:
        """The keys of this block that belong to the backend plugin."""
        return dict(self.model_extra or {})


class ProviderSpec(BaseModel):
    """A provider block: ``kind`` picks the plugin (default: the block's name).

    The other keys are the plugin's config. The block may be empty (``local: {}``)
    or null (``local:``).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_if_null(cls, data: Any) -> Any:
        return _none_to_empty(data)

    def provider_config(self) -> dict[str, Any]:
        """The keys of this block that the provider plugin validates."""
        return dict(self.model_extra or {})


class StaticNodeSpec(BaseModel):
    """A machine listed by name in a static pool; other keys go to the provider."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str

    @field_validator("name")
    @classmethod
    def _check_node_name(cls, value: str) -> str:
        if not NODE_NAME_PATTERN.fullmatch(value):
            raise ValueError(
                f"invalid node name {value!r}: use letters, digits, '_', '.' or '-',"
                " starting with a letter or digit"
            )
        return value

    def provider_attributes(self) -> dict[str, Any]:
        """The keys of this entry that the provider reads (MAC, IPMI address, image …)."""
        return dict(self.model_extra or {})


class PoolSpec(StrictModel):
    """A node pool: elastic (offerings, min/max) or static (a list of named nodes).

    ``max`` may be left out; it then equals ``min`` (see :meth:`max_nodes`).
    ``idle_ttl`` and ``boot_timeout`` are durations (``10m``, ``1h30m``, or a number
    of seconds). ``standby`` idle nodes are kept warm (never more than ``max``);
    ``spot`` asks the provider for spot/preemptible nodes; a node that has not
    joined ``boot_timeout`` after its creation is replaced, at most
    ``boot_retries`` times before the pool is marked failing.
    """

    provider: str
    offerings: list[str] = Field(default_factory=list)
    min: int = Field(default=0, ge=0, strict=True)
    max: int | None = Field(default=None, ge=0, strict=True)
    standby: int = Field(default=0, ge=0, strict=True)
    spot: bool = Field(default=False, strict=True)
    idle_ttl: Duration = "10m"
    boot_timeout: Duration = "10m"
    boot_retries: int = Field(default=3, ge=0, strict=True)
    labels: dict[str, str] = Field(default_factory=dict)
    nodes: list[StaticNodeSpec] | None = None
    # Jobs on the network: each in a namespace of its own (``isolated``, the
    # default) or, for RDMA and MPI fabrics that need it, in the node's own
    # network (``host``: an admin's opt-in, see docs/security.md). Reaches the
    # agents as the node label ``fuzz:network=host``
    # (:data:`fuzz.spec.labels.NETWORK_LABEL`).
    network: Literal["isolated", "host"] = "isolated"

    # Drain (issue 20): how long a node about to be deleted (scale-down, ``fuzz apply
    # --replace``, ``fuzz destroy``, the elastic loop, ``fuzz node drain``) waits, cordoned,
    # for its running tasks; past it they are stopped (failed or retried with the reason).
    drain_timeout: Duration = "10m"

    def drain_timeout_seconds(self) -> float:
        """How long a node being deleted waits for its running tasks, in seconds."""
        return parse_duration(self.drain_timeout)

    @property
    def is_static(self) -> bool:
        """True for a pool of listed machines (``nodes:``), False for an elastic one."""
        return self.nodes is not None

    @property
    def resizes(self) -> bool:
        """True for a pool the orchestrator's elastic loop sizes (its min below its max);
        a static pool, or one whose min is its max, is ``fuzz apply``'s alone."""
        return not self.is_static and self.max_nodes() > self.min

    def max_nodes(self) -> int:
        """The most nodes this pool may hold.

        Elastic pools: ``max``, or ``min`` when ``max`` is not given. Static pools:
        the number of listed nodes.
        """
        if self.nodes is not None:
            return len(self.nodes)
        return self.max if self.max is not None else self.min

    def idle_ttl_seconds(self) -> float:
        """How long a node may sit idle before it is released, in seconds."""
        return parse_duration(self.idle_ttl)

    def boot_timeout_seconds(self) -> float:
        """How long a new node may take to join before it is replaced, in seconds."""
        return parse_duration(self.boot_timeout)


def _check_allow_entry(value: str) -> str:
    AllowEntry.parse(value)  # ValueError says what is wrong
    return value


def _check_proxy(value: str) -> str:
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r}: write the proxy as http://HOST:PORT")
    return value


class IngressSpec(StrictModel):
    """``orchestrator.ingress``: where http(s) ingress may fetch from, beyond public addresses.

    By default the orchestrator never fetches from loopback, private, link-local, CGNAT,
    multicast or the cluster's own addresses (:mod:`fuzz.orchestrate.transfer.ingress_policy`).
    """

    allow: list[Annotated[str, AfterValidator(_check_allow_entry)]] = Field(
        default_factory=list, description="Addresses or CIDR networks ingress may fetch from "
        "although they are internal, each optionally ADDRESS:PORT ([V6]:PORT).")
    proxy: Annotated[str, AfterValidator(_check_proxy)] | None = Field(
        default=None, description="http://HOST:PORT of a proxy every http(s) ingress goes "
        "through (the environment's HTTP_PROXY and friends are never used).")

    @field_validator("allow", mode="before")
    @classmethod
    def _empty_if_null(cls, value: Any) -> Any:
        return [] if value is None else value


LOWEST_JOB_ID = 65536  # below: the system's accounts, its login users and nobody (65534)
HIGHEST_JOB_ID = 2**32 - 2  # 2**32 - 1 is (uid_t) -1, "no id"


class JobIdsSpec(StrictModel):
    """``orchestrator.job_ids``: the range each job owner's own uid:gid is taken from.

    The orchestrator gives every owner the lowest id of the range not yet given,
    once, and records it: an owner's jobs and volumes always run and belong to it,
    and no other owner ever gets it (``fuzz.orchestrate.workflows.jobids``).
    """

    first: int = Field(default=200000, description="The first uid (and gid) given out.")
    count: int = Field(default=100000, ge=1, description="How many ids the range holds.")

    @model_validator(mode="after")
    def _check_range(self) -> JobIdsSpec:
        last = self.first + self.count - 1
        if self.first < LOWEST_JOB_ID:
            raise ValueError(
                f"ids {self.first}-{last} reach below {LOWEST_JOB_ID}, where the system's "
                "accounts, its login users and nobody (65534) are: start at 65536 or above")
        if last > HIGHEST_JOB_ID:
            raise ValueError(f"ids {self.first}-{last} reach above {HIGHEST_JOB_ID}, the "
                             "highest uid there is")
        return self


FUZZBALL_MAX_CONCURRENCY = 200
"""The most tasks of one task array that may run at once (Fuzzball's own bound)."""


def _check_size(value: Any) -> int:
    """A byte count given as ``512MiB``, ``10GB`` or a bare number, as an int."""
    size = parse_size(value)
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return size


ByteSize = Annotated[int, BeforeValidator(_check_size)]
"""A positive number of bytes, written as a size (``100MiB``) or an integer."""


FUZZFILE_BYTES = 1024 * 1024
"""The default of ``orchestrator.limits.fuzzfile_bytes``."""


class LimitsSpec(StrictModel):
    """``orchestrator.limits``: what one user's workflows and calls may take at most.

    Every limit has a default, so a spec without the block is limited too; see
    docs/security.md ("Limits and their defaults") for where each is enforced.
    """

    tasks_per_workflow: int = Field(
        default=10_000, ge=1, strict=True,
        description="Tasks (containers) one workflow may make: the sum over its jobs of "
        "task-array sizes and multinode node counts.")
    task_array_concurrency: int = Field(
        default=FUZZBALL_MAX_CONCURRENCY, ge=1, le=FUZZBALL_MAX_CONCURRENCY, strict=True,
        description="The most tasks of one task array running at once (Fuzzball: 200); "
        "a task array without concurrency gets this.")
    volume_bytes: ByteSize = Field(
        default=100 * 1024**3, description="Bytes one volume may hold: ingress stops past it, "
        "and a task that leaves more fails its workflow.")
    job_log_bytes: ByteSize = Field(
        default=100 * 1024**2, description="Bytes kept of each of a task's stdout and stderr; "
        "past it the output is dropped and one marker line says so.")
    streams_per_user: int = Field(
        default=32, ge=1, strict=True,
        description="Long-lived calls (status --watch, log --follow, exec, port-forward) "
        "one user may hold open at once.")
    streams_total: int = Field(
        default=192, ge=1, strict=True,
        description="Long-lived calls all users together may hold open; the server keeps "
        "64 workers more than this for node heartbeats and short calls.")
    fuzzfile_bytes: ByteSize = Field(
        default=FUZZFILE_BYTES, description="The largest Fuzzfile the server takes (and the "
        "CLI sends); refused by its size before it is parsed.")


class DiskSpec(StrictModel):
    """``orchestrator.disk``: how much of the disks user data may take.

    See docs/reliability.md ("Disks") for how each is enforced.
    """

    min_free: ByteSize = Field(
        default=1024**3, description="Bytes kept free on the volume root's disk: below it "
        "new ingress and new jobs that mount a volume are refused.")
    reserve: ByteSize = Field(
        default=64 * 1024**2, description="Bytes held in the data dir for the database, "
        "given back to it when its disk fills up.")


# --- orchestrator.store (issue 23) ---
class StoreSpec(StrictModel):
    """``orchestrator.store``: the orchestrator's records on PostgreSQL instead of the
    embedded SQLite file (``DATA_DIR/server.db``, the default). Written as the URL alone
    or as ``{url, password_file}``; the password never in the spec."""

    url: str = Field(description="postgres://[USER@]HOST[:PORT]/DATABASE, without password "
                     "(libpq's query options, e.g. ?sslmode=verify-full, are kept).")
    password_file: str | None = Field(
        default=None, min_length=1, description="A file holding the password, relative to "
        "the spec (default: libpq's PGPASSWORD, PGPASSFILE or ~/.pgpass).")

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        problem = url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def _store_url_alone(value: Any) -> Any:
    """``store: postgres://...`` is ``store: {url: postgres://...}``."""
    return {"url": value} if isinstance(value, str) else value


class CatalogSpec(StrictModel):
    """One application catalog (``orchestrator.catalogs``, and the user's own from
    ``fuzz app catalog add``): a directory, or a git repository at a ref, holding
    ``applications/<app>/`` in Fuzzball's layout."""

    name: Name
    path: str | None = Field(default=None, min_length=1,
                             description="The catalog's directory, relative to the spec.")
    git: str | None = Field(default=None, min_length=1,
                            description="A git repository's URL, cloned by the orchestrator.")
    ref: str | None = Field(default=None, min_length=1,
                            description="With git: a branch, tag or commit (default: HEAD).")

    @model_validator(mode="after")
    def _one_source(self) -> CatalogSpec:
        if (self.path is None) == (self.git is None):
            raise ValueError("set path or git, one of them")
        if self.ref is not None and self.git is None:
            raise ValueError("ref goes with git")
        return self


def _unique_catalogs(value: list[CatalogSpec]) -> list[CatalogSpec]:
    names = [catalog.name for catalog in value]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"catalog {twice[0]!r} is listed twice")
    return value
# --- orchestrator.cache (issue 22: data never moves twice) ---
def _check_cache_size(value: Any) -> int:
    """A byte count as for :data:`ByteSize`, where 0 (the cache off) is allowed too."""
    size = parse_size(value)
    if size < 0:
        raise ValueError("must be 0 (no cache) or more bytes")
    return size


class CacheSpec(StrictModel):
    """``orchestrator.cache``: the ingress cache, in ``DATA_DIR/cache``.

    Each version of an ingress source is fetched once per cluster and placed into the
    volumes that ask for it again; see docs/architecture.md ("Data ingress and egress").
    """

    bytes: Annotated[int, BeforeValidator(_check_cache_size)] = Field(
        default=50 * 1024**3, description="Bytes the ingress cache may hold: past them the "
        "least recently used entries are removed; 0 turns the cache off.")
    placement: Literal["link", "copy"] = Field(
        default="link", description="How a cached entry goes into a volume: 'link' (hard "
        "links: no byte copied, the files read-only) or 'copy' (the owner's own writable "
        "copies); a volume on another file system than the data dir gets copies.")
class EndpointsSpec(StrictModel):
    """``orchestrator.endpoints``: the HTTPS gateway that serves services' endpoints.

    Path endpoints are served at ``/endpoints/<owner>/<workflow>/<service>/<endpoint>/``,
    subdomain endpoints at ``<endpoint>.<service>.<workflow>.<owner>.<domain>``
    (:mod:`fuzz.spec.endpoint_urls`, :mod:`fuzz.orchestrate.endpoints`).
    """

    listen: str | None = Field(
        default=None, description="HOST:PORT the gateway binds (default: the orchestrator's "
        "host, a port the system picks, shown in every endpoint URL).")
    url: str | None = Field(
        default=None, description="https://HOST[:PORT] users reach the gateway at, when that "
        "is not where it listens (a load balancer, a NAT); used in printed URLs.")
    domain: str | None = Field(
        default=None, description="The wildcard domain of subdomain endpoints (a DNS name "
        "whose every sub-name reaches the gateway); without it they are served by path.")
    cert: str | None = Field(
        default=None, description="PEM certificate (chain) the gateway serves, relative to the "
        "spec (default: one issued by the cluster CA for the orchestrator's names).")
    key: str | None = Field(default=None, description="The PEM private key of ``cert``.")
    session_ttl: PositiveDuration = Field(
        default="12h", description="How long a browser stays signed in (never longer than "
        "the token it signed in with).")

    @model_validator(mode="after")
    def _cert_with_key(self) -> EndpointsSpec:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give cert and key together (or neither: the cluster CA's)")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"url {self.url!r}: write it as https://HOST[:PORT]")
        return self

    def session_seconds(self) -> float:
        """``session_ttl`` in seconds."""
        return parse_duration(self.session_ttl)


class MetricsSpec(StrictModel):
    """``orchestrator.metrics``: the HTTP listener of ``/metrics`` (Prometheus), ``/healthz``
    and ``/readyz`` (load balancers, Kubernetes probes); see docs/metrics.md."""

    enabled: bool = Field(default=True, description="Serve /metrics, /healthz and /readyz.")
    listen: str = Field(
        default="127.0.0.1:0", description="HOST:PORT the listener binds (default: "
        "loopback, a port the system picks, written to the data dir's server.json); give "
        "a fixed port for Prometheus to scrape.")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
        return value


class UiSpec(StrictModel):
    """``orchestrator.ui``: the web UI (the application catalog, forms, workflows, logs,
    a Fuzzfile editor), served over HTTPS with the endpoint gateway's certificate and
    sign-in (:mod:`fuzz.orchestrate.ui`)."""

    enabled: bool = Field(default=True, description="Serve the web UI.")
    listen: str | None = Field(
        default=None, description="HOST:PORT the web UI binds (default: the orchestrator's "
        "host, a port the system picks; `fuzz server` logs it and writes it as ui_url in "
        "DATA_DIR/server.json).")


class OrchestratorSpec(StrictModel):
    """The ``orchestrator:`` block: where ``fuzz server`` listens and keeps its data.

    ``fuzz apply`` asks this server for each new node's join token, and the CLI's
    ``workflow`` and ``secret`` commands talk to it.
    """

    listen: str = Field(default="127.0.0.1:7400", description="HOST:PORT the server binds.")
    advertise: str | None = Field(
        default=None, description="HOST:PORT nodes and clients use (default: listen).")
    data_dir: str = Field(default=".fuzz/server",
                          description="Database, keys and logs, relative to the spec.")
    volume_root: str | None = Field(
        default=None, description="Where volumes live, seen by every node at the same path, "
        "relative to the spec (default: DATA_DIR-volumes next to the data dir; "
        "DATA_DIR/volumes where an older fuzz left volumes).")
    disk: DiskSpec = Field(
        default_factory=DiskSpec, description="Free space kept on the volume root's disk "
        "and space reserved for the database (see \"Disks\" below).")
    host_paths: list[str] = Field(
        default_factory=list, description="Directories on the orchestrator host that "
        "workflows may read (file:/// ingress) and write (file:/// egress), relative to the "
        "spec; none by default.")
    job_ids: JobIdsSpec = Field(
        default_factory=lambda: JobIdsSpec(),
        description="The uids (and gids) the orchestrator gives job owners, one each.")
    insecure: bool = Field(
        default=False, description="Plain text instead of TLS between the CLI, the server and "
        "the nodes (tests and trusted networks only; every command warns).")
    reconcile_interval: PositiveDuration = Field(
        default="10s", description="How often the orchestrator reconciles elastic pools "
        "(also soon after its queue changes).")
    ingress: IngressSpec = Field(default_factory=IngressSpec)
    cache: CacheSpec = Field(
        default_factory=CacheSpec, description="The ingress cache (see \"Ingress cache\" "
        "below).")
    limits: LimitsSpec = Field(
        default_factory=LimitsSpec, description="What one user may take at most (see "
        "\"Limits\" below).")
    endpoints: EndpointsSpec = Field(
        default_factory=EndpointsSpec, description="The HTTPS gateway of services' endpoints "
        "(see \"Endpoints\" below).")
    store: Annotated[StoreSpec | None, BeforeValidator(_store_url_alone)] = Field(
        default=None, description="PostgreSQL instead of the embedded SQLite database (see "
        "\"Store\" below).")

    # --- metrics and health ---
    metrics: MetricsSpec = Field(
        default_factory=MetricsSpec, description="Prometheus /metrics and the /healthz, "
        "/readyz probes (see docs/metrics.md).")

    ui: UiSpec = Field(
        default_factory=UiSpec, description="The web UI (see \"Web UI\" below).")

    # --- application catalogs ---
    catalogs: Annotated[list[CatalogSpec], AfterValidator(_unique_catalogs)] = Field(
        default_factory=list, description="Application catalogs the orchestrator serves to "
        "`fuzz app list` (directories or git repositories; see \"Applications\" below).")

    def reconcile_seconds(self) -> float:
        """``reconcile_interval`` in seconds."""
        return parse_duration(self.reconcile_interval)

    # --- join tokens ---
    join_token_ttl: PositiveDuration = Field(
        default="1h", description="How long a new node's join token stays usable (it must "
        "enroll within it); a newer token for the same node voids the older at once.")

    def join_token_ttl_seconds(self) -> float:
        """``join_token_ttl`` in seconds."""
        return parse_duration(self.join_token_ttl)

    # --- node loss ---
    node_grace: PositiveDuration = Field(
        default="60s", description="How long the orchestrator keeps waiting for a node whose "
        "agent stopped answering (it may be restarting; its jobs keep running) before it "
        "declares the node lost and retries its tasks elsewhere.")

    def node_grace_seconds(self) -> float:
        """``node_grace`` in seconds."""
        return parse_duration(self.node_grace)

    # --- replicas ---
    replicas: list[str] = Field(
        default_factory=list, description="HOST:PORT of every `fuzz server` replica of the "
        "cluster, all on the PostgreSQL `store` (see \"Replicas\" below): one leads, the "
        "others stand by; agents and the CLI are given them all and use the leader.")

    @field_validator("replicas")
    @classmethod
    def _replica_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or "," in address or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"{address!r}: expected HOST:PORT, e.g. 10.0.0.2:7400")
        if len(set(value)) != len(value):
            raise ValueError("each replica's address once")
        return value

    @model_validator(mode="after")
    def _replicas_share_postgres(self) -> OrchestratorSpec:
        if self.replicas and self.store is None:
            raise ValueError("replicas need store: postgres://... (the embedded SQLite "
                             "database is one server's)")
        return self

    @property
    def address(self) -> str:
        """Where clients reach the server (replicas: all of them, comma-separated)."""
        return ",".join(self.replicas) or self.advertise or self.listen


def _check_workflow_ref(value: str) -> str:
    problem = workflow_ref_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


WorkflowRefKey = Annotated[str, AfterValidator(_check_workflow_ref)]
"""A ``workflows:`` key: ``NAME``, or ``OWNER/NAME`` (refused by plan unless it is the
applier's own; see :mod:`fuzz.cli.declared_workflows`)."""


class WorkflowEntry(StrictModel):
    """A workflow declared in the spec: ``fuzz apply`` starts it, and again when it changes."""

    file: str = Field(description="The Fuzzfile, relative to the spec.")


class ClusterSpec(StrictModel):
    """The whole ``fuzz.yaml``.

    A model that validates may still break rules across fields; see :meth:`issues`
    (the loader in :mod:`fuzz.spec.loader` checks both).
    """

    version: int = Field(strict=True)
    cluster: Name
    state: StateSpec = Field(default_factory=StateSpec)
    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    pools: dict[Name, PoolSpec] = Field(default_factory=dict)
    orchestrator: OrchestratorSpec | None = None
    workflows: dict[WorkflowRefKey, WorkflowEntry] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: int) -> int:
        if value != SPEC_VERSION:
            raise ValueError(f"unsupported version {value}; this fuzz reads version {SPEC_VERSION}")
        return value

    @field_validator("providers", "pools", "workflows", mode="before")
    @classmethod
    def _empty_if_null(cls, value: Any) -> Any:
        return _none_to_empty(value)

    def provider_kind(self, provider_name: str) -> str:
        """The plugin kind of a provider block (its ``kind``, or its name)."""
        block = self.providers.get(provider_name)
        return (block.kind if block and block.kind else None) or provider_name

    def issues(self) -> list[Issue]:
        """Cross-field problems of this spec (empty when it is consistent)."""
        return cluster_issues(self.model_dump(exclude_unset=True))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def pool_issues(
    name: Hashable, pool: Mapping[Any, Any], provider_names: Sequence[str] | None
) -> Iterator[Issue]:
    """Cross-field problems of one pool, given as plain data (values of the wrong type are skipped).

    ``provider_names`` are the declared provider blocks; None skips the reference check.
    """
    path: tuple[Hashable, ...] = ("pools", name)
    provider = pool.get("provider")
    if isinstance(provider, str) and provider_names is not None and provider not in provider_names:
        declared = ", ".join(provider_names)
        hint = did_you_mean(provider, provider_names)
        if declared:
            message = f"unknown provider {provider!r} (declared: {declared}){hint}"
        else:
            message = f"unknown provider {provider!r} (no providers are declared)"
        yield Issue((*path, "provider"), message)
    nodes = pool.get("nodes")
    if nodes is not None:
        for key in STATIC_POOL_FORBIDDEN:
            if key in pool:
                yield Issue(
                    (*path, key), "not allowed in a static pool (one that lists nodes:)", at="key"
                )
    else:
        low, high = pool.get("min", 0), pool.get("max")
        if _is_int(low) and _is_int(high) and low >= 0 and high < low:
            yield Issue((*path, "max"), "must be >= min", at="key")
        standby = pool.get("standby", 0)
        most: Any = high if _is_int(high) else low
        if _is_int(standby) and _is_int(most) and 0 <= most < standby:
            yield Issue((*path, "standby"), f"must be <= max ({most})", at="key")
    if isinstance(nodes, list):
        first: dict[str, int] = {}
        for index, node in enumerate(nodes):
            node_name = node.get("name") if isinstance(node, Mapping) else None
            if not isinstance(node_name, str):
                continue
            if node_name in first:
                yield Issue(
                    (*path, "nodes", index, "name"),
                    f"duplicate node name {node_name!r} (first at nodes[{first[node_name]}])",
                )
            else:
                first[node_name] = index


def cluster_issues(data: Mapping[Any, Any]) -> list[Issue]:
    """Cross-field problems of a whole spec, given as plain data (e.g. straight from YAML)."""
    providers = data.get("providers")
    if providers is None:
        provider_names: list[str] | None = []
    elif isinstance(providers, Mapping):
        provider_names = [str(key) for key in providers]
    else:
        provider_names = None  # already reported as "must be a mapping"
    pools = data.get("pools")
    if not isinstance(pools, Mapping):
        return []
    issues: list[Issue] = []
    for name, pool in pools.items():
        if isinstance(pool, Mapping):
            issues.extend(pool_issues(name, pool, provider_names))
    return issues
