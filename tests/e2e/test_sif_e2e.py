"""End to end: jobs on ``oras://`` Apptainer SIF images, on a one-node local cluster.

The SIF images are real (a busybox squashfs from ``mksquashfs`` in a SIF container),
pushed with their Apptainer media types to a real docker-registry; the agent pulls
them with ORAS, unsquashes their root partition and runs the job through runc.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, Registry, free_port
from tests.support.sif import build_busybox_sif, push_sif
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key

JOB = """\
version: v1
jobs:
  hello:
    image: {{uri: {image}}}
    script: echo hello from $(cat /etc/flavour) on $(uname -s)
"""


@pytest.fixture(scope="module")
def own_sif(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> PushedImage:
    """A SIF of this module's own (its blob is no other test's): ``/etc/flavour`` says sif."""
    sif = build_busybox_sif(tmp_path_factory.mktemp("e2e-sif"), {"/etc/flavour": b"a sif\n"})
    return push_sif(sif, registry, "fuzz/e2e-sif", "1.0")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, registry: Registry,
            busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """One local node (so every workflow meets the same image store) and its orchestrator."""
    directory = tmp_path_factory.mktemp("sif-cluster")
    os.chmod(directory, 0o755)
    with local_cluster(directory, [registry.host], free_port(), nodes=1) as running:
        yield running


def blob_data(registry: Registry, digest: str) -> Path:
    """Where docker-registry keeps the bytes of the blob ``digest``."""
    algorithm, hexpart = digest.split(":", 1)
    return (registry.storage / "docker" / "registry" / "v2" / "blobs" / algorithm /
            hexpart[:2] / hexpart / "data")


def test_a_job_runs_on_an_oras_sif_image_and_a_second_workflow_reuses_it(
        cluster: LocalCluster, own_sif: PushedImage) -> None:
    cluster.start("sif-first", JOB.format(image=own_sif.reference))
    status = cluster.wait("sif-first")
    assert status["state"] == "SUCCEEDED", dump(status)
    assert cluster.ok("workflow", "log", "sif-first", "hello").out == "hello from a sif on Linux\n"
    image = status["images"][0]
    assert (image["uri"], image["state"], image["digest"]) == (
        own_sif.reference, "READY", own_sif.digest)
    # The SIF's bytes leave the registry: only the cached image can run the second workflow.
    layer = sif_layer_digest(own_sif)
    blob_data(own_sif.registry, layer).unlink()
    cluster.start("sif-second", JOB.format(image=own_sif.reference))
    second = cluster.wait("sif-second")
    assert second["state"] == "SUCCEEDED", dump(second)
    assert cluster.ok("workflow", "log", "sif-second", "hello").out == \
        "hello from a sif on Linux\n"
    assert second["images"][0]["digest"] == own_sif.digest


def sif_layer_digest(image: PushedImage) -> str:
    """The digest of the SIF layer of ``image``'s manifest, read from the registry's storage."""
    manifest = blob_data(image.registry, image.digest).read_text()
    layers = json.loads(manifest)["layers"]
    assert [layer["mediaType"] for layer in layers] == ["application/vnd.sylabs.sif.layer.v1.sif"]
    return str(layers[0]["digest"])


def test_a_corrupt_sif_and_a_wrong_media_type_fail_with_one_clear_error(
        cluster: LocalCluster, registry: Registry, busybox_image: PushedImage,
        tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.sif"
    corrupt.write_bytes(b"#!/usr/bin/env run-singularity\n" + b"\xff" * 4096)
    bad = push_sif(corrupt, registry, "fuzz/e2e-corrupt-sif")
    wrong = busybox_image.reference.replace("docker://", "oras://")
    expected = {
        bad.reference: f"image {bad.reference} is not a usable SIF: bad magic (not a SIF file)",
        wrong: f"image {wrong} is not a SIF image: its layers are",
    }
    for name, reference in (("sif-corrupt", bad.reference), ("sif-wrong-type", wrong)):
        cluster.start(name, JOB.format(image=reference))
        status = cluster.wait(name)
        assert status["state"] == "FAILED", dump(status)
        image = status["images"][0]
        assert image["state"] == "FAILED" and expected[reference] in image["error"], dump(status)
        assert "\n" not in image["error"] and "Traceback" not in image["error"]
        error = tasks_by_key(status)["hello"]["error"]
        assert error.startswith("pull failed: ") and expected[reference] in error, error
        table = " ".join(cluster.ok("workflow", "status", name).out.split())
        assert expected[reference].split(" is ", 1)[1] in table


def test_an_encrypted_sif_is_refused_when_the_fuzzfile_is_checked(
        cluster: LocalCluster, own_sif: PushedImage) -> None:
    path = cluster.directory / "encrypted.yaml"
    path.write_text(f"""\
version: v1
jobs:
  hello:
    image:
      uri: {own_sif.reference}
      decryption-secret: secret://user/SIF_KEY
    command: ["true"]
""")
    result = cluster.fuzz("workflow", "validate", str(path))
    assert result.code == 1
    assert result.err.strip() == (
        f"{path}:6:26: jobs.hello.image.decryption-secret: encrypted SIF images are not "
        "supported: fuzz cannot decrypt them; use an unencrypted image")
