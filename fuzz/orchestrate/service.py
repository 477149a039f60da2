"""The orchestrator's gRPC service: the API `fuzz workflow`, `fuzz secret` and agents call."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from fuzz.api import orchestrator_pb2 as pb
from fuzz.api import substrate_pb2
from fuzz.errors import FuzzError
from fuzz.grpcserve import StatusTable, abort_with
from fuzz.orchestrate.access import (
    WORKFLOW_EXEC,
    WORKFLOW_PORT_FORWARD,
    Authorizer,
    workflow_resource,
)
from fuzz.orchestrate.messages import (
    node_message,
    secret_message,
    workflow_message,
    workflow_summary,
)
from fuzz.orchestrate.nodes import JoinRefusedError, NodeDirectory, NodeUse
from fuzz.orchestrate.relay import LiveTask, relay_exec, relay_port_forward
from fuzz.orchestrate.runner import Runner, WorkflowExistsError, WorkflowNotFoundError
from fuzz.orchestrate.secretstore import SecretError, SecretStore
from fuzz.orchestrate.workflow import WorkflowNameError, log_paths
from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.spec.problems import SpecError
from fuzz.substrate.client import AgentError

SERVICE_NAME = "fuzz.orchestrator.v1.Orchestrator"
REGISTER_METHOD = f"/{SERVICE_NAME}/RegisterNode"
WATCH_INTERVAL = 5.0
WATCH_MIN_INTERVAL = 0.2  # a watcher sees at most five updates a second
LOG_CHUNK = 64 * 1024
DEFAULT_OWNER = "default"

_STATUS: StatusTable = (
    (JoinRefusedError, grpc.StatusCode.UNAUTHENTICATED),
    (WorkflowNotFoundError, grpc.StatusCode.NOT_FOUND),
    (WorkflowExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (WorkflowNameError, grpc.StatusCode.INVALID_ARGUMENT),
    (SpecError, grpc.StatusCode.INVALID_ARGUMENT),
    (SecretError, grpc.StatusCode.FAILED_PRECONDITION),
    (FuzzError, grpc.StatusCode.FAILED_PRECONDITION),
)


class TaskNotFoundError(FuzzError):
    """No task of that name in the workflow."""


class TaskNotRunningError(FuzzError):
    """The task is not running now (so there is nothing to exec in or forward to)."""


class OrchestratorService:
    """Answers the API from the runner, the node directory and the secret store.

    Registered with ``add_OrchestratorServicer_to_server``, which looks its methods
    up by name (the generated base class adds nothing but UNIMPLEMENTED stubs).
    """

    def __init__(self, runner: Runner, nodes: NodeDirectory, secrets: SecretStore,
                 advertise: str, authorizer: Authorizer) -> None:
        """``advertise`` is the address agents register with (handed out with join tokens);
        ``authorizer`` decides who may reach into running jobs."""
        self._runner = runner
        self._nodes = nodes
        self._secrets = secrets
        self.advertise = advertise
        self._authorizer = authorizer

    # --- nodes -------------------------------------------------------------------------

    def RegisterNode(self, request: pb.RegisterNodeRequest, context: grpc.ServicerContext
                     ) -> pb.RegisterNodeReply:
        """An agent joins (or beats its heart)."""
        try:
            first = self._nodes.register(request.name, request.endpoint, request.agent_token,
                                         request.join_token, dict(request.labels))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        return pb.RegisterNodeReply(first=first)

    def IssueJoinToken(self, request: pb.IssueJoinTokenRequest, context: grpc.ServicerContext
                       ) -> pb.JoinToken:
        """A join token for a node about to be created."""
        if not request.node:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a join token needs a node name")
        return pb.JoinToken(token=self._nodes.issue_join_token(request.node),
                            orchestrator=self.advertise)

    def ListNodes(self, request: pb.ListNodesRequest, context: grpc.ServicerContext
                  ) -> pb.NodeList:
        """Every registered node and what runs there."""
        used = self._runner.used_resources()
        return pb.NodeList(nodes=[
            node_message(record, used.get(record.name, NodeUse()), self._nodes)
            for record in self._nodes.records()
        ])

    # --- workflows ---------------------------------------------------------------------

    def StartWorkflow(self, request: pb.StartWorkflowRequest, context: grpc.ServicerContext
                      ) -> pb.Workflow:
        """Validate a Fuzzfile against the cluster's nodes and start a run."""
        try:
            loaded = parse_fuzzfile(request.fuzzfile, request.file_name or "Fuzzfile",
                                    capacities=self._nodes.capacities(),
                                    capacities_are_nodes=True)
            self._runner.submit(request.name, DEFAULT_OWNER, loaded)
            return workflow_message(self._runner.snapshot(request.name))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)

    def GetWorkflow(self, request: pb.WorkflowRef, context: grpc.ServicerContext
                    ) -> pb.Workflow:
        """The latest run of a workflow."""
        try:
            return workflow_message(self._runner.snapshot(request.name))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)

    def WatchWorkflow(self, request: pb.WorkflowRef, context: grpc.ServicerContext
                      ) -> Iterator[pb.Workflow]:
        """The workflow now and after every change, until it has finished."""
        seen = -1
        while context.is_active():
            try:
                snapshot = self._runner.snapshot(request.name)
            except FuzzError as exc:
                abort_with(context, exc, _STATUS)
            yield workflow_message(snapshot)
            if snapshot.record.finished_state:
                return
            time.sleep(WATCH_MIN_INTERVAL)
            seen = self._runner.wait_for_change(seen, WATCH_INTERVAL)

    def ListWorkflows(self, request: pb.ListWorkflowsRequest, context: grpc.ServicerContext
                      ) -> pb.WorkflowList:
        """The latest run of every workflow, newest first."""
        return pb.WorkflowList(workflows=[workflow_summary(r) for r in self._runner.workflows()])

    def CancelWorkflow(self, request: pb.WorkflowRef, context: grpc.ServicerContext
                       ) -> pb.Workflow:
        """Stop a workflow: nothing new starts, running tasks are stopped."""
        try:
            self._runner.cancel(request.name)
            return workflow_message(self._runner.snapshot(request.name))
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)

    def StreamJobLog(self, request: pb.JobLogRequest, context: grpc.ServicerContext
                     ) -> Iterator[pb.LogChunk]:
        """A task's output: from its node while it runs, from the kept copy after."""
        stream = request.stream or "stdout"
        if stream not in ("stdout", "stderr"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream must be stdout or stderr")
        try:
            workflow_id, key = self._task_key(request.workflow, request.task)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        sent = 0
        plan = self._runner.live_attempt(request.workflow, key)
        if plan is not None:
            client = self._nodes.client(plan.nodes[0])
            with contextlib.suppress(AgentError):  # it ended meanwhile: the copy has the rest
                for data in client.stream_logs(plan.containers[0], stream,
                                               follow=request.follow):
                    sent += len(data)
                    yield pb.LogChunk(data=data)
                if not request.follow:
                    return
            self._wait_until_final(request.workflow, key, context)
        elif request.follow:
            self._wait_until_final(request.workflow, key, context)
        stdout, stderr = log_paths(self._runner.log_dir(), workflow_id, key)
        yield from _read_from(stdout if stream == "stdout" else stderr, sent)

    def _task_key(self, workflow: str, task: str) -> tuple[str, str]:
        snapshot = self._runner.snapshot(workflow)
        keys = [t.key for t in snapshot.tasks]
        if task in keys:
            return snapshot.record.id, task
        of_job = [t.key for t in snapshot.tasks if t.job == task]
        if len(of_job) == 1:
            return snapshot.record.id, of_job[0]
        if of_job:
            raise TaskNotFoundError(
                f"job {task!r} has {len(of_job)} tasks: name one, e.g. {of_job[0]!r}")
        raise TaskNotFoundError(f"workflow {workflow!r} has no job or task {task!r}")

    def _wait_until_final(self, workflow: str, key: str, context: grpc.ServicerContext) -> None:
        seen = -1
        while context.is_active():
            snapshot = self._runner.snapshot(workflow)
            task = next(t for t in snapshot.tasks if t.key == key)
            if task.done or (task.state == "QUEUED" and task.attempt > 0):
                return
            seen = self._runner.wait_for_change(seen, WATCH_INTERVAL)

    # --- interactive access -------------------------------------------------------------

    def Exec(self, request_iterator: Iterator[pb.ExecRequest], context: grpc.ServicerContext
             ) -> Iterator[substrate_pb2.ExecOutput]:
        """Run a process in a running task's container, through its first node's agent."""
        first = next(request_iterator, None)
        if first is None or first.input.WhichOneof("input") != "start":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be start")
        task = self._live_task(context, WORKFLOW_EXEC, first.workflow, first.task)
        yield from relay_exec(task, first.input, (r.input for r in request_iterator), context)

    def PortForward(self, request_iterator: Iterator[pb.PortForwardRequest],
                    context: grpc.ServicerContext) -> Iterator[substrate_pb2.PortForwardFrame]:
        """Relay a TCP connection to a port of a running task, through its node's agent."""
        first = next(request_iterator, None)
        if first is None or first.frame.WhichOneof("frame") != "open":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first frame must be open")
        task = self._live_task(context, WORKFLOW_PORT_FORWARD, first.workflow, first.task)
        yield from relay_port_forward(task, first.frame, (r.frame for r in request_iterator),
                                      context)

    def _live_task(self, context: grpc.ServicerContext, action: str, workflow: str,
                   task: str) -> LiveTask:
        """The running task ``task`` of ``workflow``, once the caller may do ``action`` on it."""
        try:
            snapshot = self._runner.snapshot(workflow)
            self._authorizer.authorize(context, action,
                                       workflow_resource(snapshot.record.owner, workflow))
            _, key = self._task_key(workflow, task)
            plan = self._runner.live_attempt(workflow, key)
            if plan is None:
                state = next(t.state for t in snapshot.tasks if t.key == key)
                raise TaskNotRunningError(
                    f"task {key} of workflow {workflow} is not running ({state})")
            return LiveTask(self._nodes.client(plan.nodes[0]), plan.containers[0])
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)

    # --- secrets ------------------------------------------------------------------------

    def CreateSecret(self, request: pb.CreateSecretRequest, context: grpc.ServicerContext
                     ) -> pb.Secret:
        """Store a secret (sealed); its value is never sent back."""
        try:
            record = self._secrets.create(DEFAULT_OWNER, request.name, request.value,
                                          request.replace)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        return secret_message(record)

    def ListSecrets(self, request: pb.ListSecretsRequest, context: grpc.ServicerContext
                    ) -> pb.SecretList:
        """The caller's secrets, without values."""
        return pb.SecretList(secrets=[secret_message(r) for r in
                                      self._secrets.list(DEFAULT_OWNER)])

    def DeleteSecret(self, request: pb.SecretRef, context: grpc.ServicerContext
                     ) -> pb.DeleteSecretReply:
        """Delete a secret."""
        try:
            self._secrets.delete(DEFAULT_OWNER, request.name)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        return pb.DeleteSecretReply()


def _read_from(path: Path, offset: int) -> Iterator[pb.LogChunk]:
    if not path.exists():
        return
    with open(path, "rb") as handle:
        handle.seek(offset)
        while chunk := handle.read(LOG_CHUNK):
            yield pb.LogChunk(data=chunk)
