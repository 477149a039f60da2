"""The Warewulf provider beyond the kit, and the fakes' own strictness (so tests can fail)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pydantic
import pytest
from fuzz_baremetal import plugin
from fuzz_baremetal.config import BaremetalConfig

from fuzz.clients.agent import AgentClient
from fuzz.plugin.provider import (
    TAG_ADDRESS,
    TAG_CLIENT_TOKEN,
    TAG_CLUSTER,
    CapacityUnavailableError,
    JoinInfo,
    NodeRequest,
    ProviderContext,
    ProviderError,
)
from fuzz.testing.boot import find_agent
from tests.support.fakes.warewulf_api import FakeWarewulfApi
from tests.support.fakes.warewulf_site import WarewulfSite

CLUSTER = "metal-test"


def _wwctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["wwctl", *args], capture_output=True, text=True, timeout=30)


def _request(address: str, token: str, **attributes: object) -> NodeRequest:
    join = JoinInfo(token=f"join-{token}")
    return NodeRequest(address, "metal", token, None, {"rack": "r1"}, attributes,
                       {TAG_CLUSTER: CLUSTER, TAG_ADDRESS: address, TAG_CLIENT_TOKEN: token},
                       join)


def _context(config: BaremetalConfig, tmp_path: Path) -> ProviderContext:
    return ProviderContext("baremetal", "metal", CLUSTER, config, tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("node", "frob"), 'unknown command "node frob"'),
        (("node", "add", "--colour", "red", "n01"), "unknown flag: --colour"),
        (("node", "add"), "requires at least 1 arg(s)"),
        (("node", "add", "--hwaddr", "zz:00", "n01"), "invalid hwaddr zz:00"),
        (("node", "add", "--profile", "gpu", "n01"), "profile 'gpu' does not exist"),
        (("node", "add", "--tagadd", "novalue", "n01"), "must be formatted as key=value"),
        (("node", "set", "--image", "rocky-9", "n01"), "pass --yes"),
        (("power", "status", "n09"), "No nodes found"),
    ],
)
def test_fake_wwctl_refuses_what_wwctl_refuses(
    warewulf_site: WarewulfSite, args: tuple[str, ...], message: str
) -> None:
    proc = _wwctl(*args)
    assert proc.returncode == 1
    assert message in proc.stdout + proc.stderr


def test_fake_wwctl_keeps_nodes_conf_and_answers_in_warewulf_formats(
    warewulf_site: WarewulfSite,
) -> None:
    assert _wwctl("node", "add", "--hwaddr", "02:00:00:00:00:01", "--ipmiaddr", "10.9.0.1",
                  "--tagadd", "a=b=c", "n01").returncode == 0
    refused = _wwctl("node", "set", "--yes", "--image", "centos-7", "n01")
    assert "image 'centos-7' does not exist" in refused.stderr
    listed = json.loads(_wwctl("node", "list", "--json").stdout)
    assert listed == {"n01": {"profiles": ["default"], "ipmi": {"ipaddr": "10.9.0.1"},
                              "network devices": {"default": {"hwaddr": "02:00:00:00:00:01"}},
                              "tags": {"a": "b=c"}}}
    assert "nodes:\n  n01:" in (warewulf_site.root / "nodes.conf").read_text()
    assert _wwctl("power", "status", "n01").stdout == "10.9.0.1: Chassis Power is off\n"


def test_fake_api_refuses_what_warewulfd_refuses(warewulf_api: FakeWarewulfApi) -> None:
    def call(method: str, path: str, body: object = None, password: str | None = None) -> int:
        secret = warewulf_api.password if password is None else password
        auth = base64.b64encode(f"{warewulf_api.user}:{secret}".encode()).decode()
        request = urllib.request.Request(
            warewulf_api.url + path, method=method, headers={"Authorization": f"Basic {auth}"},
            data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert call("GET", "/api/nodes/") == 200
    assert call("GET", "/api/nodes/", password="wrong") == 401
    assert call("GET", "/api/node/") == 404
    assert call("POST", "/api/nodes/n01") == 405
    assert call("PUT", "/api/nodes/n01", {"profiles": ["default"]}) == 400  # no "node"
    assert call("PUT", "/api/nodes/n01", {"node": {"profiles": ["nope"]}}) == 400
    assert call("PUT", "/api/nodes/n01", {"node": {"profiles": ["default"]}}) == 200
    assert call("PUT", "/api/nodes/n01", {"node": {}}) == 400  # exists
    assert call("GET", "/api/power/n01") == 400  # IPMI not configured
    assert call("POST", "/api/power/n01", {}) == 400  # no "state"


def test_static_machine_boots_with_its_overlay_and_joins(
    warewulf_site: WarewulfSite, tmp_path: Path
) -> None:
    machine = warewulf_site.machines[0]
    ctx = _context(warewulf_site.config(machines=[]), tmp_path)
    node = _request(f"pool.metal.node[{machine.name}]", "t1",
                    **machine.model_dump(exclude_none=True))
    node = NodeRequest(**{**node.__dict__, "bootstrap": plugin.bootstrap_payload(
        ctx, node, node.join) or ""})
    created = plugin.create_node(ctx, node)
    assert created is not None and created.state == "running"
    assert created.endpoint == f"127.0.0.1:{machine.agent_port}"
    built = warewulf_site.root / "provision" / machine.name / "etc"
    assert base64.b64decode((built / "fuzz" / "bootstrap.b64").read_text()).decode() == \
        node.bootstrap
    wants = built / "systemd" / "system" / "multi-user.target.wants" / "fuzz-bootstrap.service"
    assert os.readlink(wants) == "/etc/systemd/system/fuzz-bootstrap.service"
    agent = find_agent(warewulf_site.root / "machines" / machine.ipmi_address)
    assert agent is not None
    with AgentClient(created.endpoint, agent.token) as client:
        assert client.inventory().labels["rack"] == "r1"

    other = _request("pool.metal.node[x]", "t2", **machine.model_dump(exclude_none=True))
    with pytest.raises(CapacityUnavailableError, match=f"machine {machine.name} is already"):
        plugin.create_node(ctx, other)

    _wwctl("power", "off", machine.name)  # an admin powers it off: fuzz sees it pending
    (seen,) = plugin.read_nodes(ctx) or []
    assert (seen.state, seen.attributes["power"], seen.endpoint) == ("pending", "off", None)
    resumed = plugin.create_node(ctx, node)  # a retried create boots it again
    assert resumed is not None and (resumed.provider_id, resumed.state) == (machine.name,
                                                                            "running")
    assert plugin.delete_node(ctx, resumed) is True
    assert json.loads(_wwctl("node", "list", "--json").stdout) == {}


def test_a_machine_whose_agent_never_answers_is_released(
    warewulf_site: WarewulfSite, tmp_path: Path
) -> None:
    # wwinit is an overlay that starts no agent
    config = warewulf_site.config(overlay="wwinit", join_timeout=2)
    ctx = _context(config, tmp_path)
    with pytest.raises(ProviderError, match=r"n01 was powered on but its agent did not answer"):
        plugin.create_node(ctx, _request("pool.metal.node[0]", "t3"))
    assert json.loads(_wwctl("node", "list", "--json").stdout) == {}  # n01 is free again


def test_missing_wwctl_is_one_clear_line(warewulf_site: WarewulfSite, tmp_path: Path) -> None:
    ctx = _context(warewulf_site.config(wwctl="/nonexistent/wwctl"), tmp_path)
    with pytest.raises(ProviderError, match="/nonexistent/wwctl not found; install Warewulf"):
        plugin.read_nodes(ctx)


def test_config_is_checked(warewulf_site: WarewulfSite) -> None:
    machines = [m.model_dump(exclude_none=True) for m in warewulf_site.machines]
    with pytest.raises(pydantic.ValidationError, match="duplicate names n01"):
        warewulf_site.config(machines=[machines[0], machines[0]])
    with pytest.raises(pydantic.ValidationError, match="unknown offering 'gpu'"):
        warewulf_site.config(machines=[{**machines[0], "offering": "gpu"}])
    with pytest.raises(pydantic.ValidationError, match="api_url: required"):
        warewulf_site.config(api="rest")
    with pytest.raises(pydantic.ValidationError, match="invalid MAC"):
        warewulf_site.config(machines=[{**machines[0], "mac": "nope"}])
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        warewulf_site.config(wwctll="x")
    offerings = plugin.offerings(
        ProviderContext("baremetal", "metal", CLUSTER, warewulf_site.config(), Path("."))) or []
    assert [(o.name, o.cores, o.memory_bytes) for o in offerings] == [("c2", 2, 4 * 2**30)]
