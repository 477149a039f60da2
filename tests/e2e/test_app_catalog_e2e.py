"""End to end: the applications of fuzz's own catalog (``catalog/``), served by the
orchestrator from ``orchestrator.catalogs`` and started with ``fuzz app start`` on a
local cluster (real server, agents, runc containers, registry, HTTP server); and an
application of the user's own catalog, cloned from a local git repository."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, Registry, free_port
from fuzz.testing.web import serve_directory
from tests.support.cliutil import run_fuzz
from tests.support.workflowutil import (
    LocalCluster,
    dump,
    local_cluster,
    safe_host_root,
    tasks_by_key,
)

CATALOG = Path(__file__).resolve().parents[2] / "catalog"


@pytest.fixture(scope="module")
def host_root() -> Iterator[Path]:
    """Where the pipeline's egress may write (the admin's part: ``<root>/admin/``)."""
    with safe_host_root() as root:
        yield root


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTP server with inputs.tar.gz: two text files, 6 words on 3 lines."""
    root = tmp_path_factory.mktemp("www")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in (("inputs/a.txt", "one two three\nfour\n"), ("inputs/b.txt", "5 6\n")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    (root / "inputs.tar.gz").write_bytes(buffer.getvalue())
    with serve_directory(root) as url:
        yield url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, registry: Registry, web: str,
            host_root: Path) -> Iterator[LocalCluster]:
    """Two local nodes; the orchestrator serves ``catalog/`` as catalog ``fuzz``."""
    directory = tmp_path_factory.mktemp("apps")
    os.chmod(directory, 0o755)  # jobs run as nobody; volumes live under it
    orchestrator = {"ingress": {"allow": [web.removeprefix("http://")]},
                    "catalogs": [{"name": "fuzz", "path": str(CATALOG)}]}
    with local_cluster(directory, [registry.host], free_port(), host_paths=[str(host_root)],
                       orchestrator=orchestrator) as running:
        yield running


def _started(cluster: LocalCluster, name: str, *args: str) -> dict[str, object]:
    cluster.ok("app", "start", *args, "--name", name)
    status = cluster.wait(name, timeout=300)
    assert status["state"] == "SUCCEEDED", dump(status)
    return status


def test_the_cluster_serves_its_catalogs_to_app_list(cluster: LocalCluster) -> None:
    listed = {entry["ref"]: entry for entry in cluster.ok("app", "list", "--json").json()}
    assert {"fuzz/mpi_hello_world", "fuzz/parameter_sweep", "fuzz/data_pipeline"} <= set(listed)
    assert {entry["source"] for entry in listed.values()} == {"cluster"}
    shown = cluster.ok("app", "show", "fuzz/data_pipeline", "--json").json()
    assert shown["category"] == "DATA_SCIENCE" and shown["source"] == "cluster"


def test_the_parameter_sweep_runs_as_a_task_array(cluster: LocalCluster,
                                                  busybox_image: PushedImage) -> None:
    status = _started(cluster, "sweep", "parameter_sweep", "--set",
                      f"Image={busybox_image.reference}", "--set", "Last=5",
                      "--set", "Concurrency=2")
    sweeps = [task for key, task in tasks_by_key(status).items() if key != "collect"]
    assert len(sweeps) == 5, dump(status)
    log = cluster.ok("workflow", "log", "sweep", "collect").out
    assert log.splitlines() == [f"x={x} result={3 * x * x}" for x in range(1, 6)] + \
        ["5 results"], log


def test_the_data_pipeline_fetches_counts_and_copies_out(
        cluster: LocalCluster, busybox_image: PushedImage, web: str, host_root: Path) -> None:
    out = host_root / "admin" / "app-pipeline"
    _started(cluster, "pipeline", "data_pipeline", "--set", f"Image={busybox_image.reference}",
             "--set", f"Input={web}/inputs.tar.gz", "--set", f"Output=file://{out}/")
    assert (out / "summary.txt").read_text() == "words=6 lines=3\n"


def test_the_mpi_hello_world_runs_over_two_nodes(cluster: LocalCluster,
                                                 openmpi_image: PushedImage) -> None:
    status = _started(cluster, "mpi", "mpi_hello_world", "--set",
                      f"Image={openmpi_image.reference}", "--set", "Nodes=2")
    assert len(set(tasks_by_key(status)["mpi-hello"]["nodes"])) == 2
    log = cluster.ok("workflow", "log", "mpi", "mpi-hello").out
    assert "rank 0 of 2" in log and "rank 1 of 2" in log and "ring=ok" in log, log


def test_an_application_of_the_users_git_catalog_starts(
        cluster: LocalCluster, busybox_image: PushedImage, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(CATALOG, repo)
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "mine"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                       check=True, capture_output=True)
    env = {"FUZZ_CONFIG": str(tmp_path / "config" / "config.yaml")}
    added = run_fuzz(cluster.directory, "app", "catalog", "add", "mine", f"file://{repo}@main",
                     env=env)
    assert added.code == 0, added.err
    listed = run_fuzz(cluster.directory, "app", "list", "--json", env=env).json()
    assert {(entry["ref"], entry["source"]) for entry in listed} >= {
        ("mine/parameter_sweep", "user"), ("fuzz/parameter_sweep", "cluster")}
    started = run_fuzz(cluster.directory, "app", "start", "mine/parameter_sweep", "--set",
                       f"Image={busybox_image.reference}", "--set", "Last=2", "--watch",
                       env=env, timeout=300)
    assert started.code == 0, started.err + started.out
    assert "workflow parameter_sweep run 1 started" in started.err
    bad = run_fuzz(cluster.directory, "app", "start", "mine/parameter_sweep", "--set",
                   "First=3", "--set", "Last=1", env=env)
    assert (bad.code, bad.err) == (
        1, f"{repo.parent / 'config' / 'catalogs' / 'mine'}/applications/parameter_sweep/"
        "template.yaml:3:6: fail: Last (1) must not be less than First (3)\n")
