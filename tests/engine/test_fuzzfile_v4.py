"""The v4 dialect: mounts keyed by path, the v4 volume and service keys, and the errors
of a v1 form in a v4 file (and of a v4 form in a v1 file), each at its file:line:col."""

from __future__ import annotations

import textwrap

import pytest

from fuzz.spec.cluster import LimitsSpec
from fuzz.spec.fuzzfile import Fuzzfile, VolumeSpec
from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.spec.fuzzfile_plan import workflow_plan
from fuzz.spec.problems import SpecError


def parse(text: str, *, for_start: bool = False) -> Fuzzfile:
    """``text`` (dedented) parsed as ``wf.yaml``."""
    return parse_fuzzfile(textwrap.dedent(text).lstrip("\n"), "wf.yaml",
                          for_start=for_start).fuzzfile


def problems(text: str, *, for_start: bool = False) -> list[str]:
    """The problem lines parsing ``text`` reports (it must fail)."""
    with pytest.raises(SpecError) as info:
        parse(text, for_start=for_start)
    return [str(problem) for problem in info.value.problems]


def test_v4_mounts_long_and_short_form_in_jobs_and_defaults() -> None:
    flow = parse("""
        version: v4
        volumes:
          scratch: {reference: volume://user/ephemeral}
          data: {reference: volume://user/persistent/data}
        defaults:
          job:
            mounts:
              /scratch: {volume: scratch}
        jobs:
          a:
            image: {uri: docker://alpine:3.20}
            command: [ls, /scratch]
          b:
            image: {uri: docker://alpine:3.20}
            command: [ls, /data]
            mounts:
              /data//in/: data
              /scratch: {volume: scratch}
    """)
    assert flow.version == "v4"
    assert {name: mount.location for name, mount in flow.jobs["a"].mounts.items()} == {
        "scratch": "/scratch"}
    assert {name: mount.location for name, mount in flow.jobs["b"].mounts.items()} == {
        "data": "/data/in", "scratch": "/scratch"}


def test_the_same_workflow_in_both_dialects_is_one_model() -> None:
    v1 = parse("""
        version: v1
        volumes:
          work: {reference: volume://user/ephemeral}
        jobs:
          a:
            image: {uri: docker://alpine:3.20}
            command: [ls]
            mounts: {work: {location: /work}}
    """)
    v4 = parse("""
        version: v4
        volumes:
          work: {use: ephemeral}
        jobs:
          a:
            image: {uri: docker://alpine:3.20}
            command: [ls]
            mounts: {/work: work}
    """)
    assert type(v1) is type(v4) is Fuzzfile
    assert v1.jobs == v4.jobs and workflow_plan(v1) == workflow_plan(v4)
    assert (v1.version, v4.version) == ("v1", "v4")


VOLUMES = """
    version: v4
    volumes:
      fresh: {}
      scratch: {use: ephemeral}
      mine: {use: persistent}
      models: {name: llm-weights}
      results: {use: persistent, name: project-results}
      kept: {reference: volume://user/persistent/old, name: kept}
    jobs:
      a:
        image: {uri: docker://alpine:3.20}
        command: [ls]
"""


def test_v4_volume_resolution_onto_fuzz_volumes() -> None:
    volumes = parse(VOLUMES).volumes

    def kind(volume: VolumeSpec) -> tuple[str, bool, str | None]:
        return volume.scope, volume.ephemeral, volume.persistent_name

    assert {name: kind(volume) for name, volume in volumes.items()} == {
        "fresh": ("user", True, None),
        "scratch": ("user", True, None),
        "mine": ("user", False, "persistent"),
        "models": ("user", False, "llm-weights"),
        "results": ("user", False, "project-results"),
        "kept": ("user", False, "old"),
    }
    assert volumes["models"].reference == "volume://user/persistent/llm-weights"


def test_v4_volume_errors() -> None:
    assert problems("""
        version: v4
        volumes:
          nfs: {use: shared-nfs}
          both: {reference: volume://user/ephemeral, use: ephemeral}
          fresh: {use: ephemeral, name: genomes}
          echo: {reference: volume://user/ephemeral, name: other}
          bad: {name: ../etc}
          odd: {size: lots}
        jobs:
          a:
            image: {uri: docker://alpine:3.20}
            command: [ls]
    """) == [
        "wf.yaml:3:14: volumes.nfs.use: fuzz has no storage provisioners, so use 'shared-nfs'"
        " names none here: use ephemeral (a new volume for the run) or persistent (with name:"
        " one of your persistent volumes)",
        "wf.yaml:4:51: volumes.both.use: give reference (the v1 way) or use, not both",
        "wf.yaml:5:33: volumes.fresh.name: name names an existing persistent volume, but use:"
        " ephemeral asks for a new ephemeral one: leave one of them out",
        "wf.yaml:6:52: volumes.echo.name: beside reference, name is the v1 echo of the key and"
        " must be 'echo'; to choose the persistent volume 'other', leave reference out",
        "wf.yaml:7:15: volumes.bad.name: invalid persistent volume name '../etc': use 1-63"
        " letters, digits, '.', '_' or '-', starting with a letter or digit",
        "wf.yaml:8:15: volumes.odd.size: invalid size 'lots': use e.g. 512MiB, 12GB",
    ]


SIZED = """
    version: v4
    volumes:
      scratch:
        use: ephemeral
        size: 200GB
        annotations: {tier: fast}
    jobs:
      a:
        image: {uri: docker://alpine:3.20}
        command: [ls]
        mounts: {/scratch: scratch}
"""


def test_v4_size_is_the_volumes_limit_and_annotations_are_refused_at_start() -> None:
    volume = parse(SIZED).volumes["scratch"]
    assert (volume.size, volume.annotations) == (200 * 10**9, {"tier": "fast"})
    assert workflow_plan(parse(SIZED))["volumes"][0]["size_bytes"] == 200 * 10**9
    assert problems(SIZED, for_start=True) == [
        "wf.yaml:6:5: volumes.scratch.annotations: not honoured: fuzz has no storage"
        " provisioners to select by annotations; leave them out",
    ]
    # the cluster's limit caps a size: next to a cluster spec, validate (and a start) say so
    with pytest.raises(SpecError) as info:
        parse_fuzzfile(textwrap.dedent(SIZED).lstrip("\n"), "wf.yaml",
                       limits=LimitsSpec(volume_bytes="100GiB"))
    assert str(info.value) == (
        "wf.yaml:5:11: volumes.scratch.size: 200GB is more than one volume may hold here,"
        " 100.0 GiB (orchestrator.limits.volume_bytes)")


def test_v4_size_is_for_ephemeral_volumes() -> None:
    message = ("size sizes a new ephemeral volume; a persistent volume keeps the size it has:"
               " leave size out")
    assert problems("""
        version: v4
        volumes:
          named: {name: data, size: 1GB}
          mine: {use: persistent, size: 1GB}
          old: {reference: volume://user/persistent/x, size: 1GB}
          fine: {reference: volume://user/ephemeral, size: 1GB}
        jobs:
          a:
            image: {uri: docker://alpine:3.20}
            command: [ls]
    """) == [f"wf.yaml:3:29: volumes.named.size: {message}",
             f"wf.yaml:4:33: volumes.mine.size: {message}",
             f"wf.yaml:5:54: volumes.old.size: {message}"]


def test_v4_mount_errors_each_at_its_place() -> None:
    assert problems("""
        version: v4
        volumes:
          data: {use: ephemeral}
          other: {use: ephemeral}
        defaults:
          job:
            mounts:
              data: {location: /data}
        jobs:
          a:
            image: {uri: docker://alpine:3.20}
            command: [ls]
            mounts:
              /d: {volume: nope}
              /n: 3
              rel: data
              /: other
              /x: {volume: data, mode: ro}
          b:
            image: {uri: docker://alpine:3.20}
            command: [ls]
            mounts:
              /one: data
              /two: {volume: data}
          c:
            image: {uri: docker://alpine:3.20}
            command: [ls]
            mounts:
              /same: data
              /same/: other
    """) == [
        "wf.yaml:8:7: defaults.job.mounts.data: the v1 mount form (VOLUME: {location: PATH}):"
        " in v4 a mount is keyed by its path, /data: {volume: data}",
        "wf.yaml:14:20: jobs.a.mounts./d.volume: unknown volume 'nope' (declared: data, other)",
        "wf.yaml:15:11: jobs.a.mounts./n: must be a volume name or {volume: NAME}",
        "wf.yaml:16:7: jobs.a.mounts.rel: 'rel' is not a container path: a v4 mount is keyed by"
        " the absolute path where the volume appears (/PATH: {volume: NAME})",
        "wf.yaml:17:7: jobs.a.mounts./: cannot mount a volume over '/'",
        "wf.yaml:18:26: jobs.a.mounts./x.mode: unknown key 'mode'",
        "wf.yaml:24:13: jobs.b.mounts./two: volume 'data' is already mounted at /one: fuzz"
        " mounts a volume at one path per job or service",
        "wf.yaml:29:7: jobs.c.mounts: volumes 'data' and 'other' are both mounted at /same",
    ]


def test_v1_forms_in_v4_and_v4_forms_in_v1_are_named() -> None:
    assert problems("""
        version: v1
        volumes:
          data: {reference: volume://user/ephemeral, use: ephemeral, size: 1GB}
          bare: {annotations: {tier: fast}}
          none: {}
        services:
          api:
            image: {uri: docker://alpine:3.20}
            command: [sleep, "60"]
            network: {host: true}
            policy: {timeout: {execute: 1h}}
        jobs:
          a:
            image: {uri: docker://alpine:3.20}
            command: [ls]
            mounts:
              /data: {volume: data}
    """) == [
        "wf.yaml:3:46: volumes.data.use: v4 only (version: v4); a v1 volume is chosen by"
        " reference: volume://user/ephemeral or volume://user/persistent/NAME",
        "wf.yaml:3:62: volumes.data.size: v4 only (version: v4); a v1 volume has no size",
        "wf.yaml:4:10: volumes.bare.annotations: v4 only (version: v4); a v1 volume is chosen"
        " by reference alone",
        "wf.yaml:5:3: volumes.none.reference: required field missing",
        "wf.yaml:10:15: services.api.network.host: v4 only (version: v4); v1 services have no"
        " host network",
        "wf.yaml:11:5: services.api.policy: v4 only (version: v4); v1 services have no policy",
        "wf.yaml:17:7: jobs.a.mounts./data: a mount keyed by its path is the v4 form (version:"
        " v4); in v1 write data: {location: /data}",
    ]


def test_v4_services_with_host_network_and_policy_validate() -> None:
    text = """
        version: v4
        volumes:
          models: {name: llm-weights}
        services:
          api:
            image: {uri: "docker://vllm/vllm-openai:v0.13.0"}
            network:
              host: true
              ports: [{name: http, port: 18000, protocol: tcp}]
            policy: {timeout: {execute: 2h}}
            mounts: {/models: {volume: models}}
            script: exec vllm serve /models/m
        jobs:
          bench:
            image: {uri: "docker://curlimages/curl:8.10.1"}
            command: [curl, "http://api.svc:18000/v1/models"]
            depends-on: [{name: api, status: RUNNING}]
    """
    service = parse(text).services["api"]
    assert service.network.host is True
    assert service.policy is not None and service.policy.timeout.execute == 7200
    assert workflow_plan(parse(text))["services"][0]["policy"] == {
        "timeout_seconds": 7200.0, "attempts": 1}
    assert service.mounts["models"].location == "/models"
    assert list(parse(text, for_start=True).services) == ["api"]  # services run


def test_v4_keeps_the_v1_key_set_for_jobs() -> None:
    flow = parse("""
        version: v4
        jobs:
          a:
            image: {uri: docker://alpine:3.20}
            command: [ls]
          b:
            name: b
            image: {uri: docker://alpine:3.20}
            command: [ls]
            requires: [a]
    """)
    assert flow.jobs["b"].dependencies() == [("a", "SUCCEEDED")]


def test_a_job_file_under_a_v4_mount_collides_as_in_v1() -> None:
    assert problems("""
        version: v4
        volumes:
          data: {use: ephemeral}
        defaults:
          job:
            mounts: {/data/: data}
        jobs:
          a:
            image: {uri: docker://alpine:3.20}
            command: [ls]
            files:
              /data/in.txt: hello
          b:
            image: {uri: docker://alpine:3.20}
            command: [ls]
            mounts:
              /other: {volume: data}
            files:
              /other: hello
    """) == [
        "wf.yaml:12:7: jobs.a.files./data/in.txt: collides with volume 'data', mounted at"
        " /data: a file cannot be at, under or above a volume's location (to put a file in a"
        " volume, ingress it: source file://KEY)",
        "wf.yaml:19:7: jobs.b.files./other: collides with volume 'data', mounted at /other: a"
        " file cannot be at, under or above a volume's location (to put a file in a volume,"
        " ingress it: source file://KEY)",
    ]
