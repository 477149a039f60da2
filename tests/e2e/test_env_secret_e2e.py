"""``env: [NAME=secret://user/SECRET]``: the job gets the secret's value, as in Fuzzball,
and the value shows nowhere else: not in status, describe, logs, the stored records, nor
in any file the cluster keeps but the sealed store and the container's own config."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import LocalCluster, local_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """One local node and its orchestrator."""
    directory = tmp_path_factory.mktemp("env-secret")
    os.chmod(directory, 0o755)
    with local_cluster(directory, [busybox_image.registry.host], free_port(),
                       nodes=1) as running:
        yield running


def files_holding(root: Path, value: bytes) -> list[str]:
    """The files under ``root`` whose bytes hold ``value``."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*")
                  if path.is_file() and not path.is_symlink() and value in path.read_bytes())


def test_a_job_gets_the_secrets_value_in_its_environment_and_nothing_else_shows_it(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    value = "hf_" + secrets.token_urlsafe(24)
    cluster.ok("secret", "create", "HF_TOKEN", "--from-literal", value)
    fuzzfile = f"""\
version: v1
defaults:
  job:
    env: [FROM_DEFAULTS=secret://user/HF_TOKEN]
jobs:
  digest:
    image: {{uri: {busybox_image.reference}}}
    env: [TOKEN=secret://user/HF_TOKEN, PLAIN=kept]
    script: |
      echo -n "$TOKEN" | sha256sum
      echo -n "$FROM_DEFAULTS" | sha256sum
      echo "$PLAIN"
      exec sleep 600
"""
    cluster.start("hf", fuzzfile)
    cluster.wait_for("hf", "digest", "RUNNING", timeout=90)
    # while it runs: the orchestrator's data dir (store, server.log, job logs) and every
    # node's state hold the value only in the container's config (the store has it sealed)
    wait_until("the running container's config",
               lambda: bool(files_holding(cluster.directory, value.encode())))
    holders = files_holding(cluster.directory, value.encode())
    assert all(Path(path).name in ("config.json", "spec.json") for path in holders), holders
    modes = {path: (cluster.directory / path).stat().st_mode & 0o777 for path in holders}
    assert all(mode == 0o600 for mode in modes.values()), modes  # root only
    shown = [cluster.ok("workflow", "status", "hf", "--json").out,
             cluster.ok("workflow", "describe", "hf", "--json").out,
             cluster.ok("workflow", "describe", "hf").out]
    assert all(value not in text for text in shown)
    # the stored workflow record keeps the file as written: the reference, not the value
    assert files_holding(cluster.data_dir, b"TOKEN=secret://user/HF_TOKEN")
    cluster.ok("workflow", "stop", "hf")
    assert cluster.wait("hf")["state"] == "CANCELED"
    assert files_holding(cluster.directory, value.encode()) == []  # its config went with it
    digest = hashlib.sha256(value.encode()).hexdigest()
    log = cluster.ok("workflow", "log", "hf", "digest").out
    assert log.split() == [digest, "-", digest, "-", "kept"]
    assert value not in cluster.ok("workflow", "status", "hf", "--json").out


def test_a_missing_env_secret_fails_the_start_naming_the_file_and_field(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    path = cluster.directory / "nope.yaml"
    path.write_text(f"""\
version: v1
jobs:
  a:
    image: {{uri: {busybox_image.reference}}}
    env: [TOKEN=secret://user/NOPE]
    command: ["true"]
""")
    result = cluster.fuzz("workflow", "start", "nope", str(path))
    assert result.code == 1
    assert result.err.strip().endswith(
        "nope.yaml: jobs.a.env.TOKEN: no secret 'NOPE' (create it with: fuzz secret create"
        " NOPE)"), result.err
    assert cluster.fuzz("workflow", "status", "nope").code == 1  # nothing ran
