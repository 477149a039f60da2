"""End to end: a federation of three local clusters, each its own `fuzz server` with one node.

The members differ as a federation's do: ``hq`` is on premises (labelled
``on-prem=true``) and dear, ``east`` is the cheapest, ``west`` sits in another
region and its node declares two GPUs. Ingress data is served over HTTP on
loopback and declared in the federation spec as living in a region (with an
egress price per GB) or as export-controlled data at ``hq``. Every command goes
through the real ``fuzz`` CLI with ``--federation``; one member's orchestrator is
stopped mid-test.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fuzz.testing.cluster import cluster_spec, cluster_up
from fuzz.testing.oci import PushedImage, free_port
from fuzz.testing.web import serve_directory
from tests.support.cliutil import Result, kill_agents, run_fuzz
from tests.support.declared import declared_node_yaml
from tests.support.workflowutil import LocalCluster, dump, local_cluster

ENDED = ("SUCCEEDED", "FAILED", "CANCELED")
PRICES = {"hq": 0.50, "east": 0.05, "west": 0.10}
SITES = {"hq": "hq", "east": "aws:us-east-1", "west": "aws:eu-west-1"}


@dataclass
class Federation:
    """The three members and the directory holding federation.yaml and the client config."""

    directory: Path
    members: dict[str, LocalCluster]
    data_url: str
    image: str

    def fuzz(self, *args: str, timeout: float = 120) -> Result:
        """``fuzz ARGS`` in the federation's directory, with its own client config."""
        return run_fuzz(self.directory, *args, timeout=timeout,
                        env={"FUZZ_CONFIG": str(self.directory / "config.yaml")})

    def ok(self, *args: str, timeout: float = 120) -> Result:
        """``fuzz ARGS``, required to exit 0."""
        result = self.fuzz(*args, timeout=timeout)
        assert result.code == 0, f"fuzz {' '.join(args)}: {result.err}{result.out}"
        return result

    def write(self, name: str, fuzzfile: str) -> str:
        """Write a Fuzzfile into the directory; its file name."""
        (self.directory / f"{name}.yaml").write_text(fuzzfile)
        return f"{name}.yaml"

    def status(self, name: str) -> dict[str, Any]:
        """The workflow's status, through the federation."""
        data: dict[str, Any] = self.ok("workflow", "status", name, "--json",
                                       "--federation").json()
        return data

    def wait(self, name: str, timeout: float = 120) -> dict[str, Any]:
        """Poll (through the federation) until the workflow has ended."""
        deadline = time.monotonic() + timeout
        while (status := self.status(name))["state"] not in ENDED:
            assert time.monotonic() < deadline, f"{name} still {status['state']}"
            time.sleep(0.3)
        return status


def _fuzzfile(image: str, script: str, *, ingress: str = "", gpus: int = 0,
              env: str = "") -> str:
    """A one-job Fuzzfile: ``script`` in busybox, optionally with an ingress source (at
    /data/in.txt), GPUs, or an env entry."""
    volume = ("volumes:\n  data:\n    reference: volume://user/ephemeral\n    ingress:\n"
              f"      - source: {{uri: '{ingress}'}}\n        destination: {{uri: file://in.txt}}\n"
              ) if ingress else ""
    lines = [f"version: v1\n{volume}jobs:\n  run:\n    image: {{uri: {image}}}\n",
             f"    command: [/bin/sh, -c, '{script}']\n",
             "    resource: {cpu: {cores: 1}, memory: {size: 32MiB"
             + ("}" if not gpus else f"}}, devices: {{nvidia.com/gpu: {gpus}}}") + "}\n"]
    if ingress:
        lines.append("    mounts: {data: {location: /data}}\n")
    if env:
        lines.append(f"    env: ['{env}']\n")
    return "".join(lines)


def _spec(members: dict[str, LocalCluster], ports: dict[str, int], data_url: str) -> str:
    spec = {
        "version": 1,
        "federation": "research",
        "members": {name: {
            "server": f"127.0.0.1:{ports[name]}",
            "ca_file": str(cluster.data_dir / "ca.pem"),
            "token_file": str(cluster.data_dir / "admin.token"),
            "site": SITES[name],
            "labels": {"on-prem": "true"} if name == "hq" else {},
            "prices": {"core_hour": PRICES[name], "gpu_hour": {"*": 2.0}},
        } for name, cluster in members.items()},
        "egress": [{"from": "aws:eu-west-1", "to": "*", "per_gb": 0.02},
                   {"from": "hq", "to": "*", "per_gb": 0.05}],
        "data": [{"source": f"{data_url}/eu/", "site": "aws:eu-west-1", "size": "10GB"},
                 {"source": f"{data_url}/secret/", "site": "hq", "size": "1GB",
                  "labels": {"classification": "export-controlled"}}],
        "policies": [{"name": "export-control",
                      "when": {"data": {"classification": "export-controlled"}},
                      "allow": {"labels": {"on-prem": "true"}}}],
    }
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory,
               busybox_image: PushedImage) -> Iterator[Federation]:
    """Three one-node clusters, an HTTP server of data, and the federation spec."""
    www = tmp_path_factory.mktemp("www")
    for folder in ("eu", "secret"):
        (www / folder).mkdir()
        (www / folder / "data.txt").write_text(f"{folder} data\n")
    directory = tmp_path_factory.mktemp("federation")
    with serve_directory(www) as data_url, contextlib.ExitStack() as stack:
        members: dict[str, LocalCluster] = {}
        ports: dict[str, int] = {}
        for name in SITES:
            home = tmp_path_factory.mktemp(name)
            os.chmod(home, 0o755)
            local = None
            if name == "west":
                (home / "node.yaml").write_text(declared_node_yaml())
                local = {"inventory": "node.yaml"}
            ports[name] = free_port()
            members[name] = stack.enter_context(local_cluster(
                home, [busybox_image.registry.host], ports[name], nodes=1, local=local,
                orchestrator={"ingress": {"allow": [data_url.removeprefix("http://")]}}))
        (directory / "federation.yaml").write_text(_spec(members, ports, data_url))
        yield Federation(directory, members, data_url, busybox_image.reference)


def _row(table: str, member: str) -> str:
    """The line of an --explain table that shows ``member``."""
    found = [line for line in table.splitlines() if f" {member} " in line]
    assert len(found) == 1, table
    return found[0]


def test_status_shows_every_member(federation: Federation) -> None:
    shown = federation.ok("federation", "status", "--json").json()
    members = {m["member"]: m for m in shown["members"]}
    assert list(members) == ["hq", "east", "west"]
    for name, member in members.items():
        assert member["reachable"] and member["site"] == SITES[name], member
        assert member["capacity"]["nodes"] == 1
        assert member["prices"]["core_hour"] == PRICES[name]
        assert member["offerings"] == [] and member["queued_tasks"] == 0  # static pools
    assert members["west"]["capacity"]["devices"] == {"nvidia.com/gpu": 2}
    assert members["west"]["capacity"]["cores"]["total"] == 32
    table = federation.ok("federation", "status").out
    assert "east" in table and "aws:us-east-1" in table


def test_the_cheapest_member_runs_it_and_is_reached_through_the_federation(
        federation: Federation) -> None:
    file = federation.write("cheap", _fuzzfile(federation.image, "echo ran here"))
    started = federation.ok("workflow", "start", file, "--federation", "--explain")
    assert "placed on member east" in started.err
    assert "chosen" in _row(started.out, "east") and "0.05" in _row(started.out, "east")
    assert "0.50" in _row(started.out, "hq") and "0.10" in _row(started.out, "west")
    status = federation.wait("cheap")
    assert status["state"] == "SUCCEEDED", dump(status)
    assert federation.ok("workflow", "log", "cheap", "run", "--federation").out == "ran here\n"
    with federation.members["east"].client() as east:
        assert east.get_workflow("cheap").state == "SUCCEEDED"


def test_data_pulls_the_work_to_its_region(federation: Federation) -> None:
    file = federation.write("near", _fuzzfile(federation.image, "cat /data/in.txt",
                                              ingress=f"{federation.data_url}/eu/data.txt"))
    started = federation.ok("workflow", "start", file, "--federation", "--explain", "--json")
    routing = {row["member"]: row for row in started.json()["routing"]}
    assert routing["west"]["chosen"], routing
    assert routing["east"]["egress"] == pytest.approx(10 * 0.02)
    assert routing["west"]["egress"] == 0
    assert routing["east"]["compute"] < routing["west"]["compute"]
    assert federation.wait("near")["state"] == "SUCCEEDED"
    assert federation.ok("workflow", "log", "near", "run", "--federation").out == "eu data\n"


def test_policy_keeps_export_controlled_data_on_premises(federation: Federation) -> None:
    file = federation.write("secret", _fuzzfile(
        federation.image, "cat /data/in.txt", ingress=f"{federation.data_url}/secret/data.txt"))
    pinned = federation.fuzz("workflow", "start", file, "--federation", "--cluster", "east")
    assert pinned.code == 1
    assert pinned.err.strip().splitlines()[-1] == (
        "Error: --cluster east is refused: policy export-control does not allow it"), pinned.err
    started = federation.ok("workflow", "start", file, "--federation", "--explain")
    assert "placed on member hq" in started.err
    east = _row(started.out, "east")
    assert "export-control: refused" in east and "refused" in east.split("│")[-2], started.out
    assert "export-control: allowed" in _row(started.out, "hq")
    assert federation.wait("secret")["state"] == "SUCCEEDED"


def test_gpu_work_goes_to_the_member_with_gpus_and_stops_through_the_federation(
        federation: Federation) -> None:
    file = federation.write("gpu", _fuzzfile(federation.image, "sleep 300", gpus=1))
    started = federation.ok("workflow", "start", file, "--federation", "--explain")
    assert "placed on member west" in started.err
    assert "no: job run needs 1 nvidia.com/gpu" in _row(started.out, "east")
    federation.ok("workflow", "stop", "gpu", "--federation")
    status = federation.wait("gpu")
    assert status["state"] in ("CANCELED", "FAILED"), dump(status)
    with federation.members["west"].client() as west:
        assert west.get_workflow("gpu").state == status["state"]


def test_a_member_that_refuses_the_start_is_left_out_and_the_workflow_placed_again(
        federation: Federation) -> None:
    federation.members["west"].ok("secret", "create", "token", "--from-literal", "s3cr3t")
    file = federation.write("needs-secret", _fuzzfile(
        federation.image, 'echo "$TOKEN"', env="TOKEN=secret://user/token"))
    started = federation.ok("workflow", "start", file, "--federation")
    assert "could not start on member east" in started.err and "placing it again" in \
        started.err, started.err
    assert "placed on member west" in started.err
    assert federation.wait("needs-secret")["state"] == "SUCCEEDED"
    assert federation.ok("workflow", "log", "needs-secret", "run", "--federation").out == \
        "s3cr3t\n"


def test_exec_reaches_the_job_on_its_member(federation: Federation) -> None:
    file = federation.write("long", _fuzzfile(federation.image, "sleep 300"))
    assert "placed on member east" in federation.ok("workflow", "start", file,
                                                    "--federation").err
    deadline = time.monotonic() + 90
    while federation.status("long")["tasks"][0]["state"] != "RUNNING":
        assert time.monotonic() < deadline, dump(federation.status("long"))
        time.sleep(0.3)
    ran = federation.ok("workflow", "exec", "long", "run", "--federation", "--",
                        "/bin/sh", "-c", "echo through")
    assert ran.out == "through\n"
    federation.ok("workflow", "stop", "long", "--federation")
    assert federation.wait("long")["state"] == "CANCELED"


def test_a_stopped_member_is_skipped_and_said_so(federation: Federation) -> None:
    east = federation.members["east"]
    east.ok("server", "--stop")
    try:
        file = federation.write("while-down", _fuzzfile(federation.image, "echo fine"))
        started = federation.ok("workflow", "start", file, "--federation", "--explain")
        assert "member east is unreachable, skipped" in started.err, started.err
        assert "placed on member west" in started.err
        assert "unreachable" in _row(started.out, "east")
        assert federation.wait("while-down")["state"] == "SUCCEEDED"
        earlier = federation.fuzz("workflow", "status", "cheap", "--federation")
        assert earlier.code == 1
        assert earlier.err.strip().splitlines()[-1].startswith("Error: nothing listens at"), \
            earlier.err
        shown = federation.ok("federation", "status", "--json").json()
        assert [m["reachable"] for m in shown["members"]] == [True, False, True]
    finally:
        east.ok("server", "--detach")


def test_status_shows_an_elastic_pools_offerings_with_prices(
        tmp_path: Path, busybox_image: PushedImage) -> None:
    home = tmp_path / "elastic"
    home.mkdir()
    os.chmod(home, 0o755)
    port = free_port()
    spec = yaml.safe_load(cluster_spec("elastic", 1, [busybox_image.registry.host], port))
    spec["pools"]["cpu"]["max"] = 2  # min 1, max 2: the orchestrator's elastic loop sizes it
    (home / "fuzz.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "federation.yaml").write_text(yaml.safe_dump({
        "version": 1, "federation": "elastic", "members": {"cloud": {
            "server": f"127.0.0.1:{port}", "ca_file": str(home / ".fuzz/server/ca.pem"),
            "token_file": str(home / ".fuzz/server/admin.token"), "site": "lab"}}}))
    try:
        with cluster_up(home, 1):
            shown = run_fuzz(tmp_path, "federation", "status", "--json")
            assert shown.code == 0, shown.err
            cloud = shown.json()["members"][0]
            assert cloud["reachable"] and cloud["queued_tasks"] == 0, cloud
            assert [(o["pool"], o["name"], o["price_per_hour"]) for o in cloud["offerings"]] \
                == [("cpu", "local", 0.0)], cloud
    finally:
        kill_agents(home)
