"""A job's log is kept to its limit: real busybox jobs under runc, through the node's monitor.

The job prints far more than the limit, keeps running (it writes a file into a
volume afterwards and exits 0), and its log file ends with one marker line.
"""

from __future__ import annotations

from pathlib import Path

from fuzz.substrate.monitor.logpump import truncation_marker
from fuzz.substrate.runtime.bundle import ContainerSpec, Mount
from fuzz.substrate.runtime.containers import ContainerManager
from tests.substrate.test_substrate_containers import _id, image, manager  # noqa: F401 (fixtures)

MIB = 1024 * 1024


def test_output_past_the_log_limit_is_dropped_with_one_marker_line(
        manager: ContainerManager, image: Path, tmp_path: Path) -> None:  # noqa: F811
    volume = tmp_path / "volume"
    volume.mkdir()
    volume.chmod(0o777)  # the job runs as nobody
    limit = MIB
    spec = ContainerSpec(
        id=_id("loud"), rootfs=image, log_limit_bytes=limit,
        mounts=(Mount(volume, "/data"),),
        args=("sh", "-c", "dd if=/dev/zero bs=65536 count=128 2>/dev/null; echo small >&2; "
                          "echo carried-on > /data/after"))
    manager.start(spec)
    status = manager.wait(spec.id, timeout=60)
    assert (status.state, status.exit_code) == ("exited", 0), status
    assert (volume / "after").read_text() == "carried-on\n"  # it was not stopped
    stdout = manager.container_dir(spec.id) / "stdout.log"
    marker = truncation_marker(limit)
    assert stdout.stat().st_size == limit + len(marker)
    data = stdout.read_bytes()
    assert data[:limit] == bytes(limit) and data[limit:] == marker
    assert marker == (b"\n[fuzz: output truncated at 1048576 bytes "
                      b"(orchestrator.limits.job_log_bytes); the rest was dropped]\n")
    assert b"".join(manager.read_logs(spec.id, "stderr")) == b"small\n"  # under the limit


def test_output_within_the_limit_is_kept_whole_and_in_order(
        manager: ContainerManager, image: Path) -> None:  # noqa: F811
    spec = ContainerSpec(
        id=_id("quiet"), rootfs=image, log_limit_bytes=MIB,
        args=("sh", "-c", "for i in 1 2 3; do echo line$i; done; echo oops >&2; exit 3"))
    manager.start(spec)
    status = manager.wait(spec.id, timeout=30)
    assert status.exit_code == 3
    assert b"".join(manager.read_logs(spec.id, "stdout")) == b"line1\nline2\nline3\n"
    assert b"".join(manager.read_logs(spec.id, "stderr")) == b"oops\n"
