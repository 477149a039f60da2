"""End to end: the v1 keys beyond the basics (inline files, defaults, depends-on), and what a
start refuses (services), on a local cluster of real agents running runc containers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fuzz.testing.oci import PushedImage, free_port
from fuzz.testing.web import serve_directory
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTP server on loopback with big.bin (12 MiB: progress is reported every 4)."""
    root = tmp_path_factory.mktemp("www")
    (root / "big.bin").write_bytes(os.urandom(12 * 2**20))
    with serve_directory(root) as url:
        yield url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: PushedImage,
            web: str) -> Iterator[LocalCluster]:
    """Two local nodes and their orchestrator, for every test of this module; its
    ingress may fetch from ``web``."""
    directory = tmp_path_factory.mktemp("cluster")
    os.chmod(directory, 0o755)  # jobs run as nobody; volumes live under it
    allow = [web.removeprefix("http://")]
    with local_cluster(directory, [busybox_image.registry.host], free_port(),
                       orchestrator={"ingress": {"allow": allow}}) as running:
        yield running


def test_inline_files_defaults_and_depends_on_run_in_containers(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    image = busybox_image.reference
    fuzzfile = f"""\
version: v1
files:
  greeting.txt: |
    hello from files
defaults:
  job:
    env: [GREETING=from-defaults]
    mounts: {{data: {{location: /data}}}}
volumes:
  data:
    name: data
    reference: volume://user/ephemeral
    ingress:
      - source: {{uri: file://greeting.txt}}
        destination: {{uri: file://in/greeting.txt}}
jobs:
  server:
    image: {{uri: {image}}}
    script: |
      touch /data/server.up
      i=0
      while [ ! -f /data/client.done ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done
      exit 4
  client:
    image: {{uri: {image}}}
    script: |
      test -f /data/server.up || exit 9
      cat /data/in/greeting.txt > /data/client.out
      echo "$GREETING" >> /data/client.out
      touch /data/client.done
    depends-on: [{{name: server, status: RUNNING}}]
  report:
    image: {{uri: {image}}}
    command: [/bin/sh, -c, 'cat /data/client.out; echo "$GREETING $MORE"', 1]
    env: [MORE=own]
    depends-on: [{{name: server, status: FINISHED}}, {{name: client, status: finished}}]
"""
    cluster.start("v1keys", fuzzfile)
    status = cluster.wait("v1keys", timeout=240)
    tasks = tasks_by_key(status)
    # the server ran until the client (started beside it) was done, then failed on purpose
    assert tasks["server"]["state"] == "FAILED" and tasks["server"]["exit_code"] == 4, \
        dump(status)
    assert tasks["client"]["state"] == "SUCCEEDED", dump(status)
    assert tasks["client"]["started"] < tasks["server"]["finished"]
    # FINISHED: the report ran after the failed server all the same
    assert tasks["report"]["state"] == "SUCCEEDED", dump(status)
    assert tasks["report"]["started"] >= tasks["server"]["finished"]
    assert status["state"] == "FAILED"
    log = cluster.ok("workflow", "log", "v1keys", "report").out
    assert log == "hello from files\nfrom-defaults\nfrom-defaults own\n"


def test_a_start_of_a_service_with_a_grpc_probe_says_it_is_not_run_yet(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    path = cluster.directory / "svc.yaml"
    path.write_text(f"""\
version: v1
services:
  web:
    image: {{uri: {busybox_image.reference}}}
    command: [httpd, -f]
    readiness-probe: {{grpc: {{port: 9000}}}}
jobs:
  a: {{image: {{uri: {busybox_image.reference}}}, command: ["true"]}}
""")
    assert cluster.ok("workflow", "validate", str(path))
    result = cluster.fuzz("workflow", "start", "svc", str(path))
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "svc.yaml:6:23: services.web.readiness-probe.grpc: grpc readiness probes are not run"
        " yet: use exec, http-get or tcp-socket"), result.err
    assert cluster.fuzz("workflow", "status", "svc").code == 1


def test_a_transfers_own_policy_times_it_out_and_retries_it(
        cluster: LocalCluster, busybox_image: PushedImage, web: str) -> None:
    fuzzfile = f"""\
version: v1
volumes:
  data:
    reference: volume://user/ephemeral
    ingress:
      - source: {{uri: {web}/big.bin}}
        destination: {{uri: file://big.bin}}
        policy: {{timeout: {{execute: 1ms}}, retry: {{attempts: 2}}}}
jobs:
  a:
    image: {{uri: {busybox_image.reference}}}
    command: ["true"]
    mounts: {{data: {{location: /data}}}}
"""
    cluster.start("policy", fuzzfile)
    status = cluster.wait("policy", timeout=240)
    assert status["state"] == "FAILED", dump(status)
    assert tasks_by_key(status)["a"]["state"] == "NOT_RUN"
    (short,) = status["volumes"][0]["transfers"]
    assert short["state"] == "FAILED", dump(status)
    assert short["error"] == (f"{web}/big.bin: timed out after 0.001s (the transfer's"
                              " policy.timeout.execute) (attempt 2 of 2)"), dump(status)


def test_args_reach_a_script_and_file_slash_path_is_the_volume_root(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    fuzzfile = f"""\
version: v1
files:
  params.csv: "alpha,beta\\n"
volumes:
  data:
    reference: volume://user/ephemeral
    ingress:
      - source: {{uri: file://params.csv}}
        destination: {{uri: file:///in/params.csv}}
jobs:
  show:
    image: {{uri: {busybox_image.reference}}}
    mounts: {{data: {{location: /data}}}}
    script: |
      #!/bin/sh
      echo "first=$1 second=$2 count=$#"
      cat /data/in/params.csv
    args: [alpha, 2]
"""
    cluster.start("rootargs", fuzzfile)
    status = cluster.wait("rootargs", timeout=240)
    assert status["state"] == "SUCCEEDED", dump(status)
    log = cluster.ok("workflow", "log", "rootargs", "show").out
    assert log == "first=alpha second=2 count=2\nalpha,beta\n"


def test_a_script_runs_by_its_interpreter_line_and_without_one_under_sh(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    # `#!/bin/cat` prints the script: under `/bin/sh -c` its second line would be run
    # as a command instead ("not-a-shell-command: not found")
    fuzzfile = f"""\
version: v1
jobs:
  cat:
    image: {{uri: {busybox_image.reference}}}
    script: |
      #!/bin/cat
      not-a-shell-command --at all
  options:
    image: {{uri: {busybox_image.reference}}}
    script: |
      #!/bin/sh -eu
      echo "zero=$0 first=$1 second=$2 count=$#"
      echo "$UNSET_VARIABLE"
      echo not reached
    args: [alpha, 2]
  plain:
    image: {{uri: {busybox_image.reference}}}
    script: echo "plain shell=$0 first=$1"
    args: [one]
"""
    cluster.start("shebang", fuzzfile)
    status = cluster.wait("shebang", timeout=240)
    tasks = tasks_by_key(status)
    assert tasks["cat"]["state"] == "SUCCEEDED", dump(status)
    assert cluster.ok("workflow", "log", "shebang", "cat").out == \
        "#!/bin/cat\nnot-a-shell-command --at all\n"
    # the line's option (-u) is honoured: the unset variable ends the script
    assert tasks["options"]["state"] == "FAILED", dump(status)
    assert cluster.ok("workflow", "log", "shebang", "options").out == \
        "zero=/.fuzz/script first=alpha second=2 count=2\n"
    assert "UNSET_VARIABLE" in cluster.ok("workflow", "log", "shebang", "options",
                                          "--stderr").out
    assert tasks["plain"]["state"] == "SUCCEEDED", dump(status)
    assert cluster.ok("workflow", "log", "shebang", "plain").out == \
        "plain shell=/bin/sh first=one\n"
