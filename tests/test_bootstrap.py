"""The cloud-init bootstrap script: syntax, secrets on disk, and a real agent it starts."""

from __future__ import annotations

import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.bootstrap import BootstrapSettings, cloud_init_script
from fuzz.provider_api import TAG_ADDRESS, TAG_CLIENT_TOKEN, TAG_CLUSTER, JoinInfo, NodeRequest
from fuzz.substrate.client import AgentClient
from fuzz.testing.boot import BootError, boot, boot_env, stop_agents

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


def _script(settings: BootstrapSettings | None = None, ca_pem: str | None = CA_PEM) -> str:
    join = JoinInfo(token=TOKEN, orchestrator="127.0.0.1:7001", ca_pem=ca_pem)
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


def test_running_it_starts_an_agent_that_answers_with_the_join_token(root: Path) -> None:
    agent = boot(_script(BootstrapSettings(port=0)), root, listen=None)
    conf = root / "etc" / "fuzz"
    token_file = conf / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text() == TOKEN + "\n"
    assert (conf / "ca.pem").read_text() == CA_PEM
    assert agent.state_dir == root / "var" / "lib" / "fuzz" / "agent"
    assert agent.endpoint.startswith("127.0.0.1:")  # 0.0.0.0 binds all, reported as loopback
    with AgentClient(agent.endpoint, TOKEN) as client:
        labels = client.inventory().labels
    assert labels[TAG_ADDRESS] == ADDRESS
    assert labels[TAG_CLUSTER] == "demo"
    assert labels["fuzz:orchestrator"] == "127.0.0.1:7001"
    assert labels["role"] == "it's $HOME"

    # running it again (a reboot re-running user-data) leaves the live agent alone
    again = subprocess.run(["/bin/sh", str(root / "bootstrap.sh")], env=boot_env(root),
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert f"agent already running (pid {agent.pid})" in again.stdout


def test_listen_address_comes_from_the_environment(root: Path) -> None:
    agent = boot(_script(ca_pem=None), root, listen="127.0.0.1:0")
    assert not (root / "etc" / "fuzz" / "ca.pem").exists()
    with AgentClient(agent.endpoint, TOKEN) as client:
        assert client.health()


def test_without_fuzz_or_an_install_spec_it_fails_saying_so(root: Path) -> None:
    settings = BootstrapSettings(fuzz_command="/nonexistent/fuzz")
    with pytest.raises(BootError, match="/nonexistent/fuzz is not installed and no install spec"):
        boot(_script(settings), root, extra_env={"FUZZ_COMMAND": "/nonexistent/fuzz"})


def test_an_agent_that_cannot_start_is_reported_with_its_log(root: Path) -> None:
    first = boot(_script(), root / "a", listen="127.0.0.1:0")
    taken = first.endpoint  # a second machine asked to listen on the first one's port
    with pytest.raises(BootError, match=r"agent exited while starting: .*cannot listen"):
        boot(_script(), root / "b", listen=taken, timeout=20)
