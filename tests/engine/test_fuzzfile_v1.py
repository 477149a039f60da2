"""The whole v1 dialect: every key of the reference parses, or is refused with its reason."""

from __future__ import annotations

import textwrap

import pytest

from fuzz.resources import NodeCapacity, ResourceRequest
from fuzz.spec.fuzzfile import Fuzzfile
from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.spec.problems import SpecError

GiB = 2**30


def parse(text: str) -> Fuzzfile:
    """``text`` (dedented) parsed as ``wf.yaml``."""
    return parse_fuzzfile(textwrap.dedent(text).lstrip("\n"), "wf.yaml").fuzzfile


def problems(text: str) -> list[str]:
    """The problem lines parsing ``text`` reports (it must fail)."""
    with pytest.raises(SpecError) as info:
        parse(text)
    return [str(problem) for problem in info.value.problems]


def test_files_defaults_annotations_and_volume_name() -> None:
    flow = parse("""
        version: v1
        files:
          params.csv: |
            alpha,beta
        annotations: {description: a sweep, stack: "2"}
        defaults:
          job:
            env: [OMP_NUM_THREADS=1, MODE=fast]
            mounts: {work: {location: /work}}
            policy: {timeout: {execute: 1h}}
            resource: {cpu: {cores: 2}, memory: {size: 2GiB}}
        volumes:
          work:
            name: work
            reference: volume://user/ephemeral
            ingress:
              - source: {uri: file://params.csv}
                destination: {uri: file://in/params.csv}
                policy: {timeout: {execute: 5m}, retry: {attempts: 2}}
        jobs:
          plain:
            name: plain
            image: {uri: docker://alpine:3.20}
            command: [blastp, -num_threads, 8, 0.5, true]
            annotations: {owner: lab}
          own:
            image: {uri: docker://alpine:3.20}
            command: ["true"]
            env: [MODE=slow]
            mounts: {work: {location: /data}}
            resource:
              cpu: {cores: 1}
              devices: {amd.com/gpu: 1}
              annotations: {nvidia.com/gpu.model: NVIDIA L4, gpu_compute_capability: 80}
    """)
    assert flow.files == {"params.csv": "alpha,beta\n"}
    assert flow.annotations == {"description": "a sweep", "stack": "2"}
    plain, own = flow.jobs["plain"], flow.jobs["own"]
    assert plain.argv() == ["blastp", "-num_threads", "8", "0.5", "true"]
    assert plain.annotations == {"owner": "lab"}
    assert plain.environment() == {"OMP_NUM_THREADS": "1", "MODE": "fast"}
    assert plain.mounts["work"].location == "/work"
    assert plain.policy.timeout.execute == 3600.0
    assert plain.resource.request() == ResourceRequest(cores=2, memory_bytes=2 * GiB)
    assert own.environment() == {"OMP_NUM_THREADS": "1", "MODE": "slow"}
    assert own.mounts["work"].location == "/data"
    assert own.policy.timeout.execute == 3600.0
    assert own.resource.request().devices == {"amd.com/gpu": 1}
    assert own.resource.annotations == {"nvidia.com/gpu.model": "NVIDIA L4",
                                        "gpu_compute_capability": "80"}
    move = flow.volumes["work"].ingress[0]
    assert move.source.inline_file == "params.csv" and move.destination.path == "in/params.csv"
    assert move.policy is not None and move.policy.retry.attempts == 2


@pytest.mark.parametrize(("reference", "scope", "ephemeral", "name"), [
    ("volume://user/ephemeral", "user", True, None),
    ("volume://user/ephemeral/scratch", "user", True, None),
    ("volume://user/persistent", "user", False, "persistent"),
    ("volume://user/persistent/data", "user", False, "data"),
    ("volume://account/persistent/shared", "account", False, "shared"),
    ("volume://group/persistent", "account", False, "persistent"),
])
def test_volume_reference_forms(reference: str, scope: str, ephemeral: bool,
                                name: str | None) -> None:
    volume = parse(f"""
        version: v1
        volumes: {{v: {{reference: "{reference}"}}}}
        jobs: {{a: {{image: {{uri: docker://alpine}}, command: ["true"]}}}}
    """).volumes["v"]
    assert (volume.scope, volume.ephemeral, volume.persistent_name) == (scope, ephemeral, name)


def test_depends_on_conditions_and_order() -> None:
    flow = parse("""
        version: v1
        jobs:
          c:
            image: {uri: docker://alpine}
            command: ["true"]
            depends-on: [{name: a, status: running}, {name: b, status: FINISHED,
                          description: whatever its result}]
          a: {image: {uri: docker://alpine}, command: ["true"]}
          b: {image: {uri: docker://alpine}, command: ["true"], depends-on: [{name: a,
              status: Started}]}
          d: {image: {uri: docker://alpine}, command: ["true"], requires: [c]}
    """)
    assert flow.jobs["c"].dependencies() == [("a", "RUNNING"), ("b", "FINISHED")]
    assert flow.jobs["b"].dependencies() == [("a", "RUNNING")]
    assert flow.jobs["d"].dependencies() == [("c", "SUCCEEDED")]
    assert flow.job_order() == ["a", "b", "c", "d"]


def test_secret_scopes_are_kept() -> None:
    flow = parse("""
        version: v1
        jobs:
          a:
            image: {uri: docker://alpine, secret: secret://account/registry}
            command: ["true"]
    """)
    image = flow.jobs["a"].image
    assert (image.secret_scope, image.secret_name) == ("account", "registry")


def test_services_are_parsed_and_held() -> None:
    flow = parse("""
        version: v1
        services:
          web:
            image: {uri: docker://nginx:1.27}
            command: [nginx, -g, daemon off;]
            persist: true
            network:
              ports: [{name: ui, port: 8080, protocol: TCP}]
              endpoints: [{name: site, port-name: ui, protocol: HTTP, type: path, scope: user}]
            readiness-probe:
              http-get: {path: /, port: 8080, scheme: http}
              period-seconds: 5
        jobs:
          client:
            image: {uri: docker://alpine}
            command: [wget, http://web.svc:8080]
            depends-on: [{name: web, status: RUNNING}]
    """)
    web = flow.services["web"]
    assert web.persist and web.network.ports[0].protocol == "tcp"
    assert web.network.endpoints[0].protocol == "http"
    probe = web.readiness_probe
    assert probe is not None and probe.http_get is not None and probe.http_get.scheme == "HTTP"
    assert (probe.period_seconds, probe.failure_threshold) == (5, 3)
    assert flow.job_order() == ["client"]


HEAD = "version: v1\njobs:\n  a:\n    image: {uri: docker://alpine}\n"


@pytest.mark.parametrize(("body", "expected"), [
    ('    command: ["true"]\n    requires: [b]\n    depends-on: [{name: b}]\n'
     "  b: {image: {uri: docker://alpine}, command: [\"true\"]}\n",
     "wf.yaml:7:17: jobs.a.depends-on: give requires or depends-on, not both (Fuzzball ignores"
     " requires beside depends-on)"),
    ('    command: ["true"]\n    depends-on: [{name: b, status: ERROR}]\n'
     "  b: {image: {uri: docker://alpine}, command: [\"true\"]}\n",
     "wf.yaml:6:36: jobs.a.depends-on[0].status: status 'ERROR' (Fuzzball v3.0) is not"
     " supported: use FINISHED (whatever the result) or RUNNING"),
    ('    command: ["true"]\n    depends-on: [{name: b}]\n',
     "wf.yaml:6:25: jobs.a.depends-on: unknown job 'b'"),
    ('    command: ["true"]\n    depends-on: [{name: a, status: RUNNING}]\n',
     "wf.yaml:6:25: jobs.a.depends-on: a job cannot depend on itself"),
    ('    command: ["true"]\n    name: b\n',
     "wf.yaml:6:11: jobs.a.name: must be the job's key 'a' (or be left out)"),
    ('    command: ["true"]\n    files: {/etc/x.conf: file://x.conf}\n',
     "wf.yaml:6:26: jobs.a.files./etc/x.conf: 'file://x.conf' names no entry of the"
     " top-level files (none declared)"),
    ('    command: [echo, {a: 1}]\n',
     "wf.yaml:5:21: jobs.a.command[1]: must be a string"),
])
def test_v1_problem(body: str, expected: str) -> None:
    assert problems(HEAD + body) == [expected]


def test_service_problems() -> None:
    found = problems("""
        version: v1
        services:
          web:
            image: {uri: docker://nginx}
            command: [nginx]
            network:
              ports: [{name: ui, port: 80, protocol: UDP}]
              endpoints: [{name: site, port-name: web}]
            readiness-probe: {period-seconds: 5}
        jobs:
          a: {image: {uri: docker://alpine}, command: ["true"]}
    """)
    assert found == [
        "wf.yaml:7:7: services.web.network: endpoint 'site' names port 'web', which is not"
        " in ports (ui)",
        "wf.yaml:9:22: services.web.readiness-probe: give exactly one of exec, http-get,"
        " tcp-socket or grpc",
    ]


NOT_RUN = """
    version: v1
    defaults:
      job: {resource: {cpu: {cores: 1, sockets: 1}}}
    volumes:
      shared:
        reference: volume://account/persistent/lab
        ingress:
          - source: {uri: "s3://bucket/x", secret: secret://account/s3}
            destination: {uri: file://x}
            policy: {timeout: {execute: 5m}}
    services:
      web:
        image: {uri: docker://nginx}
        command: [nginx]
        readiness-probe: {grpc: {port: 9000}}
    jobs:
      a:
        image: {uri: docker://alpine, secret: secret://account/registry}
        command: ["true"]
        files: {/etc/a.conf: "x = 1"}
        resource:
          cpu: {cores: 1, threads: true}
          annotations: {nvidia.com/gpu.model: NVIDIA L4}
"""


def test_a_start_refuses_what_is_not_run_yet_and_says_why() -> None:
    text = textwrap.dedent(NOT_RUN).lstrip("\n")
    assert parse_fuzzfile(text, "wf.yaml").fuzzfile.services  # valid: validate accepts it
    with pytest.raises(SpecError) as info:
        parse_fuzzfile(text, "wf.yaml", for_start=True)
    lines = [str(problem) for problem in info.value.problems]
    assert lines == [
        "wf.yaml:15:23: services.web.readiness-probe.grpc: grpc readiness probes are not run"
        " yet: use exec, http-get or tcp-socket",
    ]


def test_default_resource_is_checked_against_the_cluster() -> None:
    text = textwrap.dedent("""
        version: v1
        defaults:
          job: {resource: {cpu: {cores: 64}}}
        jobs:
          a: {image: {uri: docker://alpine}, command: ["true"]}
          b: {image: {uri: docker://alpine}, command: ["true"], resource: {cpu: {cores: 1}}}
    """).lstrip("\n")
    with pytest.raises(SpecError) as info:
        parse_fuzzfile(text, "wf.yaml", [NodeCapacity("n1", cores=4, memory_bytes=8 * GiB)])
    assert [str(p) for p in info.value.problems] == [
        "wf.yaml:5:3: jobs.a.resource: needs 64 cores; the largest node has 4"]


def test_affinity_matches_in_any_case() -> None:
    flow = parse("""
        version: v1
        jobs:
          a: {image: {uri: docker://alpine}, command: ["true"], resource: {cpu: {affinity: numa}}}
          b: {image: {uri: docker://alpine}, command: ["true"], resource: {cpu: {affinity: Socket}}}
    """)
    assert [job.resource.request().affinity for job in flow.jobs.values()] == ["NUMA", "SOCKET"]


def test_a_leading_slash_in_a_volume_path_is_the_volume_root() -> None:
    volume = parse("""
        version: v1
        volumes:
          data:
            reference: volume://user/ephemeral
            ingress:
              - source: {uri: https://example.org/in.tar.gz}
                destination: {uri: file:///inputs//in.tar.gz}
            egress:
              - source: {uri: file:///results/out.tar.gz}
                destination: {uri: s3://bucket/out.tar.gz}
        jobs:
          a: {image: {uri: docker://alpine}, command: ["true"], mounts: {data: {location: /d}}}
    """).volumes["data"]
    into, out = volume.ingress[0].destination, volume.egress[0].source
    assert (into.path, into.uri) == ("inputs/in.tar.gz", "file://inputs/in.tar.gz")
    assert (out.path, out.uri) == ("results/out.tar.gz", "file://results/out.tar.gz")


@pytest.mark.parametrize(("uri", "message"), [
    ("file:///", "'file:///' names no path inside the volume"),
    ("file:///../etc/passwd", "'file:///../etc/passwd' must not leave the volume ('..')"),
])
def test_volume_root_paths_stay_inside_the_volume(uri: str, message: str) -> None:
    assert problems(f"""
        version: v1
        volumes:
          data:
            reference: volume://user/ephemeral
            ingress: [{{source: {{uri: https://example.org/x}}, destination: {{uri: "{uri}"}}}}]
        jobs:
          a: {{image: {{uri: docker://alpine}}, command: ["true"]}}
    """) == [f"wf.yaml:5:73: volumes.data.ingress[0].destination.uri: {message}"]


SERVICES_ONLY = """
    version: v1
    services:
      web:
        image: {uri: docker://nginx:1.27}
        command: [nginx]
        depends-on: [{name: cache, status: RUNNING}]
"""


def test_services_alone_are_a_valid_workflow_that_a_start_takes() -> None:
    assert problems(SERVICES_ONLY) == [
        "wf.yaml:6:25: services.web.depends-on: unknown job or service 'cache'"]
    text = textwrap.dedent(SERVICES_ONLY).lstrip("\n").replace(
        "    depends-on: [{name: cache, status: RUNNING}]\n", "")
    flow = parse_fuzzfile(text, "wf.yaml").fuzzfile
    assert list(flow.services) == ["web"] and flow.jobs == {} and flow.job_order() == []
    assert list(parse_fuzzfile(text, "wf.yaml", for_start=True).fuzzfile.services) == ["web"]


def test_a_workflow_needs_a_job_or_a_service() -> None:
    assert problems("""
        version: v1
        volumes: {v: {reference: volume://user/ephemeral}}
    """) == ["wf.yaml:1:1: jobs: a workflow needs at least one job or service"]


def test_args_are_passed_to_a_script() -> None:
    job = parse("""
        version: v1
        jobs:
          a:
            image: {uri: docker://alpine}
            script: |
              #!/bin/sh
              echo "$1 $2"
            args: [alpha, 2]
    """).jobs["a"]
    # a #! line: the script is placed as a file and run by it, args as $1 $2 (as Fuzzball)
    assert job.argv() == ["/.fuzz/script", "alpha", "2"]


def test_a_script_with_an_interpreter_line_is_placed_as_a_file_and_one_without_runs_in_sh(
        ) -> None:
    flow = parse("""
        version: v1
        files: {tool.py: "print(1)"}
        jobs:
          py:
            image: {uri: docker://python:3.12}
            script: |
              #!/usr/bin/env python3
              print("hi")
            files: {/opt/tool.py: file://tool.py}
          sh:
            image: {uri: docker://alpine}
            script: echo "$1"
            args: [x]
          cmd: {image: {uri: docker://alpine}, command: ["true"]}
    """)
    assert flow.jobs["py"].argv() == ["/.fuzz/script"]
    assert flow.placed_files(flow.jobs["py"]) == (
        ("/opt/tool.py", b"print(1)"),
        ("/.fuzz/script", b'#!/usr/bin/env python3\nprint("hi")\n'))
    assert flow.jobs["sh"].argv() == ["/bin/sh", "-c", 'echo "$1"', "/bin/sh", "x"]
    assert flow.placed_files(flow.jobs["sh"]) == ()
    assert flow.placed_files(flow.jobs["cmd"]) == ()


RESERVED = ("fuzz keeps /.fuzz for itself (a job's script runs from /.fuzz/script); choose"
            " another path")


def test_the_scripts_directory_is_kept_from_files_and_mounts() -> None:
    assert problems("""
        version: v1
        volumes: {v: {reference: volume://user/ephemeral}}
        jobs:
          a:
            image: {uri: docker://alpine}
            command: ["true"]
            files: {/.fuzz/script: "x", /.fuzz: "y"}
            mounts: {v: {location: /.fuzz/in}}
    """) == [f"wf.yaml:7:13: jobs.a.files./.fuzz/script: /.fuzz/script: {RESERVED}",
             f"wf.yaml:7:33: jobs.a.files./.fuzz: /.fuzz: {RESERVED}",
             f"wf.yaml:8:28: jobs.a.mounts.v.location: /.fuzz/in: {RESERVED}"]


def test_secret_references_in_env_are_started_and_listed_per_job() -> None:
    text = textwrap.dedent("""
        version: v1
        defaults:
          job: {env: [TOKEN=secret://user/TOKEN]}
        jobs:
          a:
            image: {uri: docker://alpine}
            command: [env]
            env: [PLAIN=x, NGC_API_KEY=secret://account/NGC_API_KEY]
    """).lstrip("\n")
    job = parse_fuzzfile(text, "wf.yaml", for_start=True).fuzzfile.jobs["a"]
    assert job.environment()["PLAIN"] == "x"
    assert job.env_secrets() == {"TOKEN": "secret://user/TOKEN",
                                 "NGC_API_KEY": "secret://account/NGC_API_KEY"}
