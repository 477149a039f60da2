"""The cloud-init bootstrap script: syntax, secrets on disk, and a real agent it starts."""

from __future__ import annotations

import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.clients.agent import AgentClient, AgentUnreachableError
from fuzz.plugin.cloudinit import BootstrapSettings, cloud_init_script
from fuzz.plugin.provider import TAG_ADDRESS, TAG_CLIENT_TOKEN, TAG_CLUSTER, JoinInfo, NodeRequest
from fuzz.rpc.client import ClientTls
from fuzz.testing.boot import BootError, boot, boot_env, stop_agents
from fuzz.testing.joins import join_recorder

TOKEN = "join-tok-3f9a'quoted\"$(not run)"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
ADDRESS = "pool.cpu.node[0]"


def _node(join: JoinInfo) -> NodeRequest:
    return NodeRequest(
        address=ADDRESS, pool="cpu", client_token="c0ffee", offering=None,
        labels={"role": "it's $HOME"}, attributes={},
        tags={TAG_CLUSTER: "demo", TAG_ADDRESS: ADDRESS, TAG_CLIENT_TOKEN: "c0ffee"},
        join=join,
    )


def _script(settings: BootstrapSettings | None = None, ca_pem: str | None = CA_PEM,
            orchestrator: str | None = None) -> str:
    join = JoinInfo(token=TOKEN, orchestrator=orchestrator, ca_pem=ca_pem)
    return cloud_init_script(_node(join), join, settings or BootstrapSettings())


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    machine = tmp_path / "machine"
    try:
        yield machine
    finally:
        stop_agents(machine)


def test_script_is_posix_sh_user_data_carrying_the_token() -> None:
    script = _script()
    assert script.startswith("#!/bin/sh\n")  # cloud-init runs user-data starting with #!
    assert TOKEN.replace("'", "'\"'\"'") in script  # shell-quoted, never expanded
    sh = shutil.which("dash") or "/bin/sh"
    checked = subprocess.run([sh, "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    assert 'ExecStart="/etc/fuzz/agent.sh"' in script  # the unit used where systemd runs
    assert "\nKillMode=process\n" in script  # restarting the agent leaves its jobs running


def test_running_it_starts_an_agent_that_joins_with_the_join_token(root: Path) -> None:
    with join_recorder(tls=True) as joins:
        settings = BootstrapSettings(listen_host="127.0.0.1", port=0)
        agent = boot(_script(settings, ca_pem=joins.ca_pem, orchestrator=joins.address), root,
                     listen=None)
        joined = joins.wait_for(TOKEN, timeout=30)
        client_tls = joins.client_tls(ADDRESS)
    conf = root / "etc" / "fuzz"
    for name in ("join-token", "agent-token"):
        assert stat.S_IMODE((conf / name).stat().st_mode) == 0o600
    assert (conf / "join-token").read_text() == TOKEN + "\n"
    assert len(agent.token) == 64 and agent.token != TOKEN  # the agent's own, random
    assert (conf / "ca.pem").read_text() == joins.ca_pem
    assert agent.state_dir == root / "var" / "lib" / "fuzz" / "agent"
    assert agent.endpoint.startswith("127.0.0.1:")
    assert joined is not None, "the agent did not enroll and register with the orchestrator"
    assert (joined.name, joined.agent_token) == (ADDRESS, agent.token)
    assert joined.labels[TAG_CLUSTER] == "demo"
    with AgentClient(joined.endpoint, joined.agent_token, tls=client_tls) as client:
        labels = client.inventory().labels  # mutual TLS with the certificate issued at join
    assert labels[TAG_ADDRESS] == ADDRESS
    assert labels["role"] == "it's $HOME"
    with AgentClient(joined.endpoint, joined.agent_token, timeout=3,
                     tls=ClientTls(client_tls.ca_pem, server_name=client_tls.server_name)
                     ) as anonymous, pytest.raises(AgentUnreachableError):
        anonymous.inventory()  # a client without a certificate of the CA is turned away

    # running it again (a reboot re-running user-data) leaves the live agent alone
    again = subprocess.run(["/bin/sh", str(root / "bootstrap.sh")], env=boot_env(root),
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert f"agent already running (pid {agent.pid})" in again.stdout
    assert (conf / "agent-token").read_text().strip() == agent.token


def test_without_a_ca_the_agent_joins_in_plain_text(root: Path) -> None:
    with join_recorder() as joins:
        settings = BootstrapSettings(listen_host="127.0.0.1", port=0)
        boot(_script(settings, ca_pem=None, orchestrator=joins.address), root, listen=None)
        joined = joins.wait_for(TOKEN, timeout=30)
    assert "'--insecure'" in (root / "etc" / "fuzz" / "agent.sh").read_text()
    assert joined is not None and joined.name == ADDRESS
    with AgentClient(joined.endpoint, joined.agent_token) as client:
        assert client.inventory().labels[TAG_ADDRESS] == ADDRESS


def test_the_advertised_address_comes_from_the_environment(root: Path) -> None:
    script = _script(ca_pem=None, orchestrator="127.0.0.1:9")
    boot(script, root, extra_env={"FUZZ_ADVERTISE": "10.0.0.7:7443"})
    agent_sh = (root / "etc" / "fuzz" / "agent.sh").read_text()
    assert "'--join' '127.0.0.1:9' '--node-name' 'pool.cpu.node[0]'" in agent_sh
    assert "'--advertise' '10.0.0.7:7443'" in agent_sh


def test_listen_address_comes_from_the_environment(root: Path) -> None:
    agent = boot(_script(ca_pem=None), root, listen="127.0.0.1:0")
    assert not (root / "etc" / "fuzz" / "ca.pem").exists()
    assert "--join" not in (root / "etc" / "fuzz" / "agent.sh").read_text()  # none to join
    with AgentClient(agent.endpoint, agent.token) as client:
        assert client.inventory().labels[TAG_ADDRESS] == ADDRESS


def test_without_fuzz_or_an_install_spec_it_fails_saying_so(root: Path) -> None:
    settings = BootstrapSettings(fuzz_command="/nonexistent/fuzz")
    with pytest.raises(BootError, match="/nonexistent/fuzz is not installed and no install spec"):
        boot(_script(settings), root, extra_env={"FUZZ_COMMAND": "/nonexistent/fuzz"})


def test_an_agent_that_cannot_start_is_reported_with_its_log(root: Path) -> None:
    first = boot(_script(), root / "a", listen="127.0.0.1:0")
    taken = first.endpoint  # a second machine asked to listen on the first one's port
    with pytest.raises(BootError, match=r"agent exited while starting: .*cannot listen"):
        boot(_script(), root / "b", listen=taken, timeout=20)
