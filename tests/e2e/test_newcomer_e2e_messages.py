"""What a newcomer meets on a running cluster (issue 24): `fuzz workflow validate` checks
what the cluster's nodes could hold, as `start` does; the messages of exec, of an apply
that only removes nodes, of a job that never ran, of a pull that failed.

One local cluster of one node that declares 2 cores (whatever this machine has), with
its orchestrator, through the real CLI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.cliutil import run_fuzz, run_fuzz_in_terminal
from tests.support.workflowutil import LocalCluster, local_cluster

TWO_CORES = "sockets: 1\nnuma_per_socket: 1\ncores_per_numa: 2\nmemory: 4GiB\n"


@pytest.fixture(scope="module")
def small_cluster(tmp_path_factory: pytest.TempPathFactory,
                  busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """One node of 2 cores and 4 GiB, and its orchestrator."""
    directory = tmp_path_factory.mktemp("newcomer")
    os.chmod(directory, 0o755)
    (directory / "node.yaml").write_text(TWO_CORES)
    with local_cluster(directory, [busybox_image.registry.host], free_port(), nodes=1,
                       local={"inventory": "node.yaml"}) as running:
        yield running


def big_job(image: PushedImage, cores: int) -> str:
    """A Fuzzfile of one job asking for ``cores`` cores."""
    return f"""\
version: v1
jobs:
  big:
    image: {{uri: {image.reference}}}
    command: ["true"]
    resource: {{cpu: {{cores: {cores}}}, memory: {{size: 64MiB}}}}
"""


def test_validate_next_to_the_spec_refuses_what_no_node_could_hold(
        small_cluster: LocalCluster, busybox_image: PushedImage) -> None:
    (small_cluster.directory / "big.yaml").write_text(big_job(busybox_image, 64))
    result = small_cluster.fuzz("workflow", "validate", "big.yaml")
    assert result.code == 1, result.out
    assert result.err.strip().splitlines() == [
        "big.yaml:6:5: jobs.big.resource: needs 64 cores; the largest node has 2"]
    (small_cluster.directory / "fits.yaml").write_text(big_job(busybox_image, 2))
    assert small_cluster.ok("workflow", "validate", "fits.yaml").out.strip() == \
        "fits.yaml: valid: 1 job, 0 volumes"


def test_validate_with_server_refuses_what_no_node_could_hold(
        small_cluster: LocalCluster, busybox_image: PushedImage, tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text(big_job(busybox_image, 64))
    data_dir = small_cluster.data_dir
    endpoint = small_cluster.client().endpoint
    result = run_fuzz(tmp_path, "workflow", "validate", "big.yaml", "--server", endpoint,
                      "--token-file", str(data_dir / "admin.token"),
                      "--ca-file", str(data_dir / "ca.pem"))
    assert result.code == 1, result.out
    assert result.err.strip().splitlines() == [
        "big.yaml:6:5: jobs.big.resource: needs 64 cores; the largest node has 2"]
    without = run_fuzz(tmp_path, "workflow", "validate", "big.yaml")  # no cluster known
    assert without.code == 0 and without.out.strip() == "big.yaml: valid: 1 job, 0 volumes"


@pytest.fixture(scope="module")
def sleeper(small_cluster: LocalCluster, busybox_image: PushedImage) -> Iterator[str]:
    """A workflow whose one job sleeps (so that exec has a container to run in)."""
    small_cluster.start("sleeper", f"""\
version: v1
jobs:
  nap:
    image: {{uri: {busybox_image.reference}}}
    command: [sleep, "600"]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}}}
""")
    small_cluster.wait_for("sleeper", "nap", "RUNNING")
    yield "sleeper"
    small_cluster.ok("workflow", "cancel", "sleeper")
    small_cluster.wait("sleeper")


def test_exec_of_a_missing_binary_says_so_and_exits_127(small_cluster: LocalCluster,
                                                       sleeper: str) -> None:
    result = small_cluster.fuzz("workflow", "exec", sleeper, "nap", "--", "nosuch", "-x")
    assert (result.code, result.err) == (127, "no such file in the image: nosuch\n")
    result = small_cluster.fuzz("workflow", "exec", sleeper, "nap", "--", "/opt/tool")
    assert (result.code, result.err) == (127, "no such file in the image: /opt/tool\n")
    shell = small_cluster.fuzz("workflow", "exec", sleeper, "nap", "--", "sh", "-c",
                               "echo own >&2; exit 3")
    assert (shell.code, shell.err) == (3, "own\n")  # the process's own stderr and code


def test_exec_tty_has_the_clients_term(small_cluster: LocalCluster, sleeper: str) -> None:
    code, shown = run_fuzz_in_terminal(
        small_cluster.directory, "workflow", "exec", sleeper, "nap", "--tty", "--", "sh", "-c",
        'echo "term=[$TERM]"', typed="", env={"TERM": "xterm-256color"})
    assert code == 0, shown
    assert "term=[xterm-256color]" in shown


def test_a_job_whose_image_is_not_in_the_registry_says_so(
        small_cluster: LocalCluster, busybox_image: PushedImage) -> None:
    missing = f"docker://{busybox_image.registry.host}/fuzz/no-such-image:1"
    small_cluster.start("unpulled", f"""\
version: v1
jobs:
  first:
    image: {{uri: {missing}}}
    command: ["true"]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}}}
  second:
    image: {{uri: {busybox_image.reference}}}
    command: ["true"]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}}}
    requires: [first]
""")
    status = small_cluster.wait("unpulled")
    reason = f"image {missing} not found in registry {busybox_image.registry.host}"
    images = {image["uri"]: image for image in status["images"]}
    assert images[missing]["error"].endswith(reason), images
    first = status["tasks"][0]
    assert first["error"].startswith("pull failed: ") and first["error"].endswith(reason), first
    assert reason in status["error"], status["error"]  # the workflow's summary
    described = small_cluster.ok("workflow", "describe", "unpulled").out
    assert "job second: NOT_RUN (never started" in described, described
    assert "attempt 0" not in described and "exit 0" not in described, described
