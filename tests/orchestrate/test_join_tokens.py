"""Join tokens expire, and a newer one for a node name voids the older: over real gRPC.

An orchestrator (TLS, and one plain text) with a short ``join_token_ttl`` answers
EnrollNode and RegisterNode; a real agent process answers the plain-text
orchestrator's inventory call when a node registers.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fuzz.clients.orchestrator import AccessDeniedError
from fuzz.crypto import pki
from fuzz.orchestrate.server import ServerSettings
from tests.substrate.test_substrate_agent import TOKEN, _spawn, _stop, _token_file, _wait_ready
from tests.support.orchestratorutil import running_orchestrator

TTL = 3.0


def _settings(data_dir: Path, insecure: bool = False) -> ServerSettings:
    return ServerSettings(listen="", data_dir=data_dir, cluster="test", insecure=insecure,
                          join_token_ttl=TTL)


def test_an_expired_or_voided_join_token_is_refused_at_enrollment(tmp_path: Path) -> None:
    with running_orchestrator(tmp_path / "server", _settings(tmp_path / "server")) as running, \
            running.client(running.admin_token) as admin:
        csr = pki.make_csr(pki.new_key(), "n")
        old = admin.issue_join_token("pool.cpu.node[0]").token
        new = admin.issue_join_token("pool.cpu.node[0]").token
        with pytest.raises(AccessDeniedError, match=r"node 'pool.cpu.node\[0\]': the join token "
                           r"is void: a newer one was issued for this node at "):
            admin.enroll_node("pool.cpu.node[0]", old, csr)
        certificate = admin.enroll_node("pool.cpu.node[0]", new, csr)
        assert pki.common_name(pki.load_cert(certificate)) == "pool.cpu.node[0]"
        late = admin.issue_join_token("pool.cpu.node[1]").token
        time.sleep(TTL + 0.2)
        with pytest.raises(AccessDeniedError, match=r"node 'pool.cpu.node\[1\]': the join token "
                           r"expired at .* UTC \(orchestrator.join_token_ttl\); issue a new "
                           r"one"):
            admin.enroll_node("pool.cpu.node[1]", late, csr)


def test_a_plain_text_node_keeps_beating_after_its_token_expires(tmp_path: Path) -> None:
    agent = _spawn(tmp_path / "agent", _token_file(tmp_path / "secrets"))
    data = tmp_path / "server"
    try:
        _wait_ready(agent)
        endpoint = str(agent.info["endpoint"])
        with running_orchestrator(data, _settings(data, insecure=True)) as running, \
                running.client(running.admin_token) as admin:
            joined = admin.issue_join_token("n0").token
            late = admin.issue_join_token("n1").token
            assert admin.register_node("n0", endpoint, TOKEN, {}, join_token=joined)
            time.sleep(TTL + 0.2)
            assert not admin.register_node("n0", endpoint, TOKEN, {}, join_token=joined)
            with pytest.raises(AccessDeniedError, match="node 'n1': the join token expired"):
                admin.register_node("n1", endpoint, TOKEN, {}, join_token=late)
            admin.issue_join_token("n0")  # the node is re-created: its old token is void
            with pytest.raises(AccessDeniedError, match="node 'n0': the join token is void"):
                admin.register_node("n0", endpoint, TOKEN, {}, join_token=joined)
    finally:
        _stop(agent)
