"""The orchestrator over TLS with users and policies: a real server, real gRPC, a real agent.

One orchestrator (in a thread, its data dir made by ``init_data_dir``) serves TLS
with a certificate of its cluster CA; one agent process joins it: enrolls with
its join token for a certificate, then serves mutual TLS. Users log in with codes
an admin issued, and what each may see and do follows their roles.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from fuzz.api import orchestrator_pb2 as pb
from fuzz.api import substrate_pb2
from fuzz.clients.agent import AgentClient, AgentError, AgentUnreachableError
from fuzz.clients.iam import IamClient
from fuzz.clients.orchestrator import (
    AccessDeniedError,
    NotFoundError,
    OrchestratorClient,
    OrchestratorError,
    OrchestratorUnreachableError,
)
from fuzz.crypto import pki
from fuzz.crypto.proof import registration_payload
from fuzz.fsutil import read_json, write_private_file
from fuzz.orchestrate.connect import CA_FILE, admin_token_path
from fuzz.orchestrate.datadir import init_data_dir
from fuzz.orchestrate.iam.policy import statement
from fuzz.orchestrate.server import ServerSettings, serve
from fuzz.rpc.client import ClientTls
from fuzz.substrate.enroll import TLS_DIR, NodeIdentity
from fuzz.testing.oci import free_port

NODE = "pool.cpu.node[0]"
AGENT_TOKEN = "agent-token-for-the-test"
FUZZFILE = """\
version: v1
jobs:
  hello:
    image: {uri: "docker://127.0.0.1:9/nothing:1"}
    command: [/bin/true]
    resource: {cpu: {cores: 1}, memory: {size: 16MiB}}
"""


@dataclass
class Cluster:
    """The running orchestrator, its CA, the joined agent and the users' tokens."""

    endpoint: str
    ca: bytes
    admin_token: str
    agent_dir: Path
    agent_endpoint: str
    join_token: str
    tokens: dict[str, str]

    def client(self, user: str) -> OrchestratorClient:
        return OrchestratorClient(self.endpoint, self.tokens[user], tls=ClientTls(self.ca))

    def iam(self, token: str) -> IamClient:
        return IamClient(self.endpoint, token, tls=ClientTls(self.ca))


def _wait(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("tls")
    data = root / "server"
    init_data_dir(data, "tls-test")
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(ServerSettings(
        listen=f"127.0.0.1:{free_port()}", data_dir=data, cluster="tls-test"), stop))
    thread.start()
    agent: subprocess.Popen[bytes] | None = None
    try:
        _wait("the server", lambda: read_json(data / "server.json") is not None)
        endpoint = str((read_json(data / "server.json") or {})["endpoint"])
        ca = (data / CA_FILE).read_bytes()
        admin = admin_token_path(data).read_text().strip()
        with IamClient(endpoint, admin, tls=ClientTls(ca)) as iam:
            join_token = iam.issue_join_token(NODE).token
            tokens = {"admin": admin}
            for user, role in (("alice", "user"), ("bob", "submit-only")):
                iam.put_user(user, [role], [])
                tokens[user] = iam.login(iam.issue_login_code(user).code).token
        agent_dir = root / "agent"
        agent_dir.mkdir()
        write_private_file(root / "token", AGENT_TOKEN.encode())
        write_private_file(root / "join-token", join_token.encode())
        (root / "ca.pem").write_bytes(ca)
        with open(root / "agent.log", "wb") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "fuzz.substrate", "serve", "--listen", "127.0.0.1:0",
                 "--state-dir", str(agent_dir), "--token-file", str(root / "token"),
                 "--join", endpoint, "--join-token-file", str(root / "join-token"),
                 "--join-ca-file", str(root / "ca.pem"), "--node-name", NODE],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        running = Cluster(endpoint, ca, admin, agent_dir, "", join_token, tokens)
        with running.client("admin") as client:
            _wait("the node to join", lambda: [n.state for n in client.list_nodes()] == ["READY"])
        running.agent_endpoint = str((read_json(agent_dir / "agent.json") or {})["endpoint"])
        yield running
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(10)
        stop.set()
        thread.join(30)


def test_calls_without_an_accepted_token_are_refused(cluster: Cluster) -> None:
    for token, reason in (("", "must be 'Bearer <token>'"), ("fzt_forged", "invalid bearer")):
        with OrchestratorClient(cluster.endpoint, token, tls=ClientTls(cluster.ca)) as client, \
                pytest.raises(AccessDeniedError, match=reason):
            client.list_workflows()
    with cluster.iam(cluster.admin_token) as admin:
        code = admin.issue_login_code("alice").code
    with cluster.iam("") as anonymous:
        short = anonymous.login(code, ttl_seconds=0.5).token
    with cluster.iam(short) as client:
        assert client.whoami().user == "alice"
        time.sleep(0.6)
        with pytest.raises(AccessDeniedError, match="the token expired at"):
            client.list_workflows()
    with cluster.iam(cluster.admin_token) as admin:
        code = admin.issue_login_code("alice").code
    with cluster.iam("") as anonymous:
        session = anonymous.login(code).token
    with cluster.iam(session) as client:
        client.logout()
        with pytest.raises(AccessDeniedError, match="revoked"):
            client.whoami()


def test_plain_text_and_servers_of_another_ca_are_refused(cluster: Cluster) -> None:
    with OrchestratorClient(cluster.endpoint, cluster.admin_token, timeout=5) as plain, \
            pytest.raises(OrchestratorUnreachableError, match="speaks plain text"):
        plain.list_nodes()
    other = pki.CertificateAuthority.create("other")
    with OrchestratorClient(cluster.endpoint, cluster.admin_token, timeout=5,
                            tls=ClientTls(other.cert_pem)) as fooled, \
            pytest.raises(OrchestratorUnreachableError, match="failed TLS verification"):
        fooled.list_nodes()


def test_the_agent_serves_mutual_tls_with_the_certificate_it_enrolled_for(
        cluster: Cluster) -> None:
    identity = NodeIdentity(cluster.agent_dir / TLS_DIR)
    cert = pki.load_cert(identity.cert_path.read_bytes())
    assert pki.common_name(cert) == NODE
    assert oct(identity.key_path.stat().st_mode & 0o777) == "0o600"
    with AgentClient(cluster.agent_endpoint, AGENT_TOKEN,
                     tls=_orchestrator_tls(cluster, NODE)) as ok:
        assert ok.inventory().cores > 0
    no_cert = ClientTls(cluster.ca, server_name=pki.node_dns_name(NODE))
    with AgentClient(cluster.agent_endpoint, AGENT_TOKEN, timeout=5, tls=no_cert) as anonymous, \
            pytest.raises(AgentUnreachableError):
        anonymous.inventory()
    wrong_name = _orchestrator_tls(cluster, "pool.cpu.node[1]")  # another node's name
    with AgentClient(cluster.agent_endpoint, AGENT_TOKEN, timeout=5, tls=wrong_name) as other, \
            pytest.raises(AgentUnreachableError):
        other.inventory()


def _orchestrator_tls(cluster: Cluster, node: str) -> ClientTls:
    """The orchestrator's own certificate (its data dir's), calling node ``node``'s agent."""
    data = cluster.agent_dir.parent / "server"
    return ClientTls(cluster.ca, (data / "server.crt").read_bytes(),
                     (data / "server.key").read_bytes(), pki.node_dns_name(node))


def test_only_the_orchestrators_certificate_may_call_an_agent(cluster: Cluster) -> None:
    stranger = "pool.cpu.node[7]"
    key = pki.new_key()
    with cluster.client("admin") as admin:  # a genuine certificate of another enrolled node
        token = admin.issue_join_token(stranger).token
        certificate = admin.enroll_node(stranger, token, pki.make_csr(key, stranger))
    own = NodeIdentity(cluster.agent_dir / TLS_DIR)
    for holder, tls in ((stranger, ClientTls(cluster.ca, certificate, pki.key_pem(key),
                                             pki.node_dns_name(NODE))),
                        (NODE, own.client_tls(NODE))):
        with AgentClient(cluster.agent_endpoint, AGENT_TOKEN, timeout=5, tls=tls) as node:
            assert node.health()  # agents check each other's health
            for call in (node.inventory, node.list_containers,
                         lambda: list(node.stream_logs("nosuch"))):
                with pytest.raises(AgentError) as refused:
                    call()
                assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
                assert refused.value.details == (
                    "only the cluster's orchestrator may call this agent; the caller presented "
                    f"the certificate of {holder!r}")
    with AgentClient(cluster.agent_endpoint, AGENT_TOKEN,
                     tls=_orchestrator_tls(cluster, NODE)) as orchestrator:
        assert orchestrator.list_containers() == []


def test_a_join_token_is_spent_and_registrations_need_the_nodes_proof(cluster: Cluster) -> None:
    with cluster.client("admin") as client:
        with pytest.raises(AccessDeniedError, match="the join token was spent already"):
            client.enroll_node(NODE, cluster.join_token, pki.make_csr(pki.new_key(), NODE))
        with pytest.raises(AccessDeniedError, match="this cluster speaks TLS"):
            client.register_node(NODE, "127.0.0.1:1", "t", {}, join_token=cluster.join_token)
        identity = NodeIdentity(cluster.agent_dir / TLS_DIR)
        proof = identity.prove(lambda at: registration_payload(NODE, "127.0.0.1:1", "t", {}, at))
        with pytest.raises(AccessDeniedError, match="signature is not valid"):
            client.register_node(NODE, "127.0.0.1:2", "t", {}, proof=proof)  # fields changed
        with pytest.raises(AccessDeniedError, match="not the one it enrolled"):
            client.register_node("pool.cpu.node[1]", "127.0.0.1:1", "t", {}, proof=proof)


def test_users_see_their_own_workflows_and_secrets(cluster: Cluster) -> None:
    with cluster.client("alice") as alice:
        started = alice.start_workflow("alices-flow", FUZZFILE, "flow.yaml")
        assert started.owner == "alice"
        alice.create_secret("s3", b"AWS_ACCESS_KEY_ID=x")
        assert [s.name for s in alice.list_secrets()] == ["s3"]
        assert [n.name for n in alice.list_nodes()] == [NODE]
    with cluster.client("bob") as bob:
        with pytest.raises(NotFoundError, match="no workflow 'alice/alices-flow'"):
            bob.get_workflow("alice/alices-flow")
        with pytest.raises(NotFoundError, match="no workflow 'alice/alices-flow'"):
            bob.cancel_workflow("alice/alices-flow")
        with pytest.raises(AccessDeniedError, match="bob may not workflow:start on "
                           "workflow/alice/alices-flow"):
            bob.start_workflow("alice/alices-flow", FUZZFILE, "flow.yaml")  # alice's name
        with pytest.raises(AccessDeniedError, match="secret:create"):
            bob.create_secret("mine", b"x")
        assert bob.list_secrets() == []
        assert bob.list_nodes() == []  # submit-only has no node:read
        bob.start_workflow("bobs-flow", FUZZFILE, "flow.yaml")
        assert [w.name for w in bob.list_workflows()] == ["bobs-flow"]
    with cluster.client("admin") as admin:
        assert {w.name for w in admin.list_workflows()} >= {"alices-flow", "bobs-flow"}
        assert admin.get_workflow("alice/alices-flow").owner == "alice"
        assert admin.list_secrets() == []  # secrets are per user: alice's are hers


def test_someone_elses_secret_answers_like_a_missing_one(cluster: Cluster) -> None:
    with cluster.client("alice") as alice:
        alice.start_workflow("alices-secret-flow", FUZZFILE, "flow.yaml")
        alice.create_secret("regcred", b"alice:hunter2")
    with cluster.iam(cluster.admin_token) as admin:
        admin.put_role("operator", [statement("allow", ["workflow:*"], ["workflow/*"]),
                                    statement("allow", ["secret:*"], ["secret/${user}/*"])])
        admin.put_user("carol", ["operator"], [])
        code = admin.issue_login_code("carol").code
    with cluster.iam("") as anonymous:
        carol_token = anonymous.login(code).token
    answers = {}
    with OrchestratorClient(cluster.endpoint, carol_token, tls=ClientTls(cluster.ca)) as carol:
        for secret in ("regcred", "nosuch"):  # alice's, and nobody's
            using = FUZZFILE.replace('nothing:1"}', f'nothing:1", secret: secret://user/{secret}}}')
            with pytest.raises(OrchestratorError) as refused:
                carol.start_workflow("alice/alices-secret-flow", using, "flow.yaml")
            answers[secret] = (type(refused.value), str(refused.value).replace(secret, "X"))
        with pytest.raises(OrchestratorError) as own:
            carol.start_workflow("carols-flow", using.replace("nosuch", "mine"), "flow.yaml")
    assert answers["regcred"] == answers["nosuch"] == (type(own.value), str(own.value).replace(
        "mine", "X")) == (OrchestratorError, "flow.yaml: jobs.hello.image.secret: no secret 'X' "
                          "(create it with: fuzz secret create X)")


def _answer(call: Callable[[str], object], ref: str) -> tuple[type[Exception], str]:
    """What ``call(ref)``, which must fail, answers: the error's type and message."""
    with pytest.raises(OrchestratorError) as caught:
        call(ref)
    return type(caught.value), str(caught.value)


def test_a_name_is_its_owners_and_another_owners_answers_as_not_found(cluster: Cluster) -> None:
    with cluster.client("alice") as alice:
        alice.start_workflow("same-name", FUZZFILE, "flow.yaml")
    with cluster.client("bob") as bob:
        # bob's `same-name` is his own: a new workflow, run 1, not a run of alice's
        with pytest.raises(NotFoundError, match="no workflow 'same-name'"):
            bob.get_workflow("same-name")
        mine = bob.start_workflow("same-name", FUZZFILE, "flow.yaml")
        assert (mine.owner, mine.run) == ("bob", 1)
        assert bob.get_workflow("same-name").owner == "bob"
        bob.cancel_workflow("same-name")
        # alice's, named explicitly, answers exactly as a workflow that does not exist
        calls: dict[str, Callable[[str], object]] = {
            "status": lambda ref: bob.get_workflow(ref),
            "cancel": lambda ref: bob.cancel_workflow(ref),
            "watch": lambda ref: next(iter(bob.watch_workflow(ref))),
            "log": lambda ref: list(bob.stream_log(ref, "hello")),
            "exec": lambda ref: list(bob.exec(iter([pb.ExecRequest(
                owner="alice", workflow=ref.partition("/")[2], task="hello",
                input=substrate_pb2.ExecInput(start=substrate_pb2.ExecStart(args=["id"]))),
            ]))),
            "port-forward": lambda ref: list(bob.port_forward(iter([pb.PortForwardRequest(
                owner="alice", workflow=ref.partition("/")[2], task="hello",
                frame=substrate_pb2.PortForwardFrame(
                    open=substrate_pb2.PortForwardOpen(port=80)))]))),
        }
        for what, call in calls.items():
            theirs = _answer(call, "alice/same-name")
            absent = _answer(call, "alice/never-was")
            assert theirs[0] is NotFoundError, (what, theirs)
            assert (theirs[0], theirs[1].replace("same-name", "never-was")) == absent, what
        names = [(w.owner, w.name) for w in bob.list_workflows()]
        assert ("alice", "same-name") not in names and ("bob", "same-name") in names
    with cluster.client("alice") as alice:
        hers = alice.get_workflow("same-name")
        assert (hers.owner, hers.run) == ("alice", 1)
        alice.cancel_workflow("same-name")
