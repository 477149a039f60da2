"""The orchestrator's gRPC service: the API `fuzz workflow`, `fuzz secret` and agents call.

Every user-facing RPC is authorized through :class:`~fuzz.orchestrate.iam.authz.Authorizer`
before it acts: workflows are ``workflow/<owner>/<name>`` (keyed by owner and name: a
request means the caller's own unless it names another owner; see
:mod:`fuzz.orchestrate.iam.ownership`), secrets ``secret/<caller>/<name>``. Lists show
what the caller may read; a workflow the caller may not read is "not found". Nodes
authenticate themselves: in a TLS cluster with the certificate they enrolled for
(:mod:`fuzz.orchestrate.cluster.enrollment`), in a plain-text one with their join token.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from fuzz.api import orchestrator_pb2 as pb
from fuzz.api import orchestrator_pb2_grpc, substrate_pb2
from fuzz.clients.agent import AgentError
from fuzz.errors import FuzzError
from fuzz.heap import give_back_free_memory
from fuzz.orchestrate.cache_messages import cache_list, cache_prune
from fuzz.orchestrate.catalogs import ClusterCatalogs
from fuzz.orchestrate.cluster.elastic import ElasticLoop
from fuzz.orchestrate.cluster.enrollment import NodeCertifier
from fuzz.orchestrate.cluster.nodes import JoinRefusedError, NodeDirectory, NodeUse
from fuzz.orchestrate.endpoints.listing import endpoint_messages
from fuzz.orchestrate.iam.accounts import AccountError, choose_account
from fuzz.orchestrate.iam.authz import (
    Authorizer,
    PermissionDeniedError,
    UnauthenticatedError,
    account_resource,
    account_secret_resource,
    cluster_resource,
    node_resource,
    secret_resource,
    workflow_resource,
)
from fuzz.orchestrate.iam.directory import Identity
from fuzz.orchestrate.iam.ownership import (
    OwnedWorkflow,
    owned_workflow,
    run_workflow,
    unknown_run,
)
from fuzz.orchestrate.iam.policy import WORKFLOW_EXEC, WORKFLOW_PORT_FORWARD
from fuzz.orchestrate.messages import (
    TaskMessages,
    node_message,
    node_state,
    secret_message,
    workflow_message,
    workflow_summary,
)
from fuzz.orchestrate.relay import LiveTask, direct_ticket, relay_exec, relay_port_forward
from fuzz.orchestrate.secrets import SecretError, SecretStore, account_owner, missing_secret
from fuzz.orchestrate.states import TaskState
from fuzz.orchestrate.transfer.cache import IngressCache
from fuzz.orchestrate.workflows.base import (
    WorkflowExistsError,
    WorkflowNotFoundError,
    WorkflowSnapshot,
)
from fuzz.orchestrate.workflows.loop import Runner
from fuzz.orchestrate.workflows.mpi import LaunchTokenError, UnknownHostError, remote_command
from fuzz.orchestrate.workflows.tasks import rank_log_path
from fuzz.orchestrate.workflows.workflow import (
    HostPathError,
    WorkflowNameError,
    account_references,
    log_paths,
    secret_references,
)
from fuzz.rpc.server import StatusTable, abort_with
from fuzz.rpc.tunnel import request_frame
from fuzz.spec.endpoint_urls import GatewayAddress
from fuzz.spec.fuzzfile_loader import LoadedFuzzfile, check_fuzzfile_size, parse_fuzzfile
from fuzz.spec.problems import SpecError
from fuzz.spec.workflowref import is_run_id, task_key

SERVICE_NAME = "fuzz.orchestrator.v1.Orchestrator"
REGISTER_METHOD = f"/{SERVICE_NAME}/RegisterNode"
ENROLL_METHOD = f"/{SERVICE_NAME}/EnrollNode"
WATCH_INTERVAL = 5.0
WATCH_MIN_INTERVAL = 0.2  # a watcher sees at most five updates a second
WATCH_PACE = 10.0  # and waits at least ten times the CPU time its last update took...
WATCH_MAX_PAUSE = 1.0  # ...but never longer than this between updates
LOG_CHUNK = 64 * 1024
MAX_TCP_PORT = 65535

NODE_ACTIONS = ("cordon", "drain", "uncordon", "evict", "forget")
"""What CordonNodes may do to a node (the reason matters to evict only)."""


class NodeActionError(FuzzError):
    """A CordonNodes request that asks for no known action."""


class NodeNotFoundError(FuzzError):
    """No node of that name has registered."""


_STATUS: StatusTable = (
    (JoinRefusedError, grpc.StatusCode.UNAUTHENTICATED),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (WorkflowNotFoundError, grpc.StatusCode.NOT_FOUND),
    (WorkflowExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (WorkflowNameError, grpc.StatusCode.INVALID_ARGUMENT),
    (HostPathError, grpc.StatusCode.PERMISSION_DENIED),
    (HostPathError, grpc.StatusCode.PERMISSION_DENIED),
    (SpecError, grpc.StatusCode.INVALID_ARGUMENT),
    (SecretError, grpc.StatusCode.FAILED_PRECONDITION),
    (NodeActionError, grpc.StatusCode.INVALID_ARGUMENT),
    (NodeNotFoundError, grpc.StatusCode.NOT_FOUND),
    (FuzzError, grpc.StatusCode.FAILED_PRECONDITION),
)


def add_orchestrator_service(service: OrchestratorService, server: grpc.Server) -> None:
    """Register ``service`` on ``server``, PortForward passing frames on as they are.

    The generated registration would parse PortForward's requests and serialize its
    replies as messages; the relay passes the client's and the agent's frames on
    serialized (parsing and re-serializing every data chunk cost the orchestrator a
    fifth of its CPU), so that one method is registered again (a later registration
    wins): a request that carries a frame alone stays its frame's bytes.
    """
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(service, server)
    # grpc-stubs predates add_registered_method_handlers (grpcio 1.63)
    server.add_registered_method_handlers(SERVICE_NAME, {  # type: ignore[attr-defined]
        "PortForward": grpc.stream_stream_rpc_method_handler(
            service.PortForward, request_deserializer=_port_forward_request),
    })


def _port_forward_request(raw: bytes) -> pb.PortForwardRequest | bytes:
    """A PortForward request: its frame's bytes when it carries nothing else, else parsed."""
    frame = request_frame(raw)
    return pb.PortForwardRequest.FromString(raw) if frame is None else frame


class TaskNotRunningError(FuzzError):
    """The task is not running now (so there is nothing to exec in or forward to)."""


class OrchestratorService:
    """Answers the API from the runner, the node directory and the secret store.

    Registered with :func:`add_orchestrator_service`, which looks its methods up by
    name (the generated base class adds nothing but UNIMPLEMENTED stubs).
    """

    def __init__(self, runner: Runner, nodes: NodeDirectory, secrets: SecretStore,
                 authz: Authorizer, *, cluster: str, advertise: str,
                 certifier: NodeCertifier | None = None,
                 catalogs: ClusterCatalogs | None = None) -> None:
        """``advertise`` is the address agents register with (handed out with join tokens).

        With ``certifier`` (a TLS cluster) nodes enroll for certificates and prove
        their registrations with them; without, they show their join token.
        """
        self._runner = runner
        self._nodes = nodes
        self._secrets = secrets
        self._authz = authz
        self._cluster = cluster
        self._certifier = certifier
        self._catalogs = catalogs or ClusterCatalogs([], Path())
        self.advertise = advertise
        self.elastic: ElasticLoop | None = None  # set when the spec has elastic pools
        self.cache: IngressCache | None = None  # set when orchestrator.cache is on
        self.gateway = GatewayAddress()  # set once the endpoint gateway listens

    # --- nodes -------------------------------------------------------------------------

    def EnrollNode(self, request: pb.EnrollNodeRequest, context: grpc.ServicerContext
                   ) -> pb.EnrollNodeReply:
        """An agent spends its join token for the node's certificate."""
        who = f"node:{request.name}"
        try:
            if self._certifier is None:
                raise FuzzError("the orchestrator runs without TLS (--insecure): nodes join "
                                "with their join token, without enrolling")
            certificate = self._certifier.enroll(request.name, request.join_token, request.csr)
        except FuzzError as exc:
            self._authz.audit.record(who, "node:enroll", node_resource(request.name), False,
                                     str(exc))
            abort_with(context, exc, _STATUS)
        self._authz.audit.record(who, "node:enroll", node_resource(request.name), True,
                                 "join token spent")
        return pb.EnrollNodeReply(certificate=certificate)

    def RegisterNode(self, request: pb.RegisterNodeRequest, context: grpc.ServicerContext
                     ) -> pb.RegisterNodeReply:
        """An agent joins (or beats its heart)."""
        labels = dict(request.labels)
        try:
            if self._certifier is None:
                self._nodes.check_join_token(request.name, request.join_token,
                                             request.endpoint, request.agent_token)
            elif not request.certificate:
                raise JoinRefusedError(f"node {request.name!r}: this cluster speaks TLS; start "
                                       "the agent with --join-ca-file to enroll")
            else:
                self._certifier.verify(request.name, request.endpoint, request.agent_token,
                                       labels, request.certificate, request.signature,
                                       request.signed_at)
            first = self._nodes.register(request.name, request.endpoint, request.agent_token,
                                         labels)
        except FuzzError as exc:
            self._authz.audit.record(f"node:{request.name}", "node:register",
                                     node_resource(request.name), False, str(exc))
            abort_with(context, exc, _STATUS)
        return pb.RegisterNodeReply(first=first)

    def IssueJoinToken(self, request: pb.IssueJoinTokenRequest, context: grpc.ServicerContext
                       ) -> pb.JoinToken:
        """A join token for a node about to be created."""
        try:
            self._authz.authorize(context, "cluster:apply", cluster_resource(self._cluster))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        if not request.node:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a join token needs a node name")
        ca = self._certifier.ca_pem.decode() if self._certifier is not None else ""
        return pb.JoinToken(token=self._nodes.issue_join_token(request.node),
                            orchestrator=self.advertise, ca=ca)

    def ListNodes(self, request: pb.ListNodesRequest, context: grpc.ServicerContext
                  ) -> pb.NodeList:
        """The registered nodes the caller may see, and what runs there."""
        try:
            identity = self._authz.identify(context)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        records = self._nodes.records()
        shown = self._authz.permitted(identity, "node:read",
                                      [node_resource(r.name) for r in records], "node/*")
        used = self._runner.used_resources()
        return pb.NodeList(nodes=[
            node_message(record, used.get(record.name, NodeUse()), self._nodes)
            for record, show in zip(records, shown, strict=True) if show
        ])

    def CordonNodes(self, request: pb.CordonNodesRequest, context: grpc.ServicerContext
                    ) -> pb.NodeWorkReply:
        """Cordon, drain, uncordon, evict or forget nodes; what runs on them now."""
        try:
            names = self._drain_access(context, list(request.nodes))
            if request.action not in NODE_ACTIONS:
                raise NodeActionError(f"unknown node action {request.action!r} "
                                      f"(one of {', '.join(NODE_ACTIONS)})")
            if request.action == "evict" and not request.reason:
                raise NodeActionError("evict needs a reason (the stopped tasks' error)")
            known = {record.name for record in self._nodes.records()}
            if request.action in ("cordon", "uncordon"):
                for name in names:
                    if name not in known:
                        raise NodeNotFoundError(f"no node {name!r} is registered")
            for name in names:
                self._act(request.action, name, request.reason)
            return self._node_work(names)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)

    def NodeWork(self, request: pb.NodeWorkRequest, context: grpc.ServicerContext
                 ) -> pb.NodeWorkReply:
        """The tasks in flight on the named nodes (every node when none is named)."""
        try:
            names = list(request.nodes) or [record.name for record in self._nodes.records()]
            return self._node_work(self._drain_access(context, names))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)

    def _drain_access(self, context: grpc.ServicerContext, names: list[str]) -> list[str]:
        """``names`` once each, after checking the caller may node:drain every one.

        One audit line per call (a drain asks every second or two), and one more
        naming the first node refused, if any.
        """
        identity = self._authz.identify(context)
        unique = list(dict.fromkeys(names))
        allowed = self._authz.permitted(identity, "node:drain",
                                        [node_resource(name) for name in unique], "node/*")
        refused = [name for name, ok in zip(unique, allowed, strict=True) if not ok]
        if refused:
            self._authz.check(identity, "node:drain", node_resource(refused[0]))
        return unique

    def _node_work(self, names: list[str]) -> pb.NodeWorkReply:
        records = {record.name: record for record in self._nodes.records()}
        work = self._runner.node_work(names)
        return pb.NodeWorkReply(nodes=[
            pb.NodeWork(
                node=name,
                state=node_state(records[name], self._nodes) if name in records else "UNKNOWN",
                tasks=[pb.NodeTask(workflow=t.workflow, owner=t.owner, task=t.key, job=t.job,
                                   state=t.state, started=t.started, attempt=t.attempt)
                       for t in work[name]])
            for name in names])

    def _act(self, action: str, name: str, reason: str) -> None:
        """Carry out one of :data:`NODE_ACTIONS` on node ``name``."""
        match action:
            case "cordon":
                self._nodes.cordon(name)
            case "drain":
                self._nodes.drain(name)
            case "uncordon":
                self._nodes.uncordon(name)
            case "evict":
                self._runner.evict(name, reason)
            case "forget":
                self._nodes.forget(name)

    def PoolDemand(self, request: pb.PoolDemandRequest, context: grpc.ServicerContext
                   ) -> pb.PoolDemandReply:
        """The elastic loop's membership of each elastic pool, and the pools' trouble."""
        try:
            self._authz.authorize(context, "node:read", cluster_resource(self._cluster))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        if self.elastic is None:
            return pb.PoolDemandReply()
        views, decided_at = self.elastic.pools()
        return pb.PoolDemandReply(decided_at=decided_at, pools=[
            pb.ElasticPoolState(
                name=view.name, known=True, failing=view.failing, error=view.error,
                error_at=view.error_at,
                members=[pb.PoolMember(
                    address=address, offering=view.members.get(address) or "",
                    state=state if address in view.members else "RELEASING")
                    for address, state in sorted(view.states.items())])
            for view in views])

    def MemberStatus(self, request: pb.MemberStatusRequest, context: grpc.ServicerContext
                     ) -> pb.MemberStatusReply:
        """What a federation routes by beyond the nodes: the elastic pools' offerings with
        prices, the tasks waiting for room and, for a caller who may also read the ingress
        cache (``cache:read``: its sources name every user's data), what the cache holds of
        each source."""
        try:
            self._authz.authorize(context, "node:read", cluster_resource(self._cluster))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        offerings = self.elastic.offerings() if self.elastic is not None else []
        return pb.MemberStatusReply(
            queued_tasks=len(self._runner.unplaced()),
            cached=self._cached_sources(context),
            offerings=[pb.PoolOffering(
                pool=pool, name=offering.name, cores=offering.cores,
                memory_bytes=offering.memory_bytes, gpus=offering.gpus,
                gpu_model=offering.gpu_model or "", architecture=capacity.architecture,
                price_per_hour=offering.price_per_hour, labels=dict(capacity.labels))
                for pool, offering, capacity in offerings])
    def _cached_sources(self, context: grpc.ServicerContext) -> list[pb.CachedSource]:
        """The cache's bytes per source, for a caller allowed ``cache:read``; else none."""
        if self.cache is None:
            return []
        try:
            self._authz.authorize(context, "cache:read", cluster_resource(self._cluster))
        except FuzzError:
            return []
        held: dict[str, int] = {}
        for entry in self.cache.entries():
            held[entry.source] = held.get(entry.source, 0) + entry.size
        return [pb.CachedSource(uri=uri, bytes=size) for uri, size in sorted(held.items())]

    # --- the ingress cache -------------------------------------------------------------

    def ListCache(self, request: pb.ListCacheRequest, context: grpc.ServicerContext
                  ) -> pb.CacheList:
        """What the ingress cache holds (cache:read: its sources name every user's data)."""
        try:
            self._authz.authorize(context, "cache:read", cluster_resource(self._cluster))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        return cache_list(self.cache)

    def PruneCache(self, request: pb.PruneCacheRequest, context: grpc.ServicerContext
                   ) -> pb.PruneCacheReply:
        """Remove every cache entry not in use."""
        try:
            self._authz.authorize(context, "cache:prune", cluster_resource(self._cluster))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        return cache_prune(self.cache)

    # --- workflows ---------------------------------------------------------------------

    def workflow_access(self, context: grpc.ServicerContext, action: str, owner: str,
                        name: str) -> tuple[Identity, OwnedWorkflow, WorkflowSnapshot]:
        """The seam of every RPC on an existing workflow: who calls, and may they ``action``.

        ``owner`` empty: the caller's own workflow ``name``, or the run whose id is
        ``name`` (see :func:`fuzz.spec.workflowref.is_run_id`). Returns the caller, the
        workflow and its latest run (that run, for a run id). A workflow the caller may
        not read answers exactly as one that does not exist (WorkflowNotFoundError): nobody learns
        another owner's workflow names. One they may read but not ``action`` raises
        PermissionDeniedError; a missing token UnauthenticatedError (see ``_STATUS``).
        """
        identity = self._authz.identify(context)
        target = self._target(identity.user, owner, name)
        resource = workflow_resource(target.owner, target.name)
        if not self._authz.allows(identity, "workflow:read", resource):
            raise target.not_found()
        try:
            snapshot = self._runner.snapshot(target.owner, target.name, target.run_id)
        except WorkflowNotFoundError:
            raise target.not_found() from None
        if action != "workflow:read":
            self._authz.check(identity, action, resource)
        return identity, target, snapshot

    def _target(self, caller: str, owner: str, name: str) -> OwnedWorkflow:
        """The workflow (or run, named by its id) a request is about, unchecked."""
        if not is_run_id(name):
            return owned_workflow(caller, owner, name)
        if owner:
            raise WorkflowNameError(f"run id {name!r} names its workflow's owner already: "
                                    "give it without OWNER/")
        record = self._runner.run_record(name)
        if record is None:
            raise unknown_run(name).not_found()
        return run_workflow(record.owner, record.name, name)

    def StartWorkflow(self, request: pb.StartWorkflowRequest, context: grpc.ServicerContext
                      ) -> pb.Workflow:
        """Validate a Fuzzfile against the cluster's nodes and start a run.

        The run is the caller's own workflow ``name``, unless the request names another
        owner and IAM lets the caller start ``workflow/<owner>/<name>``: its secrets,
        persistent volumes and job ids are then that owner's. It runs in the account
        :func:`~fuzz.orchestrate.iam.accounts.choose_account` picks from the owner's
        groups as IAM has them now; the caller needs ``account:use`` on it and
        ``secret:use`` on each account secret the file names.
        """
        try:
            identity = self._authz.identify(context)
            target = owned_workflow(identity.user, request.owner, request.name)
            self._authz.check(identity, "workflow:start",
                              workflow_resource(target.owner, target.name))
            # With elastic pools, the elastic loop decides what fits (and fails what never can).
            elastic = self.elastic is not None and self.elastic.active
            loaded = self._parse_fuzzfile(request, elastic)
            account = self._account(identity, target.owner, request.account, loaded)
            for where, scope, secret in secret_references(loaded.fuzzfile):
                if scope == "account":
                    self._authz.check(identity, "secret:use",
                                      account_secret_resource(account, secret))
                    continue
                self._authz.check_hidden(identity, "secret:use",
                                         secret_resource(target.owner, secret), target.owner,
                                         missing_secret(loaded.path, where, secret))
            self._runner.submit(target.name, target.owner, loaded, account)
            return self._workflow_message(self._runner.snapshot(target.owner, target.name))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)

    def _account(self, identity: Identity, owner: str, asked: str, loaded: LoadedFuzzfile
                 ) -> str:
        """The account ``owner``'s new run is in (empty: none), checked: the owner is a
        member now and the caller may ``account:use`` it."""
        known = self._authz.iam.user(owner)
        account = choose_account(owner, tuple(known.groups) if known else (), asked,
                                 account_references(loaded.fuzzfile), str(loaded.path))
        if account:
            self._authz.check(identity, "account:use", account_resource(account))
        return account

    def _parse_fuzzfile(self, request: pb.StartWorkflowRequest, elastic: bool
                        ) -> LoadedFuzzfile:
        """The request's Fuzzfile, checked: first its size, then its text (raises SpecError).

        A refused one gives the free memory back at once: six large ones at once would
        otherwise leave tens of MB in the threads' malloc arenas (see :mod:`fuzz.heap`).
        """
        file_name = request.file_name or "Fuzzfile"
        text = request.fuzzfile
        try:
            check_fuzzfile_size(len(text.encode()), file_name, self._runner.limits)
            return parse_fuzzfile(text, file_name,
                                  capacities=None if elastic else self._nodes.capacities(),
                                  capacities_are_nodes=True, limits=self._runner.limits,
                                  for_start=True)
        except SpecError:
            del text
            give_back_free_memory()
            raise

    def GetWorkflow(self, request: pb.WorkflowRef, context: grpc.ServicerContext
                    ) -> pb.Workflow:
        """The latest run of a workflow."""
        try:
            snapshot = self.workflow_access(context, "workflow:read", request.owner,
                                            request.name)[2]
            message = self._workflow_message(snapshot)
            if request.with_fuzzfile:
                message.fuzzfile = snapshot.record.fuzzfile
            return message
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)

    def WatchWorkflow(self, request: pb.WorkflowRef, context: grpc.ServicerContext
                      ) -> Iterator[pb.Workflow]:
        """The workflow now and after every change, until it has finished."""
        try:
            _, target, _ = self.workflow_access(context, "workflow:read", request.owner,
                                                request.name)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        seen = -1
        kept = TaskMessages()  # each update rebuilds only the tasks that changed
        while context.is_active():
            started = time.thread_time()
            try:
                snapshot = self._runner.snapshot(target.owner, target.name, target.run_id)
            except FuzzError as exc:
                abort_with(context, exc, _STATUS)
            yield self._workflow_message(snapshot, kept)
            if snapshot.record.finished_state:
                return
            # the thread's CPU time since the snapshot: gRPC serialized and sent it meanwhile
            time.sleep(watch_pause(time.thread_time() - started))
            seen = self._runner.wait_for_change(seen, WATCH_INTERVAL)

    def ListWorkflows(self, request: pb.ListWorkflowsRequest, context: grpc.ServicerContext
                      ) -> pb.WorkflowList:
        """The latest run of every workflow the caller may read, newest first."""
        try:
            identity = self._authz.identify(context)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        records = self._runner.workflows()
        shown = self._authz.permitted(
            identity, "workflow:read", [workflow_resource(r.owner, r.name) for r in records],
            "workflow/*")
        return pb.WorkflowList(workflows=[
            workflow_summary(r) for r, show in zip(records, shown, strict=True) if show])

    def CancelWorkflow(self, request: pb.WorkflowRef, context: grpc.ServicerContext
                       ) -> pb.Workflow:
        """Stop a workflow: nothing new starts, running tasks are stopped."""
        try:
            _, target, _ = self.workflow_access(context, "workflow:cancel", request.owner,
                                                request.name)
            self._runner.cancel(target.owner, target.name, target.run_id)
            return self._workflow_message(self._runner.snapshot(target.owner, target.name,
                                                          target.run_id))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)

    def StreamJobLog(self, request: pb.JobLogRequest, context: grpc.ServicerContext
                     ) -> Iterator[pb.LogChunk]:
        """A task's output (a multinode task's rank ``request.node``): from its node while it
        runs, from the kept copy after."""
        stream = request.stream or "stdout"
        if stream not in ("stdout", "stderr"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream must be stdout or stderr")
        try:
            _, target, snapshot = self.workflow_access(context, "workflow:read", request.owner,
                                                       request.workflow)
            workflow_id, key = _task_key(snapshot, target, request.task)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        rank = request.node
        count = max(len(next(t for t in snapshot.tasks if t.key == key).nodes), 1)
        if rank >= count:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"node {rank}: task {key} runs on {count} node"
                          f"{'s' if count > 1 else ''} (0 to {count - 1})")
        sent = 0
        plan = self._runner.live_attempt(target.owner, target.name, key, target.run_id)
        if plan is not None:
            client = self._nodes.client(plan.nodes[rank])
            with contextlib.suppress(AgentError):  # it ended meanwhile: the copy has the rest
                for data in client.stream_logs(plan.containers[rank], stream,
                                               follow=request.follow):
                    sent += len(data)
                    yield pb.LogChunk(data=data)
                if not request.follow:
                    return
            self._wait_until_final(target, key, context)
        elif request.follow:
            self._wait_until_final(target, key, context)
        stdout, stderr = log_paths(self._runner.log_dir(), workflow_id, key)
        yield from _read_from(rank_log_path(stdout if stream == "stdout" else stderr, rank), sent)

    def _wait_until_final(self, workflow: OwnedWorkflow, key: str,
                          context: grpc.ServicerContext) -> None:
        seen = -1
        while context.is_active():
            snapshot = self._runner.snapshot(workflow.owner, workflow.name, workflow.run_id)
            task = next(t for t in snapshot.tasks if t.key == key)
            if task.done or (task.state == TaskState.QUEUED and task.attempt > 0):
                return
            seen = self._runner.wait_for_change(seen, WATCH_INTERVAL)

    # --- interactive access -------------------------------------------------------------

    def Exec(self, request_iterator: Iterator[pb.ExecRequest], context: grpc.ServicerContext
             ) -> Iterator[substrate_pb2.ExecOutput]:
        """Run a process in a running task's container, through its first node's agent."""
        first = next(request_iterator, None)
        if first is None or first.input.WhichOneof("input") != "start":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be start")
        task = self._live_task(context, WORKFLOW_EXEC, first.owner, first.workflow, first.task)
        yield from relay_exec(task, first.input, (r.input for r in request_iterator), context)

    def PortForward(self, request_iterator: Iterator[pb.PortForwardRequest | bytes],
                    context: grpc.ServicerContext) -> Iterator[bytes]:
        """Relay a TCP connection to a port of a running task, through its node's agent.

        Frames stay serialized both ways (see :func:`add_orchestrator_service`).
        """
        first = next(request_iterator, None)
        if not isinstance(first, pb.PortForwardRequest) or (
                first.frame.WhichOneof("frame") != "open"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "the first request must name the task and open a connection")
        task = self._live_task(context, WORKFLOW_PORT_FORWARD, first.owner, first.workflow,
                               first.task)
        rest = (r if isinstance(r, bytes) else r.frame.SerializeToString()
                for r in request_iterator)
        yield from relay_port_forward(task, first.frame, rest, context)

    def OpenPortForward(self, request: pb.PortForwardRequest, context: grpc.ServicerContext
                        ) -> pb.DirectTicket:
        """Decide as PortForward does, then answer a single-use ticket for one connection
        straight to the task's agent (an empty one: relay through PortForward instead)."""
        if request.frame.WhichOneof("frame") != "open":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request must open a connection")
        port = request.frame.open.port
        if not 0 < port <= MAX_TCP_PORT:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"port {port} is not a TCP port (1-{MAX_TCP_PORT})")
        task = self._live_task(context, WORKFLOW_PORT_FORWARD, request.owner, request.workflow,
                               request.task)
        return direct_ticket(task, port, context)

    def OpenExec(self, request: pb.ExecRequest, context: grpc.ServicerContext
                 ) -> pb.DirectTicket:
        """Decide as Exec does, then answer a single-use ticket that runs exactly this
        request's process, straight from the task's agent (an empty one: use Exec)."""
        if request.input.WhichOneof("input") != "start":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request must start a process")
        task = self._live_task(context, WORKFLOW_EXEC, request.owner, request.workflow,
                               request.task)
        return direct_ticket(task, 0, context, request.input.start)

    def LaunchExec(self, request_iterator: Iterator[pb.LaunchExecRequest],
                   context: grpc.ServicerContext) -> Iterator[substrate_pb2.ExecOutput]:
        """Start an MPI launcher's daemon in a container of its own job (no SSH).

        Open to any caller (no bearer token): the job's launch token in the first
        message is the credential, and reaches only that attempt's containers. The
        command runs as ssh would run it, through the container's /bin/sh.
        """
        first = next(request_iterator, None)
        if first is None or first.input.WhichOneof("input") != "start":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be start")
        try:
            target = self._runner.launch_target(first.token)
            rank = target.rank_of(first.host)
            agent = self._nodes.client(target.nodes[rank])
        except LaunchTokenError as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except UnknownHostError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        start = substrate_pb2.ExecInput()
        start.start.args[:] = remote_command(first.input.start.args)
        yield from relay_exec(LiveTask(agent, target.containers[rank]), start,
                              (r.input for r in request_iterator), context)

    def _live_task(self, context: grpc.ServicerContext, action: str, owner: str,
                   workflow: str, task: str) -> LiveTask:
        """The running task ``task`` of ``owner``'s ``workflow`` (the caller's when empty),
        once the caller may do ``action`` on it."""
        try:
            identity, target, snapshot = self.workflow_access(context, action, owner, workflow)
            _, key = _task_key(snapshot, target, task)
            plan = self._runner.live_attempt(target.owner, target.name, key, target.run_id)
            if plan is None:
                state = next(t.state for t in snapshot.tasks if t.key == key)
                raise TaskNotRunningError(
                    f"task {key} of workflow {target.shown} is not running ({state})")
            return LiveTask(self._nodes.client(plan.nodes[0]), plan.containers[0],
                            identity.user)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)

    def _workflow_message(self, snapshot: WorkflowSnapshot, kept: TaskMessages | None = None
                          ) -> pb.Workflow:
        """A run as the API shows it, with its services' endpoints and their URLs
        (``kept``: a watcher's task messages, see :func:`workflow_message`)."""
        message = workflow_message(snapshot, kept)
        message.endpoints.extend(endpoint_messages(snapshot.record, self.gateway))
        return message

    # --- secrets ------------------------------------------------------------------------

    def CreateSecret(self, request: pb.CreateSecretRequest, context: grpc.ServicerContext
                     ) -> pb.Secret:
        """Store one of the caller's secrets, or of an account (sealed); its value is never
        sent back."""
        try:
            identity = self._authz.identify(context)
            owner = self._secret_owner(identity, "secret:create", request.account,
                                       request.name)
            record = self._secrets.create(owner, request.name, request.value,
                                          request.replace)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        return secret_message(record)

    def ListSecrets(self, request: pb.ListSecretsRequest, context: grpc.ServicerContext
                    ) -> pb.SecretList:
        """The caller's secrets (or an account's) they may read, without values."""
        try:
            identity = self._authz.identify(context)
            owner = self._secret_owner(identity, "", request.account, "")
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        records = self._secrets.list(owner)
        if request.account:
            resources = [account_secret_resource(request.account, r.name) for r in records]
            listing = account_secret_resource(request.account, "*")
        else:
            resources = [secret_resource(r.owner, r.name) for r in records]
            listing = secret_resource(identity.user, "*")
        shown = self._authz.permitted(identity, "secret:read", resources, listing)
        return pb.SecretList(secrets=[
            secret_message(r) for r, show in zip(records, shown, strict=True) if show])

    def DeleteSecret(self, request: pb.SecretRef, context: grpc.ServicerContext
                     ) -> pb.DeleteSecretReply:
        """Delete one of the caller's secrets, or of an account."""
        try:
            identity = self._authz.identify(context)
            owner = self._secret_owner(identity, "secret:delete", request.account,
                                       request.name)
            self._secrets.delete(owner, request.name)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        return pb.DeleteSecretReply()


    def _secret_owner(self, identity: Identity, action: str, account: str, name: str) -> str:
        """Whose secrets a request is about: ``account``'s (the caller must be a member
        now), else the caller's own; ``action`` on secret ``name`` is checked (none:
        the caller only lists)."""
        if account and account not in identity.groups:
            raise AccountError(f"{identity.user} is not a member of account {account!r}")
        if action:
            self._authz.check(identity, action,
                              account_secret_resource(account, name) if account
                              else secret_resource(identity.user, name))
        return account_owner(account) if account else identity.user

    # --- application catalogs ----------------------------------------------------------

    def ListApplications(self, request: pb.ListApplicationsRequest,
                         context: grpc.ServicerContext) -> pb.ApplicationList:
        """The applications of the cluster's catalogs, to any signed-in user."""
        try:
            self._authz.identify(context)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        return self._catalogs.applications()


def watch_pause(update_cpu: float) -> float:
    """Seconds a watcher waits after an update that took ``update_cpu`` seconds of CPU
    (snapshot, message, serialization): :data:`WATCH_MIN_INTERVAL`, or :data:`WATCH_PACE`
    times that for a workflow so large its updates are costly (at most
    :data:`WATCH_MAX_PAUSE`), so that each watcher costs at most about a tenth of a core."""
    return max(WATCH_MIN_INTERVAL, min(WATCH_PACE * update_cpu, WATCH_MAX_PAUSE))


def _task_key(snapshot: WorkflowSnapshot, workflow: OwnedWorkflow, task: str
              ) -> tuple[str, str]:
    """The workflow run's id and the key of ``task`` (a task key, or a job with one task)."""
    return snapshot.record.id, task_key(((t.key, t.job) for t in snapshot.tasks), task,
                                        workflow.shown)


def _read_from(path: Path, offset: int) -> Iterator[pb.LogChunk]:
    if not path.exists():
        return
    with open(path, "rb") as handle:
        handle.seek(offset)
        while chunk := handle.read(LOG_CHUNK):
            yield pb.LogChunk(data=chunk)

