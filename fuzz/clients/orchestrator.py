"""A client for the orchestrator's API (`fuzz workflow`, `fuzz secret`, agents joining).

Failures become :class:`OrchestratorError` subclasses with one-line messages; a
Fuzzfile the server rejects becomes an :class:`InvalidRequestError` whose
message keeps one line per problem.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import grpc

from fuzz.api import orchestrator_pb2 as pb
from fuzz.api import orchestrator_pb2_grpc, substrate_pb2
from fuzz.crypto.proof import RegistrationProof
from fuzz.errors import FuzzError
from fuzz.plugin.provider import JoinInfo
from fuzz.rpc.client import (
    DEFAULT_TIMEOUT,
    ClientTls,
    DuplexCall,
    GrpcClient,
    connection_refused,
    dns_failure,
    not_grpc,
    not_tls,
    standby_refusal,
    status_of,
    tls_failure,
)
from fuzz.rpc.tunnel import Frame, read_frame, serialized
from fuzz.spec.workflowref import split_workflow_ref

START_TIMEOUT = 60.0
PORT_FORWARD_METHOD = "/fuzz.orchestrator.v1.Orchestrator/PortForward"


class OrchestratorError(FuzzError):
    """A call to the orchestrator failed."""


class OrchestratorUnreachableError(OrchestratorError):
    """Nothing answers at the orchestrator's address."""


class InvalidRequestError(OrchestratorError):
    """The orchestrator rejected the request (a Fuzzfile's problems, one per line)."""


class NotFoundError(OrchestratorError):
    """No such workflow, task or secret."""


class AccessDeniedError(OrchestratorError):
    """The caller's credentials were refused, or their policies do not allow the call."""


class OrchestratorClient(GrpcClient):
    """Talk to the orchestrator at ``endpoint`` with ``token``."""

    def __init__(self, endpoint: str, token: str, timeout: float = DEFAULT_TIMEOUT,
                 tls: ClientTls | None = None) -> None:
        """Open a channel (TLS as ``tls`` says, plain text without); nothing is sent yet."""
        super().__init__(endpoint, token, timeout, tls)
        self._stub = orchestrator_pb2_grpc.OrchestratorStub(self._channel)
        self._port_forward = self._channel.stream_stream(
            PORT_FORWARD_METHOD, request_serializer=serialized, response_deserializer=read_frame)

    def _error(self, exc: grpc.RpcError) -> OrchestratorError:
        """What a failed call means, in one line (a Fuzzfile's problems keep theirs)."""
        code, details = status_of(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            return self._unreachable(details)
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return OrchestratorUnreachableError(
                f"the server at {self.endpoint} does not know this call ({details}): it is "
                "not a fuzz orchestrator, or an older one")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return OrchestratorUnreachableError(
                f"the orchestrator at {self.endpoint} did not answer in time")
        if code == grpc.StatusCode.INVALID_ARGUMENT and isinstance(exc, grpc.Call):
            return InvalidRequestError(exc.details() or details)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
            return InvalidRequestError(
                f"the orchestrator takes no request this large ({details}): is the Fuzzfile "
                "over orchestrator.limits.fuzzfile_bytes?")
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFoundError(details)
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return AccessDeniedError(f"the orchestrator refused the credentials: {details}")
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return AccessDeniedError(f"permission denied: {details}")
        return OrchestratorError(details or (code.name if code else "the call failed"))

    def _unreachable(self, details: str) -> OrchestratorUnreachableError:
        """Why no call got through, told apart: a host name DNS cannot resolve, nothing
        listening, something there that is not a fuzz orchestrator, TLS that failed."""
        if standby_refusal(details):
            return OrchestratorUnreachableError(f"{self.endpoint}: {details}")
        resolver = dns_failure(details)
        if resolver is not None:
            host = self.endpoint.rsplit(":", 1)[0]
            return OrchestratorUnreachableError(f"cannot resolve {host} (DNS): {resolver}")
        if connection_refused(details):
            return OrchestratorUnreachableError(
                f"nothing listens at {self.endpoint}: is `fuzz server` running there?")
        if not_grpc(details):
            return OrchestratorUnreachableError(
                f"something answers at {self.endpoint}, but not a fuzz orchestrator: it "
                "does not speak gRPC (HTTP/2)")
        if not_tls(details):
            return OrchestratorUnreachableError(
                f"something answers at {self.endpoint}, but not a fuzz orchestrator over "
                "TLS: the TLS handshake failed (a plain-text server? then --insecure)")
        failure = tls_failure(details)
        if failure is not None:
            return OrchestratorUnreachableError(
                f"the orchestrator at {self.endpoint} failed TLS verification: {failure} "
                "(is the CA file the cluster's ca.pem?)")
        hint = " (this client speaks plain text: a TLS server closes such connections)" \
            if self.plain_text else ""
        return OrchestratorUnreachableError(
            f"cannot reach the orchestrator at {self.endpoint}: is `fuzz server` "
            f"running?{hint}")

    # --- nodes -------------------------------------------------------------------------

    def register_node(self, name: str, endpoint: str, agent_token: str,
                      labels: Mapping[str, str], *, join_token: str = "",
                      proof: RegistrationProof | None = None) -> bool:
        """Register (or heartbeat) a node, proven by ``proof`` (TLS) or ``join_token``.

        True the first time.
        """
        request = pb.RegisterNodeRequest(name=name, endpoint=endpoint, agent_token=agent_token,
                                         join_token=join_token, labels=dict(labels))
        if proof is not None:
            request.certificate = proof.certificate
            request.signature = proof.signature
            request.signed_at = proof.signed_at
        return bool(self._call(self._stub.RegisterNode, request, None).first)

    def enroll_node(self, name: str, join_token: str, csr: bytes) -> bytes:
        """Spend ``join_token`` for node ``name``'s certificate (PEM) from the CSR."""
        reply = self._call(self._stub.EnrollNode, pb.EnrollNodeRequest(
            name=name, join_token=join_token, csr=csr), None)
        return bytes(reply.certificate)

    def issue_join_token(self, node: str) -> JoinInfo:
        """How a node about to be created joins: a join token, where, and the CA to trust."""
        reply = self._call(self._stub.IssueJoinToken, pb.IssueJoinTokenRequest(node=node), None)
        return JoinInfo(token=str(reply.token), orchestrator=str(reply.orchestrator),
                        ca_pem=str(reply.ca) or None)

    def list_nodes(self) -> list[pb.Node]:
        """The registered nodes."""
        return list(self._call(self._stub.ListNodes, pb.ListNodesRequest(), None).nodes)

    def pool_demand(self, timeout: float | None = None) -> pb.PoolDemandReply:
        """The orchestrator's elastic pools: its membership of each, and their trouble."""
        reply: pb.PoolDemandReply = self._call(self._stub.PoolDemand, pb.PoolDemandRequest(),
                                               timeout)
        return reply

    def member_status(self, timeout: float | None = None) -> pb.MemberStatusReply:
        """What a federation routes by: the elastic pools' offerings with prices, the
        tasks waiting for room, the ingress sources cached."""
        reply: pb.MemberStatusReply = self._call(self._stub.MemberStatus,
                                                 pb.MemberStatusRequest(), timeout)
        return reply

    def cordon_nodes(self, nodes: list[str], action: str, reason: str = ""
                     ) -> list[pb.NodeWork]:
        """Cordon, drain, uncordon, evict (with ``reason``) or forget ``nodes``; what
        runs on them now."""
        reply = self._call(self._stub.CordonNodes, pb.CordonNodesRequest(
            nodes=nodes, action=action, reason=reason), None)
        return list(reply.nodes)

    def node_work(self, nodes: list[str], timeout: float | None = None) -> list[pb.NodeWork]:
        """The tasks in flight on ``nodes`` (every node when empty)."""
        reply = self._call(self._stub.NodeWork, pb.NodeWorkRequest(nodes=nodes), timeout)
        return list(reply.nodes)

    # --- workflows ---------------------------------------------------------------------

    # A workflow is named ``NAME`` (the caller's own) or ``OWNER/NAME`` (another owner's;
    # see fuzz.spec.workflowref): every method below takes either.

    def start_workflow(self, name: str, fuzzfile: str, file_name: str, account: str = ""
                       ) -> pb.Workflow:
        """Start a run of ``name`` from the Fuzzfile text, in ``account`` if given."""
        ref = split_workflow_ref(name)
        reply: pb.Workflow = self._call(self._stub.StartWorkflow, pb.StartWorkflowRequest(
            name=ref.name, owner=ref.owner, fuzzfile=fuzzfile, file_name=file_name,
            account=account),
            START_TIMEOUT)
        return reply

    def get_workflow(self, name: str, with_fuzzfile: bool = False) -> pb.Workflow:
        """The latest run of ``name`` (with its Fuzzfile's text if ``with_fuzzfile``)."""
        ref = _workflow_ref(name)
        ref.with_fuzzfile = with_fuzzfile
        reply: pb.Workflow = self._call(self._stub.GetWorkflow, ref, None)
        return reply

    def watch_workflow(self, name: str) -> Iterator[pb.Workflow]:
        """The workflow now and after every change, until it has finished."""
        yield from self._stream(self._stub.WatchWorkflow, _workflow_ref(name), None)

    def list_workflows(self) -> list[pb.Workflow]:
        """The latest run of every workflow."""
        reply = self._call(self._stub.ListWorkflows, pb.ListWorkflowsRequest(), None)
        return list(reply.workflows)

    def cancel_workflow(self, name: str) -> pb.Workflow:
        """Cancel the latest run of ``name``."""
        reply: pb.Workflow = self._call(self._stub.CancelWorkflow, _workflow_ref(name), None)
        return reply

    def stream_log(self, workflow: str, task: str, stream: str = "stdout",
                   follow: bool = False, node: int = 0) -> Iterator[bytes]:
        """A task's output (a multinode task's rank ``node``); with ``follow``, until it has
        finished."""
        ref = split_workflow_ref(workflow)
        request = pb.JobLogRequest(workflow=ref.name, owner=ref.owner, task=task, stream=stream,
                                   follow=follow, node=node)
        for chunk in self._stream(self._stub.StreamJobLog, request, None):
            yield chunk.data

    # --- interactive access ------------------------------------------------------------

    def exec(self, requests: Iterator[pb.ExecRequest]) -> DuplexCall[substrate_pb2.ExecOutput]:
        """Run a process in a running task: the first request names it and carries ``start``;
        the end of ``requests`` closes the process's stdin."""
        call: DuplexCall[substrate_pb2.ExecOutput] = self._duplex(self._stub.Exec, requests)
        return call

    def launch_exec(self, requests: Iterator[pb.LaunchExecRequest]
                    ) -> DuplexCall[substrate_pb2.ExecOutput]:
        """Start an MPI launcher's daemon in a container of its job: the first request
        carries the job's launch token, the host and ``start``; the end of ``requests``
        closes the process's stdin."""
        call: DuplexCall[substrate_pb2.ExecOutput] = self._duplex(self._stub.LaunchExec,
                                                                  requests)
        return call

    def port_forward(self, requests: Iterator[pb.PortForwardRequest | bytes]
                     ) -> DuplexCall[Frame]:
        """Relay one TCP connection to a port of a running task: the first request names it
        and carries ``open``; the end of ``requests`` half-closes the connection.

        Requests may be serialized already (:func:`fuzz.rpc.tunnel.data_request`); data
        frames come back as views of what arrived (:func:`fuzz.rpc.tunnel.read_frame`).
        """
        call: DuplexCall[Frame] = self._duplex(self._port_forward, requests)
        return call

    def open_port_forward(self, request: pb.PortForwardRequest) -> pb.DirectTicket:
        """A single-use ticket for one connection straight to the task's agent, if the
        caller may forward to the port (``port`` 0 in the reply: use :meth:`port_forward`)."""
        reply: pb.DirectTicket = self._call(self._stub.OpenPortForward, request, None)
        return reply

    def open_exec(self, request: pb.ExecRequest) -> pb.DirectTicket:
        """A single-use ticket that runs ``request``'s process (its ``start``) straight from
        the task's agent, if the caller may exec there (``port`` 0 in the reply: use
        :meth:`exec`)."""
        reply: pb.DirectTicket = self._call(self._stub.OpenExec, request, None)
        return reply

    # --- secrets ---------------------------------------------------------------------------

    def create_secret(self, name: str, value: bytes, replace: bool = False, account: str = ""
                      ) -> pb.Secret:
        """Store a secret of the caller's (of ``account``, if given)."""
        reply: pb.Secret = self._call(self._stub.CreateSecret, pb.CreateSecretRequest(
            name=name, value=value, replace=replace, account=account), None)
        return reply

    def list_secrets(self, account: str = "") -> list[pb.Secret]:
        """The caller's secrets (``account``'s, if given): names and sizes only."""
        return list(self._call(self._stub.ListSecrets, pb.ListSecretsRequest(account=account),
                               None).secrets)

    def delete_secret(self, name: str, account: str = "") -> None:
        """Delete a secret of the caller's (of ``account``, if given)."""
        self._call(self._stub.DeleteSecret, pb.SecretRef(name=name, account=account), None)

    def list_applications(self) -> pb.ApplicationList:
        """The applications of the catalogs the cluster's admin configured."""
        reply: pb.ApplicationList = self._call(self._stub.ListApplications,
                                               pb.ListApplicationsRequest(), None)
        return reply

    def list_cache(self) -> pb.CacheList:
        """The cluster's ingress cache: its entries (sources, versions, bytes) and quota."""
        reply: pb.CacheList = self._call(self._stub.ListCache, pb.ListCacheRequest(), None)
        return reply

    def prune_cache(self) -> pb.PruneCacheReply:
        """Remove every ingress cache entry not in use; what went and what is left."""
        reply: pb.PruneCacheReply = self._call(self._stub.PruneCache, pb.PruneCacheRequest(),
                                               None)
        return reply


def _workflow_ref(name: str) -> pb.WorkflowRef:
    """``NAME`` or ``OWNER/NAME`` as the API's reference."""
    ref = split_workflow_ref(name)
    return pb.WorkflowRef(name=ref.name, owner=ref.owner)
