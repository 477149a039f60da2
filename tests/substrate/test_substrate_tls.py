"""The agent over TLS: a client that trusts its CA gets through, a plain-text one does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.clients.agent import AgentClient, AgentUnreachableError
from fuzz.rpc.client import ClientTls
from tests.substrate.test_substrate_agent import (
    TOKEN,
    _run_failing,
    _spawn,
    _stop,
    _token_file,
    _wait_ready,
)
from tests.support.fakes.tls import self_signed


def test_agent_serves_tls_and_refuses_plain_text(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "agent")
    agent = _spawn(tmp_path / "state", _token_file(tmp_path / "secrets"),
                   "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        _wait_ready(agent)
        with AgentClient(agent.endpoint, TOKEN, tls=ClientTls(cert.read_bytes())) as client:
            assert client.inventory().cores > 0
        with AgentClient(agent.endpoint, TOKEN, timeout=2) as plain, \
                pytest.raises(AgentUnreachableError):
            plain.inventory()
    finally:
        _stop(agent)


def test_tls_options_go_together_and_must_be_pem(tmp_path: Path) -> None:
    token = _token_file(tmp_path / "secrets")
    cert, _ = self_signed(tmp_path, "agent")
    code, err = _run_failing(tmp_path / "state", token, "--tls-cert", str(cert))
    assert code == 1 and "--tls-cert and --tls-key go together" in err
    (tmp_path / "bad.key").write_text("not a key")
    code, err = _run_failing(tmp_path / "state2", token, "--tls-cert", str(cert),
                             "--tls-key", str(tmp_path / "bad.key"))
    assert code == 1 and "must be PEM" in err
