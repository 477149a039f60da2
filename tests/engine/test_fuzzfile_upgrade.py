"""``upgrade_text``: v1 → v4 changes only what v4 writes differently, and every example
workflow keeps its plan."""

from __future__ import annotations

import difflib
import itertools
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.spec.fuzzfile_plan import workflow_plan
from fuzz.spec.fuzzfile_upgrade import AlreadyV4, upgrade_text
from fuzz.spec.problems import SpecError

ROOT = Path(__file__).resolve().parents[2]

REFERENCE_V1 = """\
version: v1
files:
  params.csv: |
    alpha,beta
    0.1,2
defaults:
  job:
    mounts:
      work: {location: /work}
    env: [OMP_NUM_THREADS=1]
    policy: {timeout: {execute: 1h}}
volumes:
  work:
    reference: volume://user/ephemeral
    ingress:
      - source: {uri: "https://data.example.org/mesh.tar.gz"}
        destination: {uri: "file://in/mesh.tar.gz"}
      - source: {uri: "file://params.csv"}
        destination: {uri: "file://in/params.csv"}
    egress:
      - source: {uri: "file://out/result.tar.gz"}
        destination: {uri: "s3://my-bucket/runs/result.tar.gz", secret: "secret://user/S3_RW"}
jobs:
  unpack:
    image: {uri: "docker://alpine:3.20"}
    cwd: /work
    command: [/bin/sh, -c, "mkdir -p out && tar xzf in/mesh.tar.gz -C out"]
    resource: {cpu: {cores: 1}, memory: {size: 1GiB}}
  solve:
    image: {uri: "oras://registry.example.org/cfd/solver.sif:3.2"}
    cwd: /work/out
    script: |
      #!/bin/sh
      solver --case . --params /work/in/params.csv
    multinode: {nodes: 2, implementation: openmpi}
    resource: {cpu: {cores: 32, affinity: NUMA}, memory: {size: 64GiB}}
    policy: {timeout: {execute: 8h}}
    depends-on: [{name: unpack, status: FINISHED}]
  sweep:
    image: {uri: "docker://python:3.12-slim"}
    command: [python3, /work/out/post.py, --case, "$FB_TASK_ID"]
    task-array: {start: 1, end: 40, concurrency: 10}
    resource: {cpu: {cores: 2}, memory: {size: 4GiB}}
    requires: [solve]
  pack:
    image: {uri: "docker://alpine:3.20"}
    cwd: /work
    command: [tar, czf, out/result.tar.gz, out]
    resource: {cpu: {cores: 1}, memory: {size: 1GiB}}
    depends-on: [{name: sweep, status: FINISHED}]
"""
"""The complete v1 example of the Fuzzfile reference (§2.9)."""

REFERENCE_V4 = """\
version: v4
volumes:
  models: {name: llm-weights}
  scratch: {use: ephemeral, size: 50GB}
defaults:
  job:
    mounts:
      /scratch: {volume: scratch}
services:
  api:
    image: {uri: "docker://vllm/vllm-openai:v0.13.0"}
    network:
      host: true
      ports: [{name: http, port: 18000, protocol: tcp}]
      endpoints:
        - {name: openai, port-name: http, protocol: http, type: subdomain, scope: group}
    mounts:
      /models: {volume: models}
    env: [HF_TOKEN=secret://user/HF_TOKEN]
    script: |
      #!/bin/sh
      exec vllm serve /models/my-model --port 18000
    readiness-probe:
      http-get: {path: /v1/models, port: 18000, scheme: HTTP}
      initial-delay-seconds: 30
      period-seconds: 10
      failure-threshold: 30
    resource:
      cpu: {cores: 8}
      memory: {size: 48GiB}
      devices: {nvidia.com/gpu: 1}
    persist: false
jobs:
  bench:
    image: {uri: "docker://curlimages/curl:8.10.1"}
    script: |
      #!/bin/sh
      curl -s http://api.svc:18000/v1/models > /scratch/models.json
    resource: {cpu: {cores: 1}, memory: {size: 512MiB}}
    depends-on: [{name: api, status: RUNNING}]
"""
"""The complete v4 example of the Fuzzfile reference (§3.7)."""


def _documented_fuzzfiles() -> list[tuple[str, str]]:
    """(where, text) of each v1 Fuzzfile in examples/, README.md and docs/*.md."""
    found = [(str(path.relative_to(ROOT)), path.read_text())
             for path in sorted((ROOT / "examples" / "workflows").glob("*.yaml"))]
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for index, block in enumerate(re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S)):
            data = yaml.safe_load(block)
            if isinstance(data, dict) and data.get("version") == "v1":
                found.append((f"{page.relative_to(ROOT)} yaml block {index}", block))
    return found


EXAMPLES = [*_documented_fuzzfiles(), ("reference §2.9", REFERENCE_V1)]
CHANGED = re.compile(r"^\s*(version: v4|/\S+:( \{volume: \S+\})?|volume: \S+|.*\{volume: .*)$")
"""What a line the upgrade changed may read: the version, a mount keyed by path."""


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_every_example_upgrades_to_the_same_plan(where: str, text: str) -> None:
    upgraded = upgrade_text(text, where)
    original = parse_fuzzfile(text, where).fuzzfile
    again = parse_fuzzfile(upgraded, where).fuzzfile
    assert (original.version, again.version) == ("v1", "v4")
    assert workflow_plan(again) == workflow_plan(original)
    added = [line[1:] for line in difflib.unified_diff(
        text.splitlines(), upgraded.splitlines(), lineterm="", n=0)
        if line.startswith("+") and not line.startswith("+++")]
    assert added and all(CHANGED.match(line) for line in added), added
    with pytest.raises(AlreadyV4, match=f"{re.escape(where)} is already v4"):
        upgrade_text(upgraded, where)


def test_the_documents_hold_examples() -> None:
    assert len(EXAMPLES) >= 4  # three under examples/, the reference's, docs/fuzzfile.md's


def test_the_reference_v4_example_validates() -> None:
    flow = parse_fuzzfile(REFERENCE_V4, "v4.yaml").fuzzfile
    plan = workflow_plan(flow)
    assert plan["jobs"][0]["mounts"] == {"/scratch": "scratch"}
    assert plan["jobs"][0]["dependencies"] == [{"name": "api", "condition": "RUNNING"}]
    assert plan["services"][0]["mounts"] == {"/models": "models"}
    assert plan["services"][0]["network"]["host"] is True
    assert [(v["name"], v["ephemeral"], v["persistent_name"]) for v in plan["volumes"]] == [
        ("models", False, "llm-weights"), ("scratch", True, None)]


LAYOUT = """\
# a comment on top
version: "v1"   # the dialect

volumes:
  work: {name: work, reference: volume://user/ephemeral}
  kept: {reference: 'volume://user/persistent/kept', name: kept}
  data:
    name: data        # repeats the key
    reference: volume://user/persistent/data
defaults:
  job:
    mounts: &shared
      work: {location: /work}
jobs:
  first:
    image: {uri: docker://alpine:3.20}
    command: [ls]
  second:
    image: {uri: docker://alpine:3.20}
    command: [ls]
    mounts: *shared
  third:
    image: {uri: docker://alpine:3.20}
    command: [ls]
    mounts:
      # the data
      data:
        location: "/data/in"    # where it appears
      work:
          location: /work
    requires: [first]
services:
  svc:
    image: {uri: docker://alpine:3.20}
    command: [sleep, "60"]
    mounts: {kept: {location: /kept}}
"""

LAYOUT_V4 = """\
# a comment on top
version: "v4"   # the dialect

volumes:
  work: {reference: volume://user/ephemeral}
  kept: {reference: 'volume://user/persistent/kept'}
  data:
    reference: volume://user/persistent/data
defaults:
  job:
    mounts: &shared
      /work: {volume: work}
jobs:
  first:
    image: {uri: docker://alpine:3.20}
    command: [ls]
  second:
    image: {uri: docker://alpine:3.20}
    command: [ls]
    mounts: *shared
  third:
    image: {uri: docker://alpine:3.20}
    command: [ls]
    mounts:
      # the data
      "/data/in":
        volume: data    # where it appears
      /work:
          volume: work
    requires: [first]
services:
  svc:
    image: {uri: docker://alpine:3.20}
    command: [sleep, "60"]
    mounts: {/kept: {volume: kept}}
"""


def test_upgrade_keeps_comments_order_quotes_layout_and_aliases() -> None:
    assert upgrade_text(LAYOUT, "wf.yaml") == LAYOUT_V4
    upgraded = parse_fuzzfile(LAYOUT_V4, "wf.yaml").fuzzfile
    # requires stays: it waits for success, where depends-on FINISHED waits for any end
    assert upgraded.jobs["third"].dependencies() == [("first", "SUCCEEDED")]
    assert upgraded.jobs["second"].mounts["work"].location == "/work"


def test_upgrade_refuses_an_invalid_file_with_its_problems() -> None:
    with pytest.raises(SpecError) as info:
        upgrade_text("version: v1\njobs:\n  a:\n    command: [ls]\n", "wf.yaml")
    assert [str(problem) for problem in info.value.problems] == [
        "wf.yaml:3:3: jobs.a.image: required field missing"]


def test_upgrade_refuses_a_merge_key_in_mounts() -> None:
    text = textwrap.dedent("""\
        version: v1
        volumes:
          work: {reference: volume://user/ephemeral}
        defaults:
          job:
            mounts: &base {work: {location: /work}}
        jobs:
          a:
            image: {uri: docker://alpine:3.20}
            command: [ls]
            mounts:
              <<: *base
    """)
    with pytest.raises(SpecError) as info:
        upgrade_text(text, "wf.yaml")
    assert str(info.value) == (
        "wf.yaml:12:7: a YAML merge key ('<<') in mounts: upgrade these mounts by hand")


def _doc_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "fuzzfile.md").read_text(), re.S)


def test_the_documented_pair_is_what_the_upgrade_writes() -> None:
    blocks = _doc_blocks()
    pairs = [(old, new) for old, new in itertools.pairwise(blocks)
             if old.startswith("version: v1") and new.startswith("version: v4")]
    assert pairs, "docs/fuzzfile.md shows a v1 file and its upgrade"
    for old, new in pairs:
        assert upgrade_text(old, "doc.yaml") == new
        native = new.replace("  work:\n    reference: volume://user/ephemeral",
                             "  work: {use: ephemeral}").replace(
            "{reference: volume://user/persistent/results}", "{name: results}")
        assert native != new
        assert workflow_plan(parse_fuzzfile(native, "doc.yaml").fuzzfile) == workflow_plan(
            parse_fuzzfile(old, "doc.yaml").fuzzfile)


def test_every_documented_v4_file_validates() -> None:
    v4 = [block for block in _doc_blocks() if block.startswith("version: v4")]
    assert v4
    for block in v4:
        assert parse_fuzzfile(block, "doc.yaml").fuzzfile.version == "v4"


def test_upgrade_refuses_an_alias_inside_a_mount() -> None:
    text = textwrap.dedent("""\
        version: v1
        volumes:
          work: {reference: volume://user/ephemeral}
        jobs:
          a:
            image: {uri: docker://alpine:3.20}
            command: [ls, &where /work]
            mounts: {work: {location: *where}}
    """)
    with pytest.raises(SpecError) as info:
        upgrade_text(text, "wf.yaml")
    assert str(info.value) == (
        "wf.yaml:8:14: a YAML alias inside a mount: upgrade this mount by hand")


def test_upgrade_drops_a_services_legacy_export() -> None:
    text = textwrap.dedent("""\
        version: v1
        services:
          web:
            image: {uri: docker://nginx:1.27}
            export: workflow  # early catalog syntax
            command: [nginx]
          api: {image: {uri: docker://nginx:1.27}, export: WORKFLOW, command: [nginx]}
        jobs:
          a: {image: {uri: docker://alpine:3.20}, command: ["true"]}
        """)
    assert upgrade_text(text, "wf.yaml") == textwrap.dedent("""\
        version: v4
        services:
          web:
            image: {uri: docker://nginx:1.27}
            command: [nginx]
          api: {image: {uri: docker://nginx:1.27}, command: [nginx]}
        jobs:
          a: {image: {uri: docker://alpine:3.20}, command: ["true"]}
        """)
