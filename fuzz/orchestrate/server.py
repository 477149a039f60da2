"""`fuzz server`: the orchestrator process of one cluster.

Its data directory holds everything it needs to carry on after a restart:

``server.db``     the SQLite store (workflows, tasks, volumes, nodes, secrets, users,
                  tokens, roles)
``master.key``    the key secrets and agent tokens are sealed with (0600)
``admin.token``   the bearer token of the built-in ``admin`` user (0600)
``ca.pem``, ``ca.key``, ``server.crt``, ``server.key``  the cluster CA and the
                  orchestrator's certificate (see :mod:`fuzz.orchestrate.datadir`)
``audit.log``     every access decision, one JSON line each (0600)
``server.json``   pid, endpoint and metrics listener while it runs
``server.lock``   held while it runs: one server per data directory
``instance-id``   a short random id, part of every container id it makes (on
                  PostgreSQL the store's, shared by the replicas)
``logs/``         finished tasks' output
``disk-reserve``  space held for the database (:mod:`fuzz.orchestrate.diskspace`)

Volumes live apart from it, in ``volume_root`` (by default ``DATA_DIR-volumes``, next
to the data dir: see :func:`default_volume_root`).

On a PostgreSQL store it is one of the cluster's replicas: it leads only once it holds
the store's leadership lease (:mod:`fuzz.orchestrate.leadership`), standing by until then
(:mod:`fuzz.orchestrate.standby`), and stops, raising LeadershipLostError, if it loses it.

It serves TLS with a certificate of the cluster CA unless ``insecure`` is set, and
``/metrics``, ``/healthz`` and ``/readyz`` over HTTP on ``metrics.listen``
(:mod:`fuzz.orchestrate.observe`); its gRPC health check answers SERVING once the
runner has started, NOT_SERVING again while it stops.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import grpc

from fuzz.api import iam_pb2_grpc
from fuzz.crypto.envelope import Sealer
from fuzz.fsutil import acquire_lock, release_lock, write_json_atomic, write_private_file
from fuzz.orchestrate.catalogs import ClusterCatalogs
from fuzz.orchestrate.cluster.elastic import ElasticLoop, ElasticSetup
from fuzz.orchestrate.cluster.enrollment import NodeCertifier
from fuzz.orchestrate.cluster.jointokens import DEFAULT_JOIN_TOKEN_TTL
from fuzz.orchestrate.cluster.nodes import DEFAULT_NODE_GRACE, NodeDirectory
from fuzz.orchestrate.connect import INFO_FILE
from fuzz.orchestrate.datadir import ClusterTls, ensure_admin_token, server_hosts
from fuzz.orchestrate.diskspace import REFILL_INTERVAL, DiskFloor, DiskReserve
from fuzz.orchestrate.endpoints.gateway import Gateway, GatewayStartError, GatewayTls
from fuzz.orchestrate.endpoints.proxy import GatewayParts
from fuzz.orchestrate.endpoints.resolver import WorkflowEndpoints
from fuzz.orchestrate.endpoints.sessions import SignIns
from fuzz.orchestrate.iam.audit import AUDIT_FILE, AuditLog
from fuzz.orchestrate.iam.authz import Authorizer
from fuzz.orchestrate.iam.directory import CODE_PREFIX, AuthenticationError, IamDirectory
from fuzz.orchestrate.iam.service import LOGIN_METHOD, IamService
from fuzz.orchestrate.leadership import LeaderLease, LeaderTerm, lease_ttl, replica_id
from fuzz.orchestrate.metrics import OrchestratorMetrics
from fuzz.orchestrate.observe import Readiness, start_status
from fuzz.orchestrate.secrets import SecretStore
from fuzz.orchestrate.service import (
    ENROLL_METHOD,
    REGISTER_METHOD,
    SERVICE_NAME,
    OrchestratorService,
    add_orchestrator_service,
)
from fuzz.orchestrate.standby import StandbyServing, stand_by
from fuzz.orchestrate.store import PostgresTarget, Store
from fuzz.orchestrate.streams import LAUNCH_METHOD, StreamLimiter, server_workers
from fuzz.orchestrate.transfer.cache import IngressCache
from fuzz.orchestrate.transfer.host_roots import HostRootError, HostRoots
from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
from fuzz.orchestrate.ui.access import UiAccess
from fuzz.orchestrate.ui.serve import ApiAccess, UiServer, UiStartError
from fuzz.orchestrate.workflows.base import RunnerSettings
from fuzz.orchestrate.workflows.jobids import DEFAULT_JOB_IDS, JobIdRange, range_problem
from fuzz.orchestrate.workflows.loop import Runner
from fuzz.plugin.provider import JoinInfo
from fuzz.rpc.metrics import RpcLatency
from fuzz.rpc.server import (
    GRPC_MAX_MESSAGE_BYTES,
    RunningServer,
    ServerStartError,
    install_signal_handlers,
    restore_signal_handlers,
    start_server,
    wait_for_stop,
)
from fuzz.rpc.statusweb import StatusListener, StatusListenError
from fuzz.spec.cluster import (
    CacheSpec,
    CatalogSpec,
    DiskSpec,
    EndpointsSpec,
    LimitsSpec,
    MetricsSpec,
    UiSpec,
)
from fuzz.spec.endpoint_urls import GatewayAddress
from fuzz.units import format_bytes

logger = logging.getLogger(__name__)

DB_FILE = "server.db"
KEY_FILE = "master.key"
LOCK_FILE = "server.lock"
INSTANCE_FILE = "instance-id"
CACHE_DIR = "cache"  # the ingress cache, under the data dir
STOP_GRACE = 2.0
REQUEST_OVERHEAD = 64 * 1024  # a start request's fields other than the Fuzzfile, and more


@dataclass(frozen=True)
class ServerSettings:
    """How to run the orchestrator: where it listens, keeps its data, and runs jobs."""

    listen: str
    data_dir: Path
    volume_root: Path | None = None
    job_ids: JobIdRange = DEFAULT_JOB_IDS  # each job owner's uid:gid from here
    advertise: str | None = None  # the address agents register with; default: where it listens
    cluster: str = "default"  # names the resource cluster/<name> (cluster:apply)
    insecure: bool = False  # plain text instead of TLS: tests and trusted networks only
    host_paths: tuple[Path, ...] = ()  # host directories file:/// transfers may use, checked
    join_token_ttl: float = DEFAULT_JOIN_TOKEN_TTL  # seconds a new node's join token lives
    node_grace: float = DEFAULT_NODE_GRACE  # seconds a silent node has before it is lost
    ingress: IngressPolicy = field(default_factory=IngressPolicy)  # where http(s) ingress may go
    limits: LimitsSpec = field(default_factory=LimitsSpec)  # the spec's orchestrator.limits
    disk: DiskSpec = field(default_factory=DiskSpec)  # the spec's orchestrator.disk
    catalogs: tuple[CatalogSpec, ...] = ()  # orchestrator.catalogs, directory paths absolute
    cache: CacheSpec = field(default_factory=CacheSpec)  # the spec's orchestrator.cache
    # the spec's orchestrator.endpoints, cert and key paths absolute
    endpoints: EndpointsSpec = field(default_factory=EndpointsSpec)
    metrics: MetricsSpec = field(default_factory=MetricsSpec)  # the spec's orchestrator.metrics
    store: PostgresTarget | None = None  # orchestrator.store; None: DATA_DIR/server.db
    # orchestrator.replicas: every replica's HOST:PORT, handed to agents with join tokens
    replicas: tuple[str, ...] = ()
    ui: UiSpec = field(default_factory=UiSpec)  # the spec's orchestrator.ui


def default_volume_root(data_dir: Path) -> Path:
    """Where volumes live when no ``volume_root`` is configured: ``DATA_DIR-volumes``.

    Next to the data dir, never in it, so that the database, keys and logs can be
    given a disk of their own. A data dir in which an older fuzz kept its volumes
    (``DATA_DIR/volumes``) keeps using that: persistent volumes are found by their
    path, and moving them under a running cluster's jobs is not done silently.
    """
    legacy = data_dir / "volumes"
    if legacy.is_dir():
        logger.warning("volumes stay in %s, inside the data dir, where an older fuzz made "
                       "them; set orchestrator.volume_root (after moving them) to keep them "
                       "apart from the database", legacy)
        return legacy
    return data_dir.with_name(data_dir.name + "-volumes")


def _key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    if not path.exists():
        write_private_file(path, os.urandom(32))
    key = path.read_bytes()
    if len(key) != 32:
        raise ServerStartError(f"{path} must hold 32 bytes (it holds {len(key)})")
    return key


def _instance_id(data_dir: Path) -> str:
    """This orchestrator's short random id, made once and kept in the data dir."""
    path = data_dir / INSTANCE_FILE
    if not path.exists():
        write_private_file(path, secrets.token_hex(4).encode())
    return path.read_text().strip()


def _cluster_endpoints(settings: ServerSettings, nodes: NodeDirectory) -> list[str]:
    """The orchestrator's and the node agents' HOST:PORT, which ingress never fetches from."""
    own = [settings.listen, settings.advertise or settings.listen]
    return own + [record.endpoint for record in nodes.records()]


def public_host(settings: ServerSettings) -> str:
    """The host users reach the orchestrator's web listeners at."""
    return (settings.advertise or settings.listen).rpartition(":")[0]


def _gateway_tls(settings: ServerSettings, tls: ClusterTls | None) -> GatewayTls | None:
    """The certificate the gateway (and the web UI) serve: the admin's, else the
    orchestrator's own from the cluster CA; None on a plain-text cluster."""
    spec = settings.endpoints
    if spec.cert is not None and spec.key is not None:
        return GatewayTls(Path(spec.cert), Path(spec.key))
    return GatewayTls(tls.files.cert, tls.files.key) if tls is not None else None


def _start_ui(settings: ServerSettings, tls: ClusterTls | None, access: UiAccess,
              api_endpoint: str) -> UiServer | None:
    """The web UI (``orchestrator.ui``), serving; None when it is turned off."""
    if not settings.ui.enabled:
        return None
    host = settings.listen.rpartition(":")[0]
    try:
        ui = UiServer(settings.ui.listen or f"{host}:0", _gateway_tls(settings, tls))
    except UiStartError as exc:
        raise ServerStartError(str(exc)) from None
    ui.start(access, ApiAccess(api_endpoint, tls.ca_pem if tls is not None else None))
    return ui


def _bind_gateway(settings: ServerSettings, tls: ClusterTls | None
                  ) -> tuple[Gateway, GatewayAddress]:
    """Bind the endpoint gateway (the orchestrator's host, a free port, unless the spec
    says where) and say where users reach it."""
    spec = settings.endpoints
    gateway_tls = _gateway_tls(settings, tls)
    host = settings.listen.rpartition(":")[0]
    try:
        gateway = Gateway(spec.listen or f"{host}:0", gateway_tls)
    except GatewayStartError as exc:
        raise ServerStartError(str(exc)) from None
    base = spec.url or f"{gateway.scheme}://{public_host(settings)}:{gateway.port}"
    return gateway, GatewayAddress(base.rstrip("/"), spec.domain or "")


def _max_message_bytes(settings: ServerSettings) -> int:
    """The largest request the server takes: a Fuzzfile at the limit always arrives, so
    that the refusal of one over it is the server's own line, never gRPC's "larger than
    max"."""
    return max(GRPC_MAX_MESSAGE_BYTES, settings.limits.fuzzfile_bytes + REQUEST_OVERHEAD)


def _agents_address(settings: ServerSettings) -> str:
    """Where agents register (handed out with join tokens): every replica's address,
    comma-separated, else the advertised one ('' for: where it listens)."""
    return ",".join(settings.replicas) or settings.advertise or ""


def _lead(settings: ServerSettings, target: PostgresTarget, store: Store,
          tls: ClusterTls | None, stop: threading.Event) -> LeaderTerm | None:
    """Take the store's leadership lease, standing by until it is free; its writes fenced
    on the lease's epoch from then on. None when ``stop`` came first. The cluster's
    instance id is the store's (a new replica's data dir takes it from there)."""
    instance_file = settings.data_dir / INSTANCE_FILE
    lease = LeaderLease(target, instance_file.read_text().strip()
                        if instance_file.exists() else None,
                        replica_id(settings.data_dir), settings.advertise or settings.listen,
                        lease_ttl())
    if not instance_file.exists():  # a new replica: the cluster's, from the store
        write_private_file(instance_file, lease.instance.encode())
    try:
        taken = stand_by(lease, StandbyServing(
            settings.listen, tls.files if tls else None, server_workers(settings.limits),
            _max_message_bytes(settings), settings.data_dir), settings.metrics, stop)
    except BaseException:
        lease.close()
        raise
    if not taken:
        lease.close()
        return None
    logger.info("leading (lease epoch %d)", lease.epoch)
    term = LeaderTerm(lease, stop)
    store.fence(lease.epoch, term.fenced, term.leading)
    return term


def serve(settings: ServerSettings, stop: threading.Event | None = None,
          elastic: ElasticSetup | None = None) -> None:
    """Run the orchestrator until SIGTERM or SIGINT (or ``stop``); blocks for its life.

    With ``elastic`` (the cluster spec, plugins and state store) it also runs the
    elastic loop for the spec's elastic pools (:mod:`fuzz.orchestrate.cluster.elastic`).
    """
    data_dir = settings.data_dir
    problem = range_problem(settings.job_ids)
    if problem is not None:
        raise ServerStartError(problem)
    try:
        host_roots = HostRoots.open(settings.host_paths)  # once, for the server's life
    except HostRootError as exc:
        raise ServerStartError(str(exc)) from None
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = acquire_lock(data_dir, lock_file=LOCK_FILE, owner="server")
    except OSError as exc:
        host_roots.close()
        raise ServerStartError(f"cannot use data dir {data_dir}: {exc.strerror}") from exc
    volume_root = settings.volume_root or default_volume_root(data_dir)
    try:
        volume_root.mkdir(mode=0o711, parents=True, exist_ok=True)
    except OSError as exc:
        release_lock(lock_fd)
        host_roots.close()
        raise ServerStartError(f"cannot use volume root {volume_root}: {exc.strerror}") from exc
    try:
        cache = IngressCache(data_dir / CACHE_DIR, settings.cache.bytes) \
            if settings.cache.bytes else None
    except OSError as exc:
        release_lock(lock_fd)
        host_roots.close()
        raise ServerStartError(f"cannot use the ingress cache in {data_dir / CACHE_DIR}: "
                               f"{exc.strerror}") from exc
    reserve = DiskReserve(data_dir, settings.disk.reserve, settings.disk.min_free)
    if not reserve.fill():
        logger.warning("the disk of %s has too little room to reserve %s for the database "
                       "(orchestrator.disk.reserve) and keep %s free (min_free); it is tried "
                       "again every %gs", data_dir, format_bytes(settings.disk.reserve),
                       format_bytes(settings.disk.min_free), REFILL_INTERVAL)
    stop_event = stop or threading.Event()
    previous = install_signal_handlers(stop_event)
    store: Store | None = None
    audit: AuditLog | None = None
    running: RunningServer | None = None
    runner: Runner | None = None
    nodes: NodeDirectory | None = None
    loop: ElasticLoop | None = None
    gateway: Gateway | None = None
    term: LeaderTerm | None = None
    status: StatusListener | None = None
    metrics = OrchestratorMetrics()
    ui: UiServer | None = None
    try:
        tls = None if settings.insecure else ClusterTls.start(
            data_dir, server_hosts(settings.listen, settings.advertise))
        sealer = Sealer.from_keys(_key(data_dir))
        # the reserve is on this machine's disk: it helps the SQLite file only
        store = Store(settings.store or data_dir / DB_FILE,
                      on_full=reserve.release if settings.store is None else None)
        if settings.store is not None:  # replicas may share it: lead first
            term = _lead(settings, settings.store, store, tls, stop_event)
            if term is None:
                return  # stopped while standing by
        gateway, gateway_address = _bind_gateway(settings, tls)
        iam = IamDirectory(store)
        iam.ensure_admin(ensure_admin_token(data_dir))
        audit = AuditLog(data_dir / AUDIT_FILE, on_full=reserve.release)
        authz = Authorizer(iam, audit)
        nodes = NodeDirectory(store, sealer, agent_tls=tls.agent_tls if tls else None,
                              join_token_ttl=settings.join_token_ttl,
                              node_grace=settings.node_grace,
                              acting=term.acting if term is not None else None,
                              epoch=term.lease.epoch if term is not None else 0)
        secret_store = SecretStore(store, sealer)
        runner = Runner(store, nodes, secret_store, RunnerSettings(
            volume_root=volume_root, disk_floor=DiskFloor(volume_root, settings.disk.min_free),
            log_dir=data_dir / "logs", job_ids=settings.job_ids,
            instance=_instance_id(data_dir), host_roots=host_roots,
            ingress=replace(settings.ingress, cluster_endpoints=partial(
                _cluster_endpoints, settings, nodes)),
            limits=settings.limits, log_headroom=settings.disk.reserve,
            cache=cache, cache_links=settings.cache.placement == "link",
            endpoints=gateway_address, metrics=metrics,
        ))
        certifier = NodeCertifier(store, tls.authority, nodes.join_tokens) if tls else None
        service = OrchestratorService(
            runner, nodes, secret_store, authz, cluster=settings.cluster,
            advertise=_agents_address(settings), certifier=certifier,
            catalogs=ClusterCatalogs(settings.catalogs, data_dir / "catalogs"))
        service.gateway = gateway_address
        if elastic is not None:
            ca_pem = certifier.ca_pem.decode() if certifier is not None else None

            def join(address: str) -> JoinInfo:
                return JoinInfo(nodes.issue_join_token(address), service.advertise, ca_pem)

            loop = ElasticLoop(elastic, runner, nodes, store, join)
            service.elastic = loop
        service.cache = cache
        iam_service = IamService(authz)

        def user_of(token: str) -> str | None:
            try:
                return iam.authenticate(token).user
            except AuthenticationError:
                return None

        def register(server: grpc.Server) -> None:
            add_orchestrator_service(service, server)
            iam_pb2_grpc.add_IamServicer_to_server(iam_service, server)

        running = start_server(
            settings.listen, authz.token_problem, register, SERVICE_NAME,
            tls=tls.files if tls else None,
            open_methods=(REGISTER_METHOD, ENROLL_METHOD, LOGIN_METHOD, LAUNCH_METHOD),
            # watches, followed logs, execs and forwarded connections hold a worker each
            # while they last: capped, with workers kept for heartbeats (see streams.py)
            max_workers=server_workers(settings.limits),
            interceptors=[StreamLimiter(settings.limits, user_of), RpcLatency(metrics.registry)],
            max_message_bytes=_max_message_bytes(settings),
            serving=False,  # until the runner has started
        )
        readiness = Readiness(store, server=running)
        try:
            status = start_status(settings.metrics, metrics, runner, nodes, loop, readiness)
        except StatusListenError as exc:
            raise ServerStartError(str(exc)) from None
        service.advertise = _agents_address(settings) or running.endpoint
        sign_ins = SignIns(settings.endpoints.session_seconds())
        gateway.start(GatewayParts(
            WorkflowEndpoints(runner, nodes), iam, sign_ins,
            settings.endpoints.domain or "", is_code=lambda text: text.startswith(CODE_PREFIX),
            audit=audit.record))
        ui = _start_ui(settings, tls, UiAccess(
            sign_ins, iam, is_code=lambda text: text.startswith(CODE_PREFIX),
            audit=audit.record), running.endpoint)
        if tls is None:
            logger.warning("serving plain text (insecure) on %s: tokens, secrets and data "
                           "cross the network unencrypted", running.endpoint)
        runner.start()
        threading.Thread(target=reserve.keep, args=(stop_event,), name="disk-reserve",
                         daemon=True).start()
        if loop is not None:
            loop.start()
        readiness.runner_started.set()
        running.set_serving(True)
        write_json_atomic(data_dir / INFO_FILE, {"pid": os.getpid(),
                                                 "endpoint": running.endpoint,
                                                 "endpoints_url": service.gateway.base,
                                                 "metrics": status.endpoint if status else None,
                                                 "ui_url": ui.url(public_host(settings))
                                                 if ui is not None else ""})
        if ui is not None:
            logger.info("the web UI is at %s", ui.url(public_host(settings)))
        wait_for_stop(stop_event)
    finally:
        if ui is not None:
            ui.stop()
        if gateway is not None:
            gateway.stop()
        if running is not None:
            running.health.enter_graceful_shutdown()
            running.server.stop(STOP_GRACE).wait()
        if status is not None:
            status.stop()
        if loop is not None:
            loop.stop()
        if runner is not None:
            runner.stop()
        if nodes is not None:
            nodes.save_heartbeats()
        if store is not None:
            store.close()
        if audit is not None:
            audit.close()
        (data_dir / INFO_FILE).unlink(missing_ok=True)
        restore_signal_handlers(previous)
        release_lock(lock_fd)
        host_roots.close()
        if term is not None:
            term.end()  # raises LeadershipLostError if the lease was lost
