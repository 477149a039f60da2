"""The plan of a Fuzzfile: what would run, the same for every spelling of one workflow."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from fuzz.spec.fuzzfile_loader import load_fuzzfile, parse_fuzzfile
from fuzz.spec.fuzzfile_plan import workflow_plan
from tests.support.cliutil import run_fuzz

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
GiB = 2**30


def plan_of(text: str) -> dict[str, object]:
    """The plan of ``text`` (dedented), parsed as ``wf.yaml``."""
    return workflow_plan(parse_fuzzfile(textwrap.dedent(text).lstrip("\n"), "wf.yaml").fuzzfile)


def test_plan_of_the_every_field_example() -> None:
    plan = workflow_plan(load_fuzzfile(EXAMPLES / "fuzzball-example.yaml").fuzzfile)
    assert "version" not in json.dumps(plan)
    assert [job["name"] for job in plan["jobs"]] == ["untar", "ufs", "ncl"]
    untar, ufs, ncl = plan["jobs"]
    assert untar["argv"] == ["/bin/sh", "-c", "tar -xzf /data/simple-test-case.tar.gz -C /data"]
    assert untar["mounts"] == {"/data": "v1"}
    assert untar["policy"] == {"timeout_seconds": 1800.0, "attempts": 3}
    assert untar["dependencies"] == [] and untar["task_array"] is None
    assert ufs["image"] == {"uri": "docker://ghcr.io/example/ufs-weather-model:2.0",
                            "secret": "secret://user/ghcr"}
    assert ufs["argv"] == ["/opt/ufs/bin/ufs_model", "--config", "model_configure"]
    assert ufs["cwd"] == "/run_dir"
    assert ufs["environment"] == {"OMP_NUM_THREADS": "1", "ESMF_RUNTIME_COMPLIANCECHECK": "OFF"}
    assert ufs["resource"] == {
        "cores": 32, "affinity": "NUMA", "memory_bytes": 64 * 10**9, "devices": {},
        "exclusive": True, "sockets": 2, "threads": False, "annotations": {}}
    assert ufs["multinode"] == {"nodes": 128, "implementation": "openmpi",
                                "procs_per_node": None}
    assert ufs["dependencies"] == [{"name": "untar", "condition": "SUCCEEDED"}]
    assert ncl["argv"] == ["/.fuzz/script"]  # run by its #! line
    assert ncl["files"]["/.fuzz/script"].startswith("#!/bin/sh\nncl")
    assert ncl["mounts"] == {"/run_dir": "v1", "/archive": "archive"}
    assert ncl["resource"]["devices"] == {"nvidia.com/gpu": 1}
    assert ncl["task_array"] == {"start": 1, "end": 2, "concurrency": 2}
    v1, archive = plan["volumes"]
    assert (v1["name"], v1["scope"], v1["ephemeral"], v1["persistent_name"]) == (
        "v1", "user", True, None)
    assert v1["ingress"][1] == {
        "source": {"uri": "s3://ufs-inputs/fix/global.tar.gz", "secret": "secret://account/s3-read"},
        "destination": {"uri": "file://fix/global.tar.gz", "secret": None}, "policy": None}
    assert [move["destination"]["uri"] for move in v1["egress"]] == [
        "s3://ufs-results/plots/plot_1.png", "file:///srv/ufs/plots/plot_2.png"]
    assert (archive["ephemeral"], archive["persistent_name"]) == (False, "ufs-archive")
    assert plan["services"] == [] and plan["files"] == {} and plan["annotations"] == {}


def test_plan_is_json_and_stable() -> None:
    loaded = load_fuzzfile(EXAMPLES / "fuzzball-example.yaml")
    first = json.dumps(workflow_plan(loaded.fuzzfile))
    again = load_fuzzfile(EXAMPLES / "fuzzball-example.yaml")
    assert json.dumps(workflow_plan(again.fuzzfile)) == first
    assert json.loads(first) == workflow_plan(loaded.fuzzfile)


SPELLED_OUT = """
    version: v1
    volumes:
      work: {reference: volume://user/ephemeral}
    jobs:
      a:
        image: {uri: docker://alpine:3.20}
        command: [echo, "8"]
        env: [MODE=fast, OMP_NUM_THREADS=1]
        mounts: {work: {location: /work}}
        policy: {timeout: {execute: 1h}}
      b:
        image: {uri: docker://alpine:3.20}
        script: echo b
        env: [OMP_NUM_THREADS=1, MODE=slow]
        mounts: {work: {location: /work}}
        policy: {timeout: {execute: 1h}}
        depends-on: [{name: a, status: finished}]
"""

WITH_DEFAULTS = """
    version: v1
    defaults:
      job:
        env: [MODE=fast, OMP_NUM_THREADS=1]
        mounts: {work: {location: /work/}}
        policy: {timeout: {execute: 60m}}
    volumes:
      work: {name: work, reference: volume://user/ephemeral}
    jobs:
      b:
        image: {uri: docker://alpine:3.20}
        script: echo b
        env: [MODE=slow]
        depends-on: [{name: a}]
      a:
        name: a
        image: {uri: docker://alpine:3.20}
        command: [echo, 8]
"""


def test_two_spellings_of_one_workflow_have_one_plan() -> None:
    spelled_out = plan_of(SPELLED_OUT)
    assert plan_of(WITH_DEFAULTS) == spelled_out
    b = spelled_out["jobs"][1]
    # defaults merged by variable name: the job's own MODE wins, after the defaults' entries
    assert b["environment"] == {"OMP_NUM_THREADS": "1", "MODE": "slow"}
    assert b["dependencies"] == [{"name": "a", "condition": "FINISHED"}]


def test_a_different_meaning_is_a_different_plan() -> None:
    # requires waits for success, depends-on FINISHED for any end: not the same workflow
    requires = SPELLED_OUT.replace("depends-on: [{name: a, status: finished}]", "requires: [a]")
    assert plan_of(requires)["jobs"][1]["dependencies"] == [
        {"name": "a", "condition": "SUCCEEDED"}]
    assert plan_of(requires) != plan_of(SPELLED_OUT)
    by_core = plan_of(SPELLED_OUT.replace(
        "script: echo b", "script: echo b\n        resource: {cpu: {cores: 2}, memory:"
        " {size: 1GiB, by-core: true}}"))
    assert by_core["jobs"][1]["resource"]["memory_bytes"] == 2 * GiB


def test_validate_json_prints_the_plan(tmp_path: Path) -> None:
    example = EXAMPLES / "fuzzball-example.yaml"
    printed = run_fuzz(tmp_path, "workflow", "validate", "--json", str(example))
    assert printed.code == 0, printed.err
    result = printed.json()
    assert result["file"] == str(example) and result["valid"] is True
    assert result["jobs"] == ["untar", "ufs", "ncl"]  # what it printed before stays
    assert result["version"] == "v1"
    assert result["plan"] == workflow_plan(load_fuzzfile(example).fuzzfile)
