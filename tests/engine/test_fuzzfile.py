"""Tests for Fuzzfile parsing and checks: real YAML in, exact problem lines out."""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from fuzz.errors import ConfigError
from fuzz.resources import NodeCapacity, ResourceRequest
from fuzz.spec.fuzzfile import JobSpec
from fuzz.spec.fuzzfile_loader import LoadedFuzzfile, load_fuzzfile, parse_fuzzfile
from fuzz.spec.problems import SpecError
from tests.support.cliutil import run_fuzz

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
GiB = 2**30

JOB_HEAD = """\
version: v1
volumes:
  data:
    reference: volume://user/ephemeral
jobs:
  a:
    image: {uri: docker://alpine:3.19}
"""
"""A file whose job ``a`` continues at line 8 (see :func:`job_file`)."""

VOLUME_HEAD = """\
version: v1
volumes:
  data:
"""
"""A file whose volume ``data`` continues at line 4 (see :func:`volume_file`)."""

VOLUME_TAIL = """\
jobs:
  a: {image: {uri: docker://alpine}, command: ["true"]}
"""


def job_file(body: str) -> str:
    """A Fuzzfile whose job ``a`` has ``body`` (dedented) from line 8, column 5."""
    return JOB_HEAD + textwrap.indent(textwrap.dedent(body).lstrip("\n"), "    ")


def volume_file(body: str) -> str:
    """A Fuzzfile whose volume ``data`` has ``body`` (dedented) from line 4, column 5."""
    return (VOLUME_HEAD + textwrap.indent(textwrap.dedent(body).lstrip("\n"), "    ")
            + VOLUME_TAIL)


def parse(text: str, capacities: Sequence[NodeCapacity] | None = None,
          capacities_are_nodes: bool = False) -> LoadedFuzzfile:
    """``text`` (dedented) parsed as ``wf.yaml``."""
    return parse_fuzzfile(textwrap.dedent(text).lstrip("\n"), "wf.yaml", capacities,
                          capacities_are_nodes=capacities_are_nodes)


def problems(text: str, capacities: Sequence[NodeCapacity] | None = None,
             capacities_are_nodes: bool = False) -> list[str]:
    """The problem lines that parsing ``text`` reports (it must fail)."""
    with pytest.raises(SpecError) as info:
        parse(text, capacities, capacities_are_nodes)
    lines = [str(problem) for problem in info.value.problems]
    assert str(info.value) == "\n".join(lines)
    return lines


# --- the examples -------------------------------------------------------------------------


def test_demo_pipeline_validates() -> None:
    loaded = load_fuzzfile(EXAMPLES / "pipeline.yaml")
    flow = loaded.fuzzfile
    assert flow.job_order() == ["untar", "count-words", "count-lines", "summary"]
    images = {job.image.reference for job in flow.jobs.values()}
    assert len(images) == 1 and images.pop().endswith("/busybox:latest")
    data = flow.volumes["data"]
    assert data.ephemeral and data.persistent_name is None
    assert data.ingress[0].source.uri.startswith("http://")
    assert data.ingress[0].destination.path == "inputs.tar.gz"
    assert data.egress[0].source.path == "results"
    assert flow.jobs["summary"].requires == ["count-words", "count-lines"]


def test_fuzzball_example_uses_every_field() -> None:
    loaded = load_fuzzfile(EXAMPLES / "fuzzball-example.yaml")
    flow = loaded.fuzzfile
    assert flow.job_order() == ["untar", "ufs", "ncl"]
    untar, ufs, ncl = flow.jobs["untar"], flow.jobs["ufs"], flow.jobs["ncl"]
    assert untar.policy.timeout.execute == 1800.0
    assert untar.policy.retry.attempts == 3
    assert ufs.image.secret_name == "ghcr"
    assert ufs.argv() == ["/opt/ufs/bin/ufs_model", "--config", "model_configure"]
    assert ufs.cwd == "/run_dir"
    assert ufs.environment() == {"OMP_NUM_THREADS": "1", "ESMF_RUNTIME_COMPLIANCECHECK": "OFF"}
    assert ufs.multinode is not None and ufs.multinode.nodes == 128
    assert ufs.multinode.implementation == "openmpi"
    assert ufs.resource.cpu.sockets == 2 and ufs.resource.cpu.threads is False
    assert ufs.resource.request() == ResourceRequest(
        cores=32, affinity="NUMA", memory_bytes=32 * 2 * 10**9, exclusive=True, sockets=2)
    assert ncl.argv() == ["/.fuzz/script"]  # run by its #! line
    assert "FB_TASK_ID" in dict(flow.placed_files(ncl))["/.fuzz/script"].decode()
    assert ncl.image.reference.startswith("docker.io/example/ncl@sha256:")
    assert ncl.resource.request().devices == {"nvidia.com/gpu": 1}
    assert ncl.task_array is not None and list(ncl.task_array.task_ids()) == [1, 2]
    assert ncl.task_array.concurrency == 2
    assert {name: m.location for name, m in ncl.mounts.items()} == {
        "v1": "/run_dir", "archive": "/archive"}
    v1, archive = flow.volumes["v1"], flow.volumes["archive"]
    assert archive.persistent_name == "ufs-archive" and not archive.ephemeral
    assert v1.ingress[1].source.secret_name == "s3-read"
    assert v1.egress[0].destination.secret_name == "s3-write"
    assert v1.egress[1].destination.uri == "file:///srv/ufs/plots/plot_2.png"


# --- what a valid file gives --------------------------------------------------------------


def test_defaults_of_a_minimal_job() -> None:
    job = parse(job_file('command: ["true"]')).fuzzfile.jobs["a"]
    assert job.resource.request() == ResourceRequest(cores=1, affinity="CORE", memory_bytes=GiB)
    assert job.policy.timeout.execute is None and job.policy.retry.attempts == 1
    assert job.env == [] and job.mounts == {} and job.requires == []
    assert job.multinode is None and job.task_array is None and job.image.secret is None


def test_argv_and_environment() -> None:
    job = JobSpec.model_validate({
        "image": {"uri": "docker://alpine"}, "command": ["echo"], "args": ["a", "b=c"],
        "env": ["A=1", "B=x=y", "EMPTY="]})
    assert job.argv() == ["echo", "a", "b=c"]
    assert job.environment() == {"A": "1", "B": "x=y", "EMPTY": ""}
    script = JobSpec.model_validate({"image": {"uri": "docker://alpine"}, "script": "echo hi\n"})
    assert script.argv() == ["/bin/sh", "-c", "echo hi\n"]


def test_memory_by_core_multiplies_by_cores() -> None:
    job = parse(job_file("""
        command: ["true"]
        resource:
          cpu: {cores: 4, affinity: SOCKET}
          memory: {size: 512MiB, by-core: true}
          devices: {nvidia.com/gpu: 2}
    """)).fuzzfile.jobs["a"]
    assert job.resource.request() == ResourceRequest(
        cores=4, affinity="SOCKET", memory_bytes=4 * 512 * 2**20, devices={"nvidia.com/gpu": 2})


def test_job_order_runs_in_waves_in_file_order() -> None:
    loaded = parse("""
        version: v1
        jobs:
          last: {image: {uri: docker://alpine}, command: ["true"], requires: [b, z]}
          z: {image: {uri: docker://alpine}, command: ["true"]}
          b: {image: {uri: docker://alpine}, command: ["true"], requires: [m]}
          m: {image: {uri: docker://alpine}, command: ["true"]}
          a: {image: {uri: docker://alpine}, command: ["true"], requires: [z]}
    """)
    assert loaded.fuzzfile.job_order() == ["z", "m", "b", "a", "last"]


def test_mount_locations_and_cwd_are_normalised() -> None:
    job = parse(job_file("""
        command: ["true"]
        cwd: /data/./work/
        mounts:
          data: {location: //data//}
    """)).fuzzfile.jobs["a"]
    assert job.cwd == "/data/work"
    assert job.mounts["data"].location == "/data"


def test_content_hash_is_the_same_for_file_and_text(tmp_path: Path) -> None:
    text = job_file('command: ["true"]')
    path = tmp_path / "wf.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # with a byte-order mark
    from_file = load_fuzzfile(path, "wf.yaml")
    from_text = parse_fuzzfile(text, "wf.yaml")
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert from_file.content_hash == from_text.content_hash == expected
    assert from_file.text == text and from_file.path == path.absolute()
    assert from_text.path == Path("wf.yaml")


# --- one problem each, at its exact place -------------------------------------------------

JOB_PROBLEMS = [
    ('command: ["true"]\nimage2: x\n',
     "wf.yaml:9:5: jobs.a.image2: unknown key 'image2' (did you mean 'image'?)"),
    ('command: ["true"]\ntask_array: {start: 1, end: 2}\n',
     "wf.yaml:9:5: jobs.a.task_array: unknown key 'task_array' (did you mean 'task-array'?)"),
    ('command: ["true"]\nresource: {memory: {by_core: true}}\n',
     "wf.yaml:9:25: jobs.a.resource.memory.by_core: unknown key 'by_core'"
     " (did you mean 'by-core'?)"),
    ('command: ["true"]\nresource: {cpu: {cores: "4"}}\n',
     "wf.yaml:9:29: jobs.a.resource.cpu.cores: must be an integer"),
    ('command: ["true"]\nresource: {cpu: {cores: true}}\n',
     "wf.yaml:9:29: jobs.a.resource.cpu.cores: must be an integer"),
    ('command: ["true"]\nresource: {memory: {size: 12XB}}\n',
     "wf.yaml:9:31: jobs.a.resource.memory.size: invalid size '12XB': use e.g. 512MiB, 12GB"),
    ('command: ["true"]\nresource: {memory: {size: 0}}\n',
     "wf.yaml:9:31: jobs.a.resource.memory.size: must be > 0"),
    ('command: ["true"]\nresource: {devices: {nvidia.com/gpu: -1}}\n',
     "wf.yaml:9:42: jobs.a.resource.devices.nvidia.com/gpu: must be >= 0"),
    ('command: ["true"]\npolicy: {timeout: {execute: soon}}\n',
     "wf.yaml:9:33: jobs.a.policy.timeout.execute: invalid duration 'soon':"
     " use e.g. 30s, 10m, 1h30m"),
    ('command: ["true"]\npolicy: {timeout: {execute: 0s}}\n',
     "wf.yaml:9:33: jobs.a.policy.timeout.execute: must be > 0"),
    ('command: ["true"]\npolicy: {retry: {attempts: 0}}\n',
     "wf.yaml:9:32: jobs.a.policy.retry.attempts: must be >= 1"),
    ('command: ["true"]\ncwd: work\n',
     "wf.yaml:9:10: jobs.a.cwd: must be an absolute path, not 'work'"),
    ('command: ["true"]\ncwd: /data/../etc\n',
     "wf.yaml:9:10: jobs.a.cwd: '/data/../etc' must not contain '..'"),
    ('command: ["true"]\nmounts: {data: {location: data}}\n',
     "wf.yaml:9:31: jobs.a.mounts.data.location: must be an absolute path, not 'data'"),
    ('command: ["true"]\nmounts: {data: {location: /x/../../etc}}\n',
     "wf.yaml:9:31: jobs.a.mounts.data.location: '/x/../../etc' must not contain '..'"),
    ('command: ["true"]\nmounts: {data: {location: /}}\n',
     "wf.yaml:9:31: jobs.a.mounts.data.location: cannot mount a volume over '/'"),
    ('command: ["true"]\nenv: [A=1, NOVALUE]\n',
     "wf.yaml:9:16: jobs.a.env[1]: must be NAME=VALUE, not 'NOVALUE'"),
    ('command: ["true"]\nenv: [9LIVES=1]\n',
     "wf.yaml:9:11: jobs.a.env[0]: invalid variable name '9LIVES': use letters, digits and"
     " '_', not starting with a digit"),
    ('command: ["true"]\nenv: [A=1, B=2, A=3]\n',
     "wf.yaml:9:10: jobs.a.env: A is set twice (env[0] and env[2])"),
    ('command: ["true"]\nscript: echo hi\n',
     "wf.yaml:9:13: jobs.a.script: give a command or a script, not both"),
    ("cwd: /data\n",
     "wf.yaml:7:5: jobs.a: needs a command or a script"),
    ("command: []\n",
     "wf.yaml:8:14: jobs.a.command: must not be empty"),
    ('command: ["true"]\nmultinode: {nodes: 0, implementation: openmpi}\n',
     "wf.yaml:9:24: jobs.a.multinode.nodes: must be >= 1"),
    ('command: ["true"]\nmultinode: {nodes: 2, implementation: mvapich}\n',
     "wf.yaml:9:43: jobs.a.multinode.implementation: must be 'openmpi', 'ompi', 'mpich', "
     "'gasnet' or 'generic'"),
    ('command: ["true"]\nmultinode: {nodes: 2, implementation: mpich, procs-per-node: 0}\n',
     "wf.yaml:9:66: jobs.a.multinode.procs-per-node: must be >= 1"),
    ('command: ["true"]\ntask-array: {start: 5, end: 4}\n',
     "wf.yaml:9:33: jobs.a.task-array.end: must be >= start (5)"),
    ('command: ["true"]\ntask-array: {start: 1, end: 4, concurrency: 0}\n',
     "wf.yaml:9:49: jobs.a.task-array.concurrency: must be >= 1"),
    ('command: ["true"]\nmultinode: {nodes: 2, implementation: mpich}\n'
     'task-array: {start: 1, end: 2}\n',
     "wf.yaml:10:17: jobs.a.task-array: a job cannot be both a task array and multinode"),
    ('command: ["true"]\nrequires: [a]\n',
     "wf.yaml:9:16: jobs.a.requires: a job cannot require itself"),
    ('command: ["true"]\nmounts: {dta: {location: /data}}\n',
     "wf.yaml:9:14: jobs.a.mounts.dta: unknown volume 'dta' (declared: data)"
     " (did you mean 'data'?)"),
]


@pytest.mark.parametrize(("body", "expected"), JOB_PROBLEMS)
def test_job_problem(body: str, expected: str) -> None:
    assert problems(job_file(body)) == [expected]


IMAGE_FORMS = ("use docker://REPOSITORY[:TAG], docker://REPOSITORY@sha256:DIGEST or"
               " oras://REPOSITORY[:TAG]")
IMAGE_PROBLEMS = [
    ("alpine:3.19", f"wf.yaml:7:18: jobs.a.image.uri: unsupported image uri 'alpine:3.19':"
     f" {IMAGE_FORMS}"),
    ("library://sylabs/x:1", "wf.yaml:7:18: jobs.a.image.uri: unsupported image uri"
     f" 'library://sylabs/x:1': {IMAGE_FORMS}"),
    ("docker://Alpine", "wf.yaml:7:18: jobs.a.image.uri: invalid image uri 'docker://Alpine':"
     f" {IMAGE_FORMS}"),
    ("docker://alpine@sha256:abc", "wf.yaml:7:18: jobs.a.image.uri: invalid image uri"
     f" 'docker://alpine@sha256:abc': {IMAGE_FORMS}"),
    ("oras://ghcr.io/X/y.sif:1", "wf.yaml:7:18: jobs.a.image.uri: invalid image uri"
     f" 'oras://ghcr.io/X/y.sif:1': {IMAGE_FORMS}"),
]


@pytest.mark.parametrize(("uri", "expected"), IMAGE_PROBLEMS)
def test_image_uri_must_be_a_docker_reference(uri: str, expected: str) -> None:
    text = JOB_HEAD.replace("docker://alpine:3.19", uri) + '    command: ["true"]\n'
    assert problems(text) == [expected]


@pytest.mark.parametrize("uri", [
    "docker://alpine", "docker://127.0.0.1:5000/busybox:latest",
    "oras://ghcr.io/org/solver.sif:2.1", "oras://127.0.0.1:5000/fuzz/busybox-sif",
    "docker://ghcr.io/org/team/app:v1.2_rc-3",
    "docker://registry.local/a__b-c.d/e@sha256:" + "0" * 64,
    "docker://localhost:5000/x:tag@sha256:" + "f" * 64,
])
def test_image_uris_accepted(uri: str) -> None:
    text = JOB_HEAD.replace("docker://alpine:3.19", uri) + '    command: ["true"]\n'
    assert parse(text).fuzzfile.jobs["a"].image.reference == uri.removeprefix("docker://")


def test_image_secret_must_be_a_secret_reference() -> None:
    text = job_file('command: ["true"]').replace(
        "{uri: docker://alpine:3.19}", "{uri: docker://alpine, secret: ghcr-token}")
    assert problems(text) == [
        "wf.yaml:7:43: jobs.a.image.secret: invalid secret 'ghcr-token':"
        " use secret://user/NAME or secret://account/NAME"]


@pytest.mark.parametrize("key", ["decryption-secret", "decryptionSecret"])
def test_an_encrypted_sif_image_is_refused(key: str) -> None:
    text = job_file('command: ["true"]').replace(
        "{uri: docker://alpine:3.19}", f"{{uri: oras://ghcr.io/x/y.sif:1, {key}: secret://user/k}}")
    assert problems(text) == [
        f"wf.yaml:7:{46 + len(key)}: jobs.a.image.{key}: encrypted SIF images are not supported:"
        " fuzz cannot decrypt them; use an unencrypted image"]


VOLUME_PROBLEMS = [
    ("reference: volume://user/scratch\n",
     "wf.yaml:4:16: volumes.data.reference: invalid volume reference 'volume://user/scratch':"
     " use volume://user/ephemeral or volume://user/persistent[/NAME] (or volume://account/...)"),
    ("reference: volume://user/persistent/my data\n",
     "wf.yaml:4:16: volumes.data.reference: invalid persistent volume name 'my data': use 1-63"
     " letters, digits, '.', '_' or '-', starting with a letter or digit"),
    ("reference: volume://user/ephemeral\ningress:\n"
     "  - {source: {uri: ftp://h/x}, destination: {uri: file://x}}\n",
     "wf.yaml:6:24: volumes.data.ingress[0].source.uri: unsupported uri 'ftp://h/x':"
     " use http://, https://, s3:// or file://"),
    ("reference: volume://user/ephemeral\ningress:\n"
     "  - {source: {uri: 'http:///x'}, destination: {uri: file://x}}\n",
     "wf.yaml:6:24: volumes.data.ingress[0].source.uri: 'http:///x' names no host"),
    ("reference: volume://user/ephemeral\ningress:\n"
     "  - {source: {uri: 's3:///key'}, destination: {uri: file://x}}\n",
     "wf.yaml:6:24: volumes.data.ingress[0].source.uri: 's3:///key' names no bucket"
     " (s3://BUCKET/KEY)"),
    ("reference: volume://user/ephemeral\ningress:\n"
     "  - {source: {uri: file://in.tar}, destination: {uri: file://x}}\n",
     "wf.yaml:6:24: volumes.data.ingress[0].source.uri: 'file://in.tar' names no entry of"
     " the top-level files (none declared)"),
    ("reference: volume://user/ephemeral\ningress:\n"
     "  - {source: {uri: 'file://in/x'}, destination: {uri: file://x}}\n",
     "wf.yaml:6:24: volumes.data.ingress[0].source.uri: 'file://in/x' must be an absolute"
     " path (file:///path) or name an entry of the top-level files (file://KEY)"),
    ("reference: volume://user/ephemeral\ningress:\n"
     "  - {source: {uri: https://h/x}, destination: {uri: file://a/../../x}}\n",
     "wf.yaml:6:57: volumes.data.ingress[0].destination.uri: 'file://a/../../x' must not leave"
     " the volume ('..')"),
    ("reference: volume://user/ephemeral\ningress:\n"
     "  - {source: {uri: https://h/x}, destination: {uri: s3://b/x}}\n",
     "wf.yaml:6:57: volumes.data.ingress[0].destination.uri: must be a path inside the volume"
     " (file://relative/path), not 's3://b/x'"),
    ("reference: volume://user/ephemeral\negress:\n"
     "  - {source: {uri: file://./}, destination: {uri: s3://b/x}}\n",
     "wf.yaml:6:24: volumes.data.egress[0].source.uri: 'file://./' names no path inside the"
     " volume"),
    ("reference: volume://user/ephemeral\negress:\n"
     "  - {source: {uri: file://out}, destination: {uri: https://h/x}}\n",
     "wf.yaml:6:56: volumes.data.egress[0].destination.uri: unsupported uri 'https://h/x':"
     " use s3:// or file://"),
    ("reference: volume://user/ephemeral\negress:\n"
     "  - {source: {uri: file://out}, destination: {uri: s3://b/x, secret: secret://org/k}}\n",
     "wf.yaml:6:74: volumes.data.egress[0].destination.secret: invalid secret 'secret://org/k':"
     " use secret://user/NAME or secret://account/NAME"),
]


@pytest.mark.parametrize(("body", "expected"), VOLUME_PROBLEMS)
def test_volume_problem(body: str, expected: str) -> None:
    assert problems(volume_file(body)) == [expected]


def test_transfer_with_a_misspelt_key() -> None:
    body = ("reference: volume://user/ephemeral\negress:\n"
            "  - {source: {uri: file://out}, destination: {url: s3://b/x}}\n")
    assert problems(volume_file(body)) == [
        "wf.yaml:6:37: volumes.data.egress[0].destination.uri: required field missing",
        "wf.yaml:6:51: volumes.data.egress[0].destination.url: unknown key 'url'"
        " (did you mean 'uri'?)",
    ]


# --- across jobs ---------------------------------------------------------------------------

CHAIN = """
version: v1
jobs:
  untar:
    image: {uri: docker://alpine}
    command: ["true"]
  ufs:
    image: {uri: docker://alpine}
    command: ["true"]
    requires: [untarr]
  ncl:
    image: {uri: docker://alpine}
    command: ["true"]
    requires:
      - ufs
      - nope
"""


def test_requires_unknown_job_with_did_you_mean() -> None:
    assert problems(CHAIN) == [
        "wf.yaml:9:16: jobs.ufs.requires: unknown job 'untarr' (did you mean 'untar'?)",
        "wf.yaml:15:9: jobs.ncl.requires: unknown job 'nope'",
    ]


def test_every_cycle_is_named_from_its_first_job_in_the_file() -> None:
    text = """
    version: v1
    jobs:
      a: {image: {uri: docker://alpine}, command: ["true"], requires: [c]}
      b: {image: {uri: docker://alpine}, command: ["true"], requires: [a]}
      c: {image: {uri: docker://alpine}, command: ["true"], requires: [b]}
      d: {image: {uri: docker://alpine}, command: ["true"], requires: [e, a]}
      e: {image: {uri: docker://alpine}, command: ["true"], requires: [d]}
    """
    assert problems(text) == [
        "wf.yaml:3:68: jobs.a.requires: cycle: a -> c -> b -> a",
        "wf.yaml:6:68: jobs.d.requires: cycle: d -> e -> d",
    ]


def test_mounts_when_no_volume_is_declared() -> None:
    text = """
    version: v1
    jobs:
      a:
        image: {uri: docker://alpine}
        command: ["true"]
        mounts: {scratch: {location: /s}}
    """
    assert problems(text) == [
        "wf.yaml:6:14: jobs.a.mounts.scratch: unknown volume 'scratch' (no volumes are declared)"]


def test_two_mounts_at_one_location() -> None:
    text = """
    version: v1
    volumes:
      in: {reference: volume://user/ephemeral}
      out: {reference: volume://user/persistent/results}
    jobs:
      a:
        image: {uri: docker://alpine}
        command: ["true"]
        mounts:
          in: {location: /data}
          out: {location: /data/}
    """
    assert problems(text) == [
        "wf.yaml:10:7: jobs.a.mounts: volumes 'in' and 'out' are both mounted at /data"]


def test_top_level_problems() -> None:
    assert problems("version: 1\njobs: {}\nvolume: {}\n") == [
        "wf.yaml:1:10: version: must be 'v1' or 'v4'",
        "wf.yaml:2:7: jobs: a workflow needs at least one job or service",
        "wf.yaml:3:1: volume: unknown key 'volume' (did you mean 'volumes'?)",
    ]
    assert problems("version: v1\n") == [
        "wf.yaml:1:1: jobs: a workflow needs at least one job or service"]


def test_yaml_problems_are_reported_too() -> None:
    assert problems("version: v1\njobs:\n  a: [\n") == [
        "wf.yaml:4:1: expected the node content, but found '<stream end>'"
        " (while parsing a flow node started at line 4, column 1)"]
    text = job_file('command: ["true"]\ncommand: ["false"]\n')
    assert problems(text) == ["wf.yaml:9:5: jobs.a.command: duplicate key 'command'"
                              " (first at line 8)"]


def test_problems_come_together_in_file_order() -> None:
    text = job_file("""
        command: [tar]
        script: echo
        requires: [b]
        mounts: {scratch: {location: /s}}
    """)
    assert problems(text) == [
        "wf.yaml:9:13: jobs.a.script: give a command or a script, not both",
        "wf.yaml:10:16: jobs.a.requires: unknown job 'b'",
        "wf.yaml:11:14: jobs.a.mounts.scratch: unknown volume 'scratch' (declared: data)",
    ]


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        load_fuzzfile(tmp_path / "nope.yaml", "nope.yaml")
    assert str(missing.value) == "nope.yaml: no such file"
    (tmp_path / "latin1.yaml").write_bytes(b"version: v1\n# caf\xe9\n")
    with pytest.raises(SpecError) as latin1:
        load_fuzzfile(tmp_path / "latin1.yaml", "latin1.yaml")
    assert str(latin1.value) == "latin1.yaml:2:6: not valid UTF-8 text"


# --- against the cluster's capacities -----------------------------------------------------

BIG = NodeCapacity("big", cores=16, memory_bytes=64 * GiB, devices={"nvidia.com/gpu": 1})
SMALL = NodeCapacity("small", cores=4, memory_bytes=8 * GiB)

SIZED = """
version: v1
jobs:
  train:
    image: {uri: docker://alpine}
    command: ["true"]
    resource:
      cpu: {cores: 64}
      devices: {nvidia.com/gpu: 2}
  mpi:
    image: {uri: docker://alpine}
    command: ["true"]
    resource: {cpu: {cores: 8}}
    multinode: {nodes: 2, implementation: openmpi}
  small:
    image: {uri: docker://alpine}
    command: ["true"]
    multinode: {nodes: 3, implementation: mpich}
"""


def test_a_job_no_node_could_hold() -> None:
    assert problems(SIZED, capacities=[BIG, SMALL]) == [
        "wf.yaml:6:5: jobs.train.resource: needs 64 cores; the largest node has 16;"
        " needs 2 nvidia.com/gpu; the largest node has 1",
    ]


def test_multinode_jobs_against_real_nodes() -> None:
    assert problems(SIZED, capacities=[BIG, SMALL], capacities_are_nodes=True) == [
        "wf.yaml:6:5: jobs.train.resource: needs 64 cores; the largest node has 16;"
        " needs 2 nvidia.com/gpu; the largest node has 1",
        "wf.yaml:13:24: jobs.mpi.multinode.nodes: needs 2 nodes that can each hold its"
        " resource; 1 of the cluster's 2 nodes can",
        "wf.yaml:17:24: jobs.small.multinode.nodes: needs 3 nodes; the cluster has 2",
    ]


def test_a_job_without_resource_is_placed_at_its_name() -> None:
    text = job_file('command: ["true"]')
    tiny = NodeCapacity("tiny", cores=1, memory_bytes=GiB // 2)
    assert problems(text, capacities=[tiny]) == [
        "wf.yaml:6:3: jobs.a.resource: needs 1.0 GiB memory; the largest node has 512.0 MiB"]
    assert problems(text, capacities=[]) == [
        "wf.yaml:6:3: jobs.a.resource: no node or pool exists to run it"]


def test_fitting_jobs_pass_the_capacity_checks() -> None:
    fits = SIZED.replace("cores: 64}", "cores: 16}").replace("gpu: 2", "gpu: 1")
    fits = fits.replace("nodes: 3", "nodes: 2")
    nodes = [BIG, NodeCapacity("big2", cores=16, memory_bytes=64 * GiB)]
    assert parse(fits, capacities=nodes, capacities_are_nodes=True).fuzzfile.jobs.keys() == {
        "train", "mpi", "small"}
    # offerings, not nodes: a pool can create as many of them as a multinode job needs
    assert parse(fits.replace("nodes: 2", "nodes: 64"), capacities=nodes).fuzzfile


# --- the CLI -------------------------------------------------------------------------------


def test_cli_workflow_validate(tmp_path: Path) -> None:
    valid = run_fuzz(tmp_path, "workflow", "validate", str(EXAMPLES / "pipeline.yaml"))
    assert valid.code == 0, valid.err
    assert valid.out.strip() == f"{EXAMPLES / 'pipeline.yaml'}: valid: 4 jobs, 1 volume"
    as_json = run_fuzz(tmp_path, "workflow", "validate", "--json",
                       str(EXAMPLES / "fuzzball-example.yaml")).json()
    assert as_json["valid"] is True and as_json["problems"] == []
    assert as_json["jobs"] == ["untar", "ufs", "ncl"] and as_json["volumes"] == ["v1", "archive"]

    (tmp_path / "wf.yaml").write_text(CHAIN.lstrip("\n"))
    invalid = run_fuzz(tmp_path, "workflow", "validate", "wf.yaml")
    assert invalid.code == 1
    assert invalid.err.splitlines() == [
        "wf.yaml:9:16: jobs.ufs.requires: unknown job 'untarr' (did you mean 'untar'?)",
        "wf.yaml:15:9: jobs.ncl.requires: unknown job 'nope'",
    ]
    invalid_json = run_fuzz(tmp_path, "workflow", "validate", "--json", "wf.yaml")
    assert invalid_json.code == 1
    assert invalid_json.json() == {"valid": False, "problems": [
        {"file": "wf.yaml", "line": 9, "col": 16, "field": "jobs.ufs.requires",
         "message": "unknown job 'untarr' (did you mean 'untar'?)"},
        {"file": "wf.yaml", "line": 15, "col": 9, "field": "jobs.ncl.requires",
         "message": "unknown job 'nope'"},
    ]}
    missing = run_fuzz(tmp_path, "workflow", "validate", "gone.yaml")
    assert (missing.code, missing.err.strip()) == (1, "Error: gone.yaml: no such file")


def test_a_service_no_node_could_hold() -> None:
    text = """\
version: v1
services:
  big:
    image: {uri: docker://alpine}
    command: [sleep, "60"]
    resource: {cpu: {cores: 64}, memory: {size: 1GiB}}
"""
    assert problems(text, capacities=[BIG, SMALL]) == [
        "wf.yaml:6:5: services.big.resource: needs 64 cores; the largest node has 16"]


def test_cli_workflow_validate_counts_services(tmp_path: Path) -> None:
    path = EXAMPLES / "service.yaml"
    valid = run_fuzz(tmp_path, "workflow", "validate", str(path))
    assert valid.code == 0, valid.err
    assert valid.out.strip() == f"{path}: valid: 1 job, 0 volumes, 1 service"
