"""Limits of issue 14 (point 6) checked without a cluster: the spec block, the Fuzzfile
checks (task-array bombs, concurrency), and ingress stopped at the volume limit
(a real HTTP server on 127.0.0.1, real files)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from fuzz.orchestrate.records import TransferRecord, VolumeRecord
from fuzz.orchestrate.transfer.ingress_egress import TransferError
from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
from fuzz.orchestrate.transfer.stream import CHUNK
from fuzz.orchestrate.transfer.volume_limits import VolumeLimits
from fuzz.orchestrate.workflows.jobids import JobIds
from fuzz.orchestrate.workflows.volumes import VolumeManager
from fuzz.spec.cluster import LimitsSpec
from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.spec.loader import load_cluster_spec
from fuzz.spec.problems import SpecError
from tests.support.cliutil import run_fuzz

MiB = 1024 * 1024

BOMB = """\
version: v1
jobs:
  small:
    image: {uri: "docker://127.0.0.1:9/busybox:1"}
    command: [/bin/true]
    task-array: {start: 1, end: 10}
  bomb:
    image: {uri: "docker://127.0.0.1:9/busybox:1"}
    command: [/bin/true]
    task-array:
      start: 1
      end: 999999999
"""

WIDE = """\
version: v1
jobs:
  wide:
    image: {uri: "docker://127.0.0.1:9/busybox:1"}
    command: [/bin/true]
    task-array: {start: 1, end: 300, concurrency: 201}
"""


def test_a_task_array_bomb_is_refused_fast_without_making_its_tasks() -> None:
    tracemalloc.start()
    began = time.monotonic()
    try:
        with pytest.raises(SpecError) as refused:
            parse_fuzzfile(BOMB, "bomb.yaml", limits=LimitsSpec())
        elapsed = time.monotonic() - began
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(refused.value)
    assert message.startswith("bomb.yaml:12:12: jobs.bomb.task-array.end: "), message
    assert "1,000,000,009 tasks" in message and "job 'bomb' makes 999,999,999" in message
    assert "limit of 10,000 tasks per workflow" in message
    assert "orchestrator.limits.tasks_per_workflow" in message
    assert elapsed < 2.0
    assert peak < 20 * MiB, f"validating the bomb took {peak} bytes"


def test_multinode_nodes_count_as_tasks_and_a_workflow_under_the_limit_passes() -> None:
    limits = LimitsSpec(tasks_per_workflow=10)
    fits = BOMB.replace("999999999", "1").replace("end: 10}", "end: 9}")
    assert parse_fuzzfile(fits, "ok.yaml", limits=limits).fuzzfile.jobs["bomb"]
    multinode = """\
version: v1
jobs:
  mpi:
    image: {uri: "docker://127.0.0.1:9/busybox:1"}
    command: [/bin/true]
    multinode: {nodes: 11, implementation: openmpi}
"""
    with pytest.raises(SpecError, match=r"mpi.yaml:6:24: jobs.mpi.multinode.nodes: this "
                       r"workflow would make 11 tasks"):
        parse_fuzzfile(multinode, "mpi.yaml", limits=limits)


def test_task_array_concurrency_over_200_is_refused_as_fuzzball_does() -> None:
    with pytest.raises(SpecError, match=r"wide.yaml:6:51: jobs.wide.task-array.concurrency: "
                       r"must be at most 200 \(Fuzzball's limit\)"):
        parse_fuzzfile(WIDE, "wide.yaml")
    lower = LimitsSpec(task_array_concurrency=50)
    with pytest.raises(SpecError, match=r"jobs.wide.task-array.concurrency: at most 50 tasks "
                       r"of a task array may run at once here "
                       r"\(orchestrator.limits.task_array_concurrency\)"):
        parse_fuzzfile(WIDE.replace("201", "51"), "wide.yaml", limits=lower)


def _spec(directory: Path, limits: object) -> Path:
    path = directory / "fuzz.yaml"
    path.write_text(yaml.safe_dump({
        "version": 1, "cluster": "limits", "providers": {"local": {}},
        "pools": {"cpu": {"provider": "local", "min": 1}},
        "orchestrator": {"listen": "127.0.0.1:7400", "limits": limits},
    }, sort_keys=False))
    return path


def test_the_limits_block_is_validated_with_file_line_and_field(tmp_path: Path) -> None:
    path = _spec(tmp_path, {"streams_per_user": 0, "volume_bytes": "lots",
                            "task_array_concurrency": 500, "job_log_bytes": "1MiB"})
    with pytest.raises(SpecError) as refused:
        load_cluster_spec(path, "fuzz.yaml")
    lines = str(refused.value).splitlines()
    assert any(line.startswith("fuzz.yaml:") and "orchestrator.limits.streams_per_user: "
               in line and "must be >= 1" in line for line in lines), lines
    assert any("orchestrator.limits.volume_bytes: invalid size 'lots'" in line
               for line in lines), lines
    assert any("orchestrator.limits.task_array_concurrency: " in line and "200" in line
               for line in lines), lines
    good = load_cluster_spec(_spec(tmp_path, {"job_log_bytes": "1MiB"}))
    assert good.spec.orchestrator is not None
    assert good.spec.orchestrator.limits.job_log_bytes == MiB
    assert good.spec.orchestrator.limits.tasks_per_workflow == 10_000


def test_workflow_validate_applies_the_known_clusters_limits(tmp_path: Path) -> None:
    _spec(tmp_path, {"tasks_per_workflow": 100})
    (tmp_path / "bomb.yaml").write_text(BOMB)
    result = run_fuzz(tmp_path, "workflow", "validate", "bomb.yaml", timeout=60)
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        "bomb.yaml:12:12: jobs.bomb.task-array.end: this workflow would make "
        "1,000,000,009 tasks (job 'bomb' makes 999,999,999), over the cluster's limit of "
        "100 tasks per workflow (orchestrator.limits.tasks_per_workflow)"], result.err


class _Endless(BaseHTTPRequestHandler):
    """Serves /big: 64 MiB in 64 KiB pieces, noting the volume's bytes before each."""

    volume: Path
    sent: list[int]
    on_disk: list[int]
    size = 64 * MiB
    piece = 64 * 1024

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(self.size))
        self.end_headers()
        sent = 0
        with contextlib.suppress(OSError):
            while sent < self.size:
                self.on_disk.append(_bytes_under(self.volume))
                self.wfile.write(b"x" * self.piece)
                sent += self.piece
                self.sent.append(sent)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def _bytes_under(root: Path) -> int:
    total = 0
    for base, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


@pytest.fixture
def endless(tmp_path: Path) -> Iterator[tuple[str, type[_Endless]]]:
    handler = type("Handler", (_Endless,), {"volume": tmp_path / "vol", "sent": [],
                                            "on_disk": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/big", handler
    finally:
        server.shutdown()
        server.server_close()


def test_ingress_stops_once_the_volume_limit_is_passed(
        tmp_path: Path, endless: tuple[str, type[_Endless]]) -> None:
    url, handler = endless
    limit = 3 * MiB
    # the test's server is on loopback: the admin's allow-list names it
    manager = VolumeManager(tmp_path, http_policy=IngressPolicy.from_spec(["127.0.0.1"], None))
    ids = JobIds(os.getuid(), os.getgid())
    volume = VolumeRecord("wf.1", "data", "volume://user/ephemeral", str(tmp_path / "vol"),
                          ephemeral=True)
    manager.create(volume, ids)
    (tmp_path / "vol" / "already.bin").write_bytes(b"y" * MiB)  # counts towards the limit
    move = TransferRecord("wf.1", "data", "ingress", 0, url, "file://big.bin")
    with pytest.raises(TransferError) as failed:
        manager.move(move, volume, "alice", None, lambda done, total: None, ids,
                     VolumeLimits(limit).ingress_budget(volume))
    assert str(failed.value) == (
        f"{url}: the volume 'data' would hold more than its limit of 3.0 MiB "
        "(orchestrator.limits.volume_bytes); ingress stopped")
    assert max(handler.on_disk) <= limit + CHUNK
    assert max(handler.sent) < _Endless.size // 2, "it downloaded everything first"
    assert _bytes_under(tmp_path / "vol") == MiB  # the failed file is gone
