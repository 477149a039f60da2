"""A job's (and a service's) ``files``: files placed in its container, and what is refused."""

from __future__ import annotations

import textwrap

import pytest

from fuzz.spec.containerfiles import MAX_FILES, MAX_FILES_BYTES
from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.spec.problems import SpecError

FILES = """
version: v1
files:
  animate.py: |
    print("frame")
volumes:
  data: {reference: volume://user/ephemeral}
jobs:
  render:
    image: {uri: docker://alpine}
    command: [python3, /tmp/animate.py]
    mounts: {data: {location: /data}}
    files:
      /tmp/animate.py: file://animate.py
      /usr/local/bin/entrypoint.sh: |-
        #!/bin/sh
        echo hi
"""


def _problems(text: str, for_start: bool = False) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_fuzzfile(textwrap.dedent(text).lstrip("\n"), "wf.yaml", for_start=for_start)
    return [str(problem) for problem in info.value.problems]


def test_a_jobs_files_resolve_to_their_bytes_and_a_start_accepts_them() -> None:
    text = textwrap.dedent(FILES).lstrip("\n")
    flow = parse_fuzzfile(text, "wf.yaml", for_start=True).fuzzfile
    assert flow.placed_files(flow.jobs["render"]) == (
        ("/tmp/animate.py", b'print("frame")\n'),
        ("/usr/local/bin/entrypoint.sh", b"#!/bin/sh\necho hi"),
    )


def test_literal_content_is_utf8_and_a_text_without_the_prefix_is_content() -> None:
    flow = parse_fuzzfile(textwrap.dedent("""
        version: v1
        jobs:
          a:
            image: {uri: docker://alpine}
            command: ["true"]
            files: {/etc/greeting: "grüß file:// gott"}
    """).lstrip("\n"), "wf.yaml").fuzzfile
    assert flow.placed_files(flow.jobs["a"]) == (
        ("/etc/greeting", "grüß file:// gott".encode()),)


HEAD = """\
version: v1
volumes:
  data: {reference: volume://user/ephemeral}
jobs:
  a:
    image: {uri: docker://alpine}
    command: ["true"]
"""


@pytest.mark.parametrize(("body", "expected"), [
    ("    files: {/etc//x.conf: x}\n",
     "wf.yaml:8:13: jobs.a.files./etc//x.conf: '/etc//x.conf' must be written in normal"
     " form ('/etc/x.conf')"),
    ("    files: {/opt/x/: x}\n",
     "wf.yaml:8:13: jobs.a.files./opt/x/: '/opt/x/' must be written in normal form"
     " ('/opt/x')"),
    ("    files: {/: x}\n",
     "wf.yaml:8:13: jobs.a.files./: cannot place a file over '/'"),
    ("    files: {/proc/x: x}\n",
     "wf.yaml:8:13: jobs.a.files./proc/x: /proc/x is under /proc, which the container"
     " runtime provides"),
    ("    files: {/dev/shm/x: x}\n",
     "wf.yaml:8:13: jobs.a.files./dev/shm/x: /dev/shm/x is under /dev, which the"
     " container runtime provides"),
    ("    files: {/sys: x}\n",
     "wf.yaml:8:13: jobs.a.files./sys: /sys is under /sys, which the container runtime"
     " provides"),
    ("    mounts: {data: {location: /data}}\n    files: {/data/in.txt: x}\n",
     "wf.yaml:9:13: jobs.a.files./data/in.txt: collides with volume 'data', mounted at /data:"
     " a file cannot be at, under or above a volume's location (to put a file in a volume,"
     " ingress it: source file://KEY)"),
    ("    mounts: {data: {location: /data/sub}}\n    files: {/data: x}\n",
     "wf.yaml:9:13: jobs.a.files./data: collides with volume 'data', mounted at /data/sub:"
     " a file cannot be at, under or above a volume's location (to put a file in a volume,"
     " ingress it: source file://KEY)"),
    ("    mounts: {data: {location: /data/}}\n    files: {/data: x}\n",
     "wf.yaml:9:13: jobs.a.files./data: collides with volume 'data', mounted at /data:"
     " a file cannot be at, under or above a volume's location (to put a file in a volume,"
     " ingress it: source file://KEY)"),
    ("    files: {/opt/a: x, /opt/a/b: y}\n",
     "wf.yaml:8:24: jobs.a.files./opt/a/b: collides with the file at /opt/a: a file cannot"
     " be at, under or above another"),
    ("    files: {/etc/x: file://not a key}\n",  # the prefix alone makes it a reference
     "wf.yaml:8:21: jobs.a.files./etc/x: 'file://not a key' names no entry of the top-level"
     " files (none declared)"),
    ("    files: {/etc/x: file://nope}\n",
     "wf.yaml:8:21: jobs.a.files./etc/x: 'file://nope' names no entry of the top-level"
     " files (none declared)"),
])
def test_a_job_file_problem(body: str, expected: str) -> None:
    assert _problems(HEAD + body) == [expected]


def test_a_file_under_a_mount_from_the_defaults_is_refused() -> None:
    assert _problems("""
        version: v1
        defaults:
          job: {mounts: {data: {location: /data}}}
        volumes:
          data: {reference: volume://user/ephemeral}
        jobs:
          a:
            image: {uri: docker://alpine}
            command: ["true"]
            files: {/data/x: y}
          own:
            image: {uri: docker://alpine}
            command: ["true"]
            mounts: {data: {location: /work}}
            files: {/data/x: y}
    """) == [
        "wf.yaml:10:13: jobs.a.files./data/x: collides with volume 'data', mounted at /data:"
        " a file cannot be at, under or above a volume's location (to put a file in a volume,"
        " ingress it: source file://KEY)"]


def test_a_services_files_are_checked_the_same_way() -> None:
    assert _problems("""
        version: v1
        services:
          web:
            image: {uri: docker://nginx}
            command: [nginx]
            files: {/etc/nginx/x.conf: file://nope, /proc/y: z}
        jobs:
          a: {image: {uri: docker://alpine}, command: ["true"]}
    """) == [
        "wf.yaml:6:32: services.web.files./etc/nginx/x.conf: 'file://nope' names no entry of"
        " the top-level files (none declared)",
        "wf.yaml:6:45: services.web.files./proc/y: /proc/y is under /proc, which the"
        " container runtime provides",
    ]


def test_a_jobs_files_over_the_size_bound_are_refused_at_validate() -> None:
    half = MAX_FILES_BYTES // 2 + 1  # one entry, placed twice: over the bound in all
    text = (f"version: v1\nfiles:\n  big: {'x' * half}\njobs:\n  a:\n"
            "    image: {uri: docker://alpine}\n    command: [\"true\"]\n"
            "    files: {/a: file://big, /b: file://big}\n")
    with pytest.raises(SpecError) as info:
        parse_fuzzfile(text, "wf.yaml")
    assert [str(p) for p in info.value.problems] == [
        f"wf.yaml:8:5: jobs.a.files: the job's files hold {2 * half:,} bytes in all, over the"
        f" limit of {MAX_FILES_BYTES:,} bytes (2.0 MiB) for one container's files (put larger"
        " data in a volume)"]


def test_a_job_with_too_many_files_is_refused() -> None:
    entries = ", ".join(f"/f/{index}: x" for index in range(MAX_FILES + 1))
    text = (f"version: v1\njobs:\n  a:\n    image: {{uri: docker://alpine}}\n"
            f"    command: [\"true\"]\n    files: {{{entries}}}\n")
    with pytest.raises(SpecError) as info:
        parse_fuzzfile(text, "wf.yaml")
    assert [str(p) for p in info.value.problems] == [
        f"wf.yaml:6:5: jobs.a.files: the job places {MAX_FILES + 1} files, over the limit of"
        f" {MAX_FILES} for one container"]


def test_a_script_run_as_a_file_counts_among_the_jobs_files() -> None:
    entries = ", ".join(f"/f/{index}: x" for index in range(MAX_FILES))
    text = (f"version: v1\njobs:\n  a:\n    image: {{uri: docker://alpine}}\n"
            f"    script: \"#!/bin/sh\\ntrue\"\n    files: {{{entries}}}\n")
    with pytest.raises(SpecError) as info:
        parse_fuzzfile(text, "wf.yaml")
    assert [str(p) for p in info.value.problems] == [
        f"wf.yaml:6:5: jobs.a.files: the job places {MAX_FILES + 1} files (its script"
        f" included), over the limit of {MAX_FILES} for one container"]
    parse_fuzzfile(text.replace("#!/bin/sh\\n", ""), "wf.yaml")  # run by /bin/sh -c: fine
