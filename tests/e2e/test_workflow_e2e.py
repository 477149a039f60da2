"""End to end: Fuzzfiles run on a local cluster (real server, real agents, real runc containers).

Every test drives the ``fuzz`` CLI in subprocesses against one cluster of two
local nodes that joined a detached ``fuzz server``; images come from a real
docker-registry, ingress from a real HTTP server.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fuzz.crypto import pki
from fuzz.testing.oci import PushedImage, free_port
from fuzz.testing.web import serve_directory
from tests.support.cliutil import read_state
from tests.support.moto_s3 import MotoS3
from tests.support.workflowutil import (
    FIRST_OWNER_ID,
    LocalCluster,
    dump,
    local_cluster,
    safe_host_root,
    tasks_by_key,
)


@pytest.fixture(scope="module")
def host_root() -> Iterator[Path]:
    """Where the tests' egress may write (the admin's part of it: ``<root>/admin/``)."""
    with safe_host_root() as root:
        yield root


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTP server with inputs.tar.gz (two text files under inputs/)."""
    root = tmp_path_factory.mktemp("www")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in (("inputs/a.txt", "one two three\nfour\n"),
                           ("inputs/b.txt", "five six\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / "inputs.tar.gz").write_bytes(buffer.getvalue())
    with serve_directory(root) as url:
        yield url, root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: PushedImage,
            auth_busybox_image: PushedImage, web: tuple[str, Path],
            moto_s3: MotoS3, host_root: Path) -> Iterator[LocalCluster]:
    """Two local nodes and their orchestrator, for every test of this module.

    Its transfers may reach ``web`` and ``moto_s3`` (on loopback: the admin allows
    them) and, in the allow-list but refused all the same, the orchestrator's own port.
    """
    directory = tmp_path_factory.mktemp("cluster")
    os.chmod(directory, 0o755)  # jobs run as nobody; volumes live under it
    registries = [busybox_image.registry.host, auth_busybox_image.registry.host]
    port = free_port()
    allow = [web[0].removeprefix("http://"), moto_s3.endpoint_url.removeprefix("http://"),
             f"127.0.0.1:{port}"]
    with local_cluster(directory, registries, port, host_paths=[str(host_root)],
                       orchestrator={"ingress": {"allow": allow}}) as running:
        yield running


PIPELINE = """\
version: v1
volumes:
  data:
    reference: volume://user/ephemeral
    ingress:
      - source: {{uri: {url}/inputs.tar.gz}}
        destination: {{uri: file://inputs.tar.gz}}
    egress:
      - source: {{uri: file://results/summary.txt}}
        destination: {{uri: file://{out}/summary.txt}}
jobs:
  untar:
    image: {{uri: {image}}}
    command: [tar, -xzf, /data/inputs.tar.gz, -C, /data]
    mounts: {{data: {{location: /data}}}}
    resource: {{cpu: {{cores: 1, affinity: NUMA}}, memory: {{size: 64MiB}}}}
  count-words:
    image: {{uri: {image}}}
    script: |
      mkdir -p /data/results
      date +%s%N > /data/results/words.start
      sleep 1
      cat /data/inputs/*.txt | wc -w > /data/results/words
      date +%s%N > /data/results/words.end
    mounts: {{data: {{location: /data}}}}
    resource: {{cpu: {{cores: 1, affinity: CORE}}, memory: {{size: 32MiB, by-core: true}}}}
    requires: [untar]
  count-lines:
    image: {{uri: {image}}}
    script: |
      mkdir -p /data/results
      date +%s%N > /data/results/lines.start
      sleep 1
      cat /data/inputs/*.txt | wc -l > /data/results/lines
      date +%s%N > /data/results/lines.end
    mounts: {{data: {{location: /data}}}}
    resource: {{cpu: {{cores: 1, affinity: SOCKET}}}}
    requires: [untar]
  summary:
    image: {{uri: {image}}}
    command: [/bin/sh, -c]
    args: ['echo "$GREETING words=$(cat words) lines=$(cat lines) uid=$(id -u)" > summary.txt']
    cwd: /data/results
    env: [GREETING=hello]
    mounts: {{data: {{location: /data}}}}
    requires: [count-words, count-lines]
"""


def test_nodes_joined_over_mutual_tls_with_certificates_of_their_own(
        cluster: LocalCluster) -> None:
    rows = cluster.ok("node", "list", "--json").json()
    assert [row["agent"] for row in rows] == ["ready", "ready"]  # asked with mutual TLS
    for row in rows:
        state_dir = Path(read_state(cluster.directory)["resources"][row["address"]]
                         ["observed"]["state_dir"])
        cert = pki.load_cert((state_dir / "tls" / "node.crt").read_bytes())
        assert pki.common_name(cert) == row["address"]
        assert (state_dir / "tls" / "ca.pem").read_bytes() == \
            (cluster.data_dir / "ca.pem").read_bytes()
    audit = (cluster.data_dir / "audit.log").read_text()
    for row in rows:
        assert f'"who": "node:{row["address"]}", "action": "node:enroll"' in audit


def test_a_pipeline_runs_end_to_end(cluster: LocalCluster, web: tuple[str, Path],
                                    busybox_image: PushedImage, host_root: Path) -> None:
    url, root = web
    out = host_root / "admin" / "pipeline"
    cluster.start("pipeline", PIPELINE.format(url=url, out=out, image=busybox_image.reference))
    status = cluster.wait("pipeline")
    assert status["state"] == "SUCCEEDED", dump(status)
    # the admin's own job uid: the first id of orchestrator.job_ids (its first owner)
    assert (out / "summary.txt").read_text() == f"hello words=6 lines=3 uid={FIRST_OWNER_ID}\n"
    written = (out / "summary.txt").stat()  # the owner's, readable by nobody else
    assert (written.st_uid, oct(written.st_mode & 0o777)) == (FIRST_OWNER_ID, "0o640")
    assert oct((host_root / "admin").stat().st_mode & 0o777) == "0o700"
    tasks = tasks_by_key(status)
    assert [t["state"] for t in tasks.values()] == ["SUCCEEDED"] * 4
    assert all(t["nodes"] and t["attempt"] == 1 for t in tasks.values())
    # the two counting jobs ran side by side, after untar and before summary
    assert tasks["count-words"]["started"] < tasks["count-lines"]["finished"]
    assert tasks["count-lines"]["started"] < tasks["count-words"]["finished"]
    assert tasks["untar"]["finished"] <= min(tasks["count-words"]["started"],
                                             tasks["count-lines"]["started"])
    assert tasks["summary"]["started"] >= max(tasks["count-words"]["finished"],
                                              tasks["count-lines"]["finished"])
    volume = status["volumes"][0]
    assert volume["state"] == "DELETED"  # ephemeral: gone with its workflow
    ingress, egress = volume["transfers"]
    tarball = (root / "inputs.tar.gz").read_bytes()
    assert ingress["state"] == "DONE" and int(ingress["bytes_done"]) == len(tarball)
    assert ingress["sha256"] == hashlib.sha256(tarball).hexdigest()
    assert egress["state"] == "DONE" and egress["sha256"] == hashlib.sha256(
        (out / "summary.txt").read_bytes()).hexdigest()
    assert status["images"][0]["state"] == "READY"
    assert status["images"][0]["digest"] == busybox_image.digest
    assert not list((cluster.volume_root / "ephemeral").glob("pipeline.*/*"))


def test_a_failed_job_stops_its_dependents_and_retries_are_honoured(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    fuzzfile = f"""\
version: v1
volumes:
  scratch: {{reference: volume://user/ephemeral}}
jobs:
  flaky:
    image: {{uri: {busybox_image.reference}}}
    script: |
      if [ -f /scratch/tried ]; then exit 0; fi
      touch /scratch/tried; echo first try fails >&2; exit 3
    mounts: {{scratch: {{location: /scratch}}}}
    policy: {{retry: {{attempts: 2}}}}
  broken:
    image: {{uri: {busybox_image.reference}}}
    command: [sh, -c, "echo about to fail; exit 7"]
  after-broken:
    image: {{uri: {busybox_image.reference}}}
    command: ["true"]
    requires: [broken, flaky]
  slow:
    image: {{uri: {busybox_image.reference}}}
    script: trap 'exit 143' TERM; sleep 30 & wait
    policy: {{timeout: {{execute: 1s}}}}
"""
    cluster.start("failing", fuzzfile)
    status = cluster.wait("failing")
    tasks = tasks_by_key(status)
    assert status["state"] == "FAILED", dump(status)
    assert tasks["flaky"]["state"] == "SUCCEEDED" and tasks["flaky"]["attempt"] == 2
    assert tasks["broken"]["state"] == "FAILED" and tasks["broken"]["exit_code"] == 7
    assert tasks["broken"]["error"] == "exit code 7"
    assert tasks["after-broken"]["state"] == "NOT_RUN"
    assert tasks["after-broken"]["error"] == "required job 'broken' failed"
    assert tasks["slow"]["state"] == "FAILED" and "timed out after 1s" in tasks["slow"]["error"]
    assert "job 'broken' failed" in status["error"] or "job 'slow' failed" in status["error"]
    log = cluster.ok("workflow", "log", "failing", "broken")
    assert log.out == "about to fail\n"
    assert cluster.ok("workflow", "log", "failing", "flaky", "--stderr").out == ""
    # the status table names the failure; --watch exits 1 for a failed workflow
    table = cluster.ok("workflow", "status", "failing").out
    assert "exit code 7" in table and "NOT_RUN" in table
    assert cluster.fuzz("workflow", "status", "failing", "--watch").code == 1


def test_task_arrays_multinode_exclusive_and_persistent_volumes(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    fuzzfile = f"""\
version: v1
volumes:
  results: {{reference: volume://user/persistent/e2e-results}}
jobs:
  sweep:
    image: {{uri: {busybox_image.reference}}}
    script: echo "task $FB_TASK_ID" > /results/task-$FUZZ_TASK_ID
    mounts: {{results: {{location: /results}}}}
    task-array: {{start: 1, end: 4, concurrency: 2}}
  ranks:
    image: {{uri: {busybox_image.reference}}}
    script: echo "rank $FUZZ_RANK of $FUZZ_NODE_COUNT" > /results/rank-$FUZZ_RANK
    mounts: {{results: {{location: /results}}}}
    multinode: {{nodes: 2, implementation: generic}}
    requires: [sweep]
  whole-node:
    image: {{uri: {busybox_image.reference}}}
    script: nproc > /results/whole-node
    mounts: {{results: {{location: /results}}}}
    resource: {{cpu: {{cores: 2}}, exclusive: true}}
    requires: [ranks]
"""
    cluster.start("arrays", fuzzfile)
    status = cluster.wait("arrays")
    assert status["state"] == "SUCCEEDED", dump(status)
    tasks = tasks_by_key(status)
    assert sorted(tasks) == ["ranks", "sweep[1]", "sweep[2]", "sweep[3]", "sweep[4]",
                             "whole-node"]
    assert len(set(tasks["ranks"]["nodes"])) == 2
    results = cluster.volume_root / "persistent" / "admin" / "e2e-results"
    assert sorted(p.name for p in results.iterdir()) == [
        "rank-0", "rank-1", "task-1", "task-2", "task-3", "task-4", "whole-node"]
    assert (results / "task-3").read_text() == "task 3\n"
    assert (results / "rank-1").read_text() == "rank 1 of 2\n"
    assert (results / "whole-node").read_text() == "2\n"
    assert status["volumes"][0]["state"] == "DONE"  # persistent: kept


def test_cancel_stops_running_jobs_and_skips_the_rest(cluster: LocalCluster,
                                                      busybox_image: PushedImage) -> None:
    fuzzfile = f"""\
version: v1
jobs:
  long:
    image: {{uri: {busybox_image.reference}}}
    script: trap 'exit 143' TERM; sleep 300 & wait
  next:
    image: {{uri: {busybox_image.reference}}}
    command: ["true"]
    requires: [long]
"""
    cluster.start("cancelled", fuzzfile)
    cluster.wait_for("cancelled", "long", "RUNNING")
    cluster.ok("workflow", "cancel", "cancelled")
    status = cluster.wait("cancelled", timeout=60)
    tasks = tasks_by_key(status)
    assert status["state"] == "CANCELED", dump(status)
    assert tasks["long"]["state"] == "CANCELED" and tasks["next"]["state"] == "CANCELED"
    listing = cluster.ok("workflow", "list", "--json").json()
    assert {w["name"]: w["state"] for w in listing}["cancelled"] == "CANCELED"


def test_bad_fuzzfiles_are_refused_before_anything_runs(cluster: LocalCluster,
                                                        busybox_image: PushedImage) -> None:
    path = cluster.directory / "bad.yaml"
    path.write_text(f"""\
version: v1
jobs:
  big:
    image: {{uri: {busybox_image.reference}}}
    command: ["true"]
    resource: {{cpu: {{cores: 64}}}}
    requires: [untarr]
""")
    result = cluster.fuzz("workflow", "start", "bad", str(path))
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert any(":7:16: jobs.big.requires" in line and "unknown job 'untarr'" in line
               for line in lines), result.err
    assert any("needs 64 cores; the largest node has" in line for line in lines), result.err
    assert cluster.fuzz("workflow", "status", "bad").code == 1


def test_files_of_the_orchestrator_host_outside_host_paths_are_refused(
        cluster: LocalCluster, busybox_image: PushedImage, host_root: Path) -> None:
    path = cluster.directory / "steal.yaml"
    path.write_text(f"""\
version: v1
volumes:
  loot:
    reference: volume://user/ephemeral
    ingress:
      - {{source: {{uri: file:///etc/shadow}}, destination: {{uri: file://shadow}}}}
jobs:
  show:
    image: {{uri: {busybox_image.reference}}}
    command: [cat, /loot/shadow]
    mounts: {{loot: {{location: /loot}}}}
""")
    result = cluster.fuzz("workflow", "start", "steal", str(path))
    assert result.code == 1
    assert result.err.strip() == (
        f"Error: permission denied: {path}: volumes.loot.ingress[0]: file:///etc/shadow: "
        "outside the directories workflows of admin may use on the orchestrator host "
        f"({host_root}/admin/; an admin lists the roots under orchestrator.host_paths)"
    ), result.err
    assert cluster.fuzz("workflow", "status", "steal").code == 1


def test_a_restarted_server_finishes_the_workflow_without_rerunning_jobs(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    fuzzfile = f"""\
version: v1
volumes:
  marks: {{reference: volume://user/persistent/e2e-restart}}
jobs:
  first:
    image: {{uri: {busybox_image.reference}}}
    script: echo ran >> /marks/first
    mounts: {{marks: {{location: /marks}}}}
  long:
    image: {{uri: {busybox_image.reference}}}
    script: |
      echo started >> /marks/long
      until [ -e /marks/go ]; do sleep 0.2; done
      echo done >> /marks/long
    mounts: {{marks: {{location: /marks}}}}
    requires: [first]
  last:
    image: {{uri: {busybox_image.reference}}}
    script: echo ran >> /marks/last
    mounts: {{marks: {{location: /marks}}}}
    requires: [long]
"""
    cluster.start("restart", fuzzfile)
    cluster.wait_for("restart", "long", "RUNNING")
    os.kill(cluster.server_pid(), signal.SIGKILL)
    time.sleep(0.5)
    cluster.ok("server", "--detach")
    marks = cluster.volume_root / "persistent" / "admin" / "e2e-restart"
    (marks / "go").touch()  # long ends only now, after the restart, however loaded the machine
    status = cluster.wait("restart")
    assert status["state"] == "SUCCEEDED", dump(status)
    tasks = tasks_by_key(status)
    assert [tasks[k]["attempt"] for k in ("first", "long", "last")] == [1, 1, 1]
    assert (marks / "first").read_text() == "ran\n"  # not run again
    assert (marks / "long").read_text() == "started\ndone\n"  # re-adopted, not restarted
    assert (marks / "last").read_text() == "ran\n"


def test_secrets_pull_private_images_and_never_show_their_value(
        cluster: LocalCluster, auth_busybox_image: PushedImage) -> None:
    registry = auth_busybox_image.registry
    value = f"{registry.username}:{registry.password}"
    made = cluster.ok("secret", "create", "regcred", "--from-literal", value, "--json")
    assert value not in made.out and registry.password not in made.out
    assert cluster.fuzz("secret", "create", "regcred", "--from-literal", "x").code == 1
    fuzzfile = f"""\
version: v1
jobs:
  private:
    image: {{uri: {auth_busybox_image.reference}, secret: secret://user/regcred}}
    script: env; echo private image ran
"""
    cluster.start("private", fuzzfile)
    status = cluster.wait("private")
    assert status["state"] == "SUCCEEDED", dump(status)
    password = str(registry.password)
    outputs = [
        cluster.ok("workflow", "status", "private", "--json").out,
        cluster.ok("workflow", "describe", "private").out,
        cluster.ok("workflow", "log", "private", "private").out,
        cluster.ok("secret", "list", "--json").out,
    ]
    assert "private image ran" in outputs[2]
    assert all(password not in text for text in outputs)
    stored = b"".join(path.read_bytes() for path in cluster.data_dir.rglob("*")
                      if path.is_file())
    assert password.encode() not in stored
    unknown = cluster.directory / "unknown-secret.yaml"
    unknown.write_text(fuzzfile.replace("regcred", "nope"))
    result = cluster.fuzz("workflow", "start", "private2", str(unknown))
    assert result.code == 1 and "no secret 'nope'" in result.err
    cluster.ok("secret", "delete", "regcred")
    assert "regcred" not in cluster.ok("secret", "list").out


def test_workflows_declared_in_the_spec_are_planned_and_applied(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    spec = cluster.directory / "fuzz.yaml"
    original = spec.read_text()
    pipeline = cluster.directory / "ci.yaml"
    body = f"""\
version: v1
jobs:
  build:
    image: {{uri: {busybox_image.reference}}}
    command: [echo, "{{message}}"]
"""
    pipeline.write_text(body.replace("{message}", "first"))
    spec.write_text(original + "workflows:\n  ci: {file: ci.yaml}\n")
    try:
        planned = cluster.ok("plan", "--json").json()
        assert [(w["name"], w["action"]) for w in planned["workflows"]] == [("ci", "start")]
        assert cluster.fuzz("plan", "--detailed-exitcode").code == 2
        applied = cluster.ok("apply", "--auto-approve")
        assert "started workflow ci run 1 (no run recorded)" in applied.out
        assert cluster.wait("ci")["state"] == "SUCCEEDED"
        assert cluster.ok("workflow", "log", "ci", "build").out == "first\n"
        assert cluster.fuzz("plan", "--detailed-exitcode").code == 0
        assert "unchanged ci: run 1 (succeeded) used this content" in cluster.ok("plan").out
        pipeline.write_text(body.replace("{message}", "second"))
        assert "new run of ci: ci.yaml changed since run 1" in cluster.ok("plan").out
        assert "started workflow ci run 2" in cluster.ok("apply", "--auto-approve").out
        assert cluster.wait("ci")["run"] == 2
        assert cluster.ok("workflow", "log", "ci", "build").out == "second\n"
    finally:
        spec.write_text(original)


def test_s3_ingress_and_egress_with_a_secret_and_a_failed_transfer(
        cluster: LocalCluster, busybox_image: PushedImage, moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    moto_s3.client().put_object(Bucket=bucket, Key="in/data.txt", Body=b"from s3\n")
    cluster.ok("secret", "create", "s3creds", "--from-literal",
               f"AWS_ACCESS_KEY_ID={moto_s3.access_key_id}\n"
               f"AWS_SECRET_ACCESS_KEY={moto_s3.secret_access_key}\n"
               f"AWS_ENDPOINT_URL={moto_s3.endpoint_url}\nAWS_REGION={moto_s3.region}\n")
    fuzzfile = f"""\
version: v1
volumes:
  work:
    reference: volume://user/ephemeral
    ingress:
      - source: {{uri: s3://{bucket}/in/data.txt, secret: secret://user/s3creds}}
        destination: {{uri: file://data.txt}}
    egress:
      - source: {{uri: file://out.txt}}
        destination: {{uri: s3://{bucket}/out/result.txt, secret: secret://user/s3creds}}
jobs:
  upper:
    image: {{uri: {busybox_image.reference}}}
    script: tr a-z A-Z < /work/data.txt > /work/out.txt
    mounts: {{work: {{location: /work}}}}
"""
    cluster.start("s3", fuzzfile)
    status = cluster.wait("s3")
    assert status["state"] == "SUCCEEDED", dump(status)
    body = moto_s3.client().get_object(Bucket=bucket, Key="out/result.txt")["Body"].read()
    assert body == b"FROM S3\n"
    assert moto_s3.secret_access_key not in cluster.ok("workflow", "describe", "s3").out
    missing = fuzzfile.replace("in/data.txt", "in/absent.txt")
    cluster.start("s3-missing", missing)
    failed = cluster.wait("s3-missing")
    assert failed["state"] == "FAILED"
    assert f"s3://{bucket}/in/absent.txt" in failed["error"], dump(failed)
    assert tasks_by_key(failed)["upper"]["state"] == "NOT_RUN"
    assert failed["volumes"][0]["transfers"][1]["state"] == "SKIPPED"  # no egress after that


PROBE = """\
version: v1
volumes:
  loot:
    reference: volume://user/ephemeral
    ingress:
      - {{source: {{uri: {uri}}}, destination: {{uri: file://loot}}}}
jobs:
  show:
    image: {{uri: {image}}}
    command: [cat, /loot/loot]
    mounts: {{loot: {{location: /loot}}}}
"""


def test_ingress_cannot_probe_the_inside(cluster: LocalCluster, busybox_image: PushedImage,
                                         tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("internal\n")
    listen = yaml.safe_load((cluster.directory / "fuzz.yaml").read_text())["orchestrator"]
    agent = cluster.ok("node", "list", "--json").json()[0]["endpoint"]
    with serve_directory(tmp_path) as internal:  # on loopback, not in the allow-list
        port = internal.rpartition(":")[2]
        cases = {
            f"{internal}/secret.txt": f"refusing to fetch from 127.0.0.1 port {port}: a loopback "
            "address (an admin may allow it under orchestrator.ingress.allow, naming that one "
            "address)",
            # allow-listed, and refused all the same: the cluster's own ports
            f"http://{listen['listen']}/": "refusing to fetch from 127.0.0.1 port "
            f"{listen['listen'].rpartition(':')[2]}: the orchestrator's or a node agent's port",
            f"http://{agent}/": f"refusing to fetch from 127.0.0.1 port "
            f"{agent.rpartition(':')[2]}: the orchestrator's or a node agent's port",
        }
        for number, (uri, reason) in enumerate(cases.items()):
            name = f"probe-{number}"
            cluster.start(name, PROBE.format(uri=uri, image=busybox_image.reference))
            status = cluster.wait(name)
            assert status["state"] == "FAILED", dump(status)
            assert f"{uri}: {reason}" in status["error"], dump(status)
            assert status["volumes"][0]["transfers"][0]["state"] == "FAILED", dump(status)
            assert tasks_by_key(status)["show"]["state"] == "NOT_RUN"
