"""End to end: a job's ``files`` (a top-level entry by ``file://KEY`` and literal content)
placed in its containers, read-only, on a local cluster of real agents running runc."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """Two local nodes and their orchestrator (a multinode job's ranks on both)."""
    directory = tmp_path_factory.mktemp("cluster")
    os.chmod(directory, 0o755)  # jobs run as their owner's uid; volumes live under it
    with local_cluster(directory, [busybox_image.registry.host], free_port()) as running:
        yield running


READ = (
    "cat /etc/app/params.csv; /usr/local/bin/entrypoint.sh direct;"
    " sh /usr/local/bin/entrypoint.sh through-sh;"
    " echo changed > /etc/app/params.csv 2>/dev/null || echo params-read-only;"
    " echo more >> /usr/local/bin/entrypoint.sh 2>/dev/null || echo script-read-only;"
    " cat /etc/app/params.csv"
)


def test_a_jobs_files_reach_every_task_and_rank_read_only(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    image = busybox_image.reference
    fuzzfile = f"""\
version: v1
files:
  params.csv: |
    alpha,beta
volumes:
  out: {{reference: volume://user/persistent/files-e2e}}
defaults:
  job:
    mounts: {{out: {{location: /out}}}}
jobs:
  read:
    image: {{uri: {image}}}
    script: {READ!r}
    files:
      /etc/app/params.csv: file://params.csv
      /usr/local/bin/entrypoint.sh: |-
        #!/bin/sh
        echo "entrypoint ran ($1)"
  sweep:
    image: {{uri: {image}}}
    script: cat /etc/app/params.csv > /out/task-$FUZZ_TASK_ID
    files: {{/etc/app/params.csv: file://params.csv}}
    task-array: {{start: 1, end: 3}}
  ranks:
    image: {{uri: {image}}}
    script: cat /tmp/rank.txt > /out/rank-$FUZZ_RANK
    files: {{/tmp/rank.txt: "same for every rank"}}
    multinode: {{nodes: 2, implementation: generic}}
  retried:
    image: {{uri: {image}}}
    script: |
      cat /etc/once.txt >> /out/retried
      test -f /out/failed-once && exit 0
      touch /out/failed-once; exit 3
    files: {{/etc/once.txt: "one copy\\n"}}
    policy: {{retry: {{attempts: 2}}}}
"""
    cluster.start("placed", fuzzfile)
    status = cluster.wait("placed", timeout=240)
    assert status["state"] == "SUCCEEDED", dump(status)
    assert sorted(tasks_by_key(status)) == ["ranks", "read", "retried", "sweep[1]",
                                            "sweep[2]", "sweep[3]"]
    assert cluster.ok("workflow", "log", "placed", "read").out.splitlines() == [
        "alpha,beta", "entrypoint ran (direct)", "entrypoint ran (through-sh)",
        "params-read-only", "script-read-only", "alpha,beta"]
    results = Path(cluster.volume_root) / "persistent" / "admin" / "files-e2e"
    assert sorted(path.name for path in results.iterdir()) == [
        "failed-once", "rank-0", "rank-1", "retried", "task-1", "task-2", "task-3"]
    assert {(results / f"task-{n}").read_text() for n in (1, 2, 3)} == {"alpha,beta\n"}
    assert {(results / f"rank-{n}").read_text() for n in (0, 1)} == {"same for every rank"}
    # the retry, a new container, had the file once, as the first attempt had
    assert (results / "retried").read_text() == "one copy\n" * 2
    # and the files went with the containers, on both nodes
    nodes = cluster.directory / ".fuzz" / "nodes"
    assert any(nodes.glob("**/containers")), "the nodes' state is not where it was"
    wait_until("the placed files removed with their containers",
               lambda: not list(nodes.glob("**/containers/*/files")), timeout=60)


def test_a_file_inside_a_mounted_volume_is_refused_with_its_line(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    path = cluster.directory / "inside.yaml"
    path.write_text(f"""\
version: v1
volumes:
  data: {{reference: volume://user/ephemeral}}
jobs:
  a:
    image: {{uri: {busybox_image.reference}}}
    command: [cat, /data/x]
    mounts: {{data: {{location: /data}}}}
    files: {{/data/x: hello}}
""")
    result = cluster.fuzz("workflow", "validate", str(path))
    assert result.code == 1
    assert result.err.strip().endswith(
        "inside.yaml:9:13: jobs.a.files./data/x: collides with volume 'data', mounted at"
        " /data: a file cannot be at, under or above a volume's location (to put a file in a"
        " volume, ingress it: source file://KEY)"), result.err
