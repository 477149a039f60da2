"""Files placed in a container (a Fuzzfile job's ``files``): the agent's checks and bounds,
the monitor's writing (relative to directory descriptors, never through a symlink), and
real jobs under runc reading them, read-only, and running a script from them."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from fuzz.clients.agent import AgentError
from fuzz.spec.containerfiles import MAX_FILES, MAX_FILES_BYTES
from fuzz.substrate.monitor.files import FILES_DIR, SPARE_PREFIX
from fuzz.substrate.monitor.placed import FILE_MODE, PlacementError, write_placed_files
from fuzz.substrate.runtime.bundle import (
    ContainerFile,
    ContainerSpec,
    ContainerSpecError,
    Mount,
    oci_config,
    spec_from_json,
    spec_to_json,
)
from fuzz.substrate.runtime.containers import ContainerManager
from tests.substrate import test_substrate_containers as containers
from tests.substrate.test_substrate_job_rpc import running_node
from tests.support.orchestratorutil import wait_until
from tests.support.registry import PushedImage

# The busybox root filesystem and the manager that checks nothing is left, shared.
image = containers.image
manager = containers.manager
_id = containers._id


def _spec(**changes: Any) -> ContainerSpec:
    fields: dict[str, Any] = {"id": "job-1", "rootfs": Path("/images/abc"), "args": ("true",)}
    fields.update(changes)
    return ContainerSpec(**fields)


# --- the agent's checks, as pure data ------------------------------------------------------


@pytest.mark.parametrize(("files", "mounts", "message"), [
    ((("etc/x", b""),), (), "must be an absolute path"),
    ((("/etc/../x", b""),), (), "must not contain '..'"),
    ((("/etc//x", b""),), (), "normal form"),
    ((("/", b""),), (), "over '/'"),
    ((("/proc/1/x", b""),), (), "under /proc"),
    ((("/dev/x", b""),), (), "under /dev"),
    ((("/sys", b""),), (), "under /sys"),
    ((("/a", b""), ("/a", b"")), (), "collides with the file at /a"),
    ((("/a", b""), ("/a/b", b"")), (), "collides with the file at /a"),
    ((("/data/x", b""),), (Mount(Path("/v"), "/data"),),
     "collides with the mount at /data"),
    ((("/data", b""),), (Mount(Path("/v"), "/data/in"),),
     "collides with the mount at /data/in"),
    ((("/a", b"x" * (MAX_FILES_BYTES // 2)),
      ("/b", b"x" * (MAX_FILES_BYTES // 2 + 1))), (),
     f"its files hold {MAX_FILES_BYTES + 1:,} bytes, over the agent's limit of"
     f" {MAX_FILES_BYTES:,}"),
    (tuple((f"/f/{n}", b"") for n in range(MAX_FILES + 1)), (),
     f"{MAX_FILES + 1} files, over the agent's limit of {MAX_FILES}"),
])
def test_the_agent_refuses_files_it_cannot_place(
        files: tuple[tuple[str, bytes], ...], mounts: tuple[Mount, ...], message: str) -> None:
    with pytest.raises(ContainerSpecError, match=re.escape(message)):
        _spec(files=tuple(ContainerFile(path, content) for path, content in files),
              mounts=mounts)


def test_files_become_read_only_binds_after_the_volumes_and_round_trip() -> None:
    spec = _spec(files=(ContainerFile("/tmp/run.sh", b"#!/bin/sh\n"),
                        ContainerFile("/etc/app.conf", b"\x00\xffbytes")),
                 mounts=(Mount(Path("/v"), "/data"),))
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec
    config = oci_config(spec, "/state/job-1/rootfs", files_dir="/state/job-1/files")
    destinations = [mount["destination"] for mount in config["mounts"]]
    assert destinations[-3:] == ["/data", "/tmp/run.sh", "/etc/app.conf"]
    assert destinations.index("/tmp") < destinations.index("/tmp/run.sh")  # over the tmpfs
    placed = config["mounts"][-2:]
    assert [mount["source"] for mount in placed] == ["/state/job-1/files/0",
                                                     "/state/job-1/files/1"]
    assert all(mount["type"] == "bind" and "ro" in mount["options"] for mount in placed)
    with pytest.raises(ContainerSpecError, match="files_dir"):
        oci_config(spec, "/state/job-1/rootfs")


# --- the monitor's writing -------------------------------------------------------------------


def test_the_files_are_written_into_the_container_directory(tmp_path: Path) -> None:
    write_placed_files(str(tmp_path), [b"one", b"", b"#!/bin/sh\n"])
    written = sorted((tmp_path / FILES_DIR).iterdir())
    assert [path.name for path in written] == ["0", "1", "2"]
    assert [path.read_bytes() for path in written] == [b"one", b"", b"#!/bin/sh\n"]
    assert all(stat.S_IMODE(path.stat().st_mode) == FILE_MODE for path in written)


def test_a_symlink_planted_in_the_container_directory_is_not_followed(tmp_path: Path) -> None:
    container, elsewhere = tmp_path / "container", tmp_path / "elsewhere"
    container.mkdir()
    elsewhere.mkdir()
    (container / FILES_DIR).symlink_to(elsewhere)
    with pytest.raises(PlacementError, match=f"'{FILES_DIR}' is already in"):
        write_placed_files(str(container), [b"secret"])
    assert list(elsewhere.iterdir()) == []
    # nor a link in place of the container directory itself
    (tmp_path / "link").symlink_to(elsewhere)
    with pytest.raises(PlacementError):
        write_placed_files(str(tmp_path / "link"), [b"secret"])
    assert list(elsewhere.iterdir()) == []


# --- real jobs under runc ----------------------------------------------------------------------


SCRIPT = (
    "cat /etc/app.conf; cat /tmp/in/params.csv; /opt/bin/run.sh from-job;"
    " echo x > /etc/app.conf || echo conf-is-readonly;"
    " rm /etc/app.conf || echo cannot-remove;"
    " ls -ln /opt/bin/run.sh | head -c 10"
)


def test_a_job_reads_its_files_read_only_and_runs_a_script_from_them(
        manager: ContainerManager, image: Path) -> None:
    spec = ContainerSpec(
        id=_id("files"), rootfs=image, args=("sh", "-c", SCRIPT), uid=1000, gid=1000,
        files=(ContainerFile("/etc/app.conf", b"threads = 4\n"),
               ContainerFile("/tmp/in/params.csv", b"alpha,beta\n"),
               ContainerFile("/opt/bin/run.sh", b'#!/bin/sh\necho "script ran with $1"\n')))
    manager.start(spec)
    status = manager.wait(spec.id, timeout=30)
    out = b"".join(manager.read_logs(spec.id, "stdout")).decode()
    err = b"".join(manager.read_logs(spec.id, "stderr")).decode()
    assert (status.state, status.exit_code) == ("exited", 0), (status, err)
    assert out.splitlines() == ["threads = 4", "alpha,beta", "script ran with from-job",
                                "conf-is-readonly", "cannot-remove", "-rwxr-xr-x"]
    directory = manager.container_dir(spec.id)
    assert (directory / FILES_DIR / "0").read_bytes() == b"threads = 4\n"  # unchanged
    manager.remove(spec.id)
    assert not directory.exists()  # the files go with the container


def test_a_symlink_planted_in_the_next_container_directory_fails_the_start_only(
        manager: ContainerManager, image: Path, tmp_path: Path) -> None:
    first = ContainerSpec(id=_id("first"), rootfs=image, args=("true",))
    manager.start(first)
    manager.wait(first.id, timeout=30)
    def spares() -> list[Path]:
        return [path for path in manager.root.iterdir() if path.name.startswith(SPARE_PREFIX)]

    wait_until("the monitor to make the next container's directory in advance",
               lambda: bool(spares()))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for spare in spares():
        (spare / FILES_DIR).symlink_to(elsewhere)
    spec = ContainerSpec(id=_id("planted"), rootfs=image, args=("cat", "/etc/x"),
                         files=(ContainerFile("/etc/x", b"secret"),))
    status = manager.start(spec)
    if not status.finished:
        status = manager.wait(spec.id, timeout=30)
    assert status.state == "failed" and status.error is not None
    assert f"'{FILES_DIR}' is already in" in status.error and "\n" not in status.error
    assert list(elsewhere.iterdir()) == []
    assert os.path.islink(manager.container_dir(spec.id) / FILES_DIR)  # left, never followed


# --- through a real agent, over gRPC -----------------------------------------------------------


def test_the_agent_places_files_sent_to_it_and_refuses_what_breaks_its_rules(
        tmp_path: Path, busybox_image: PushedImage) -> None:
    with running_node(tmp_path, busybox_image) as (_, client):
        lease = client.acquire_lease(1, memory_bytes=64 * 2**20, holder="test")
        refusals = [
            ([("/a", b"x" * MAX_FILES_BYTES), ("/b", b"y")],
             f"its files hold {MAX_FILES_BYTES + 1:,} bytes, over the agent's limit"),
            ([("/proc/x", b"")], "/proc/x is under /proc"),
            ([("/data/x", b"")], "collides with the mount at /data"),
        ]
        for files, message in refusals:
            with pytest.raises(AgentError, match=re.escape(message)):
                client.start_container("job-refused", busybox_image.reference, lease.id,
                                       args=["true"], files=files,
                                       mounts=[(str(tmp_path), "/data", True)])
        assert client.list_containers() == []
        client.start_container("job-files", busybox_image.reference, lease.id,
                               args=["cat", "/etc/from-rpc"],
                               files=[("/etc/from-rpc", b"over grpc\n")])
        done = client.wait_container("job-files", 30)
        assert (done.state, done.exit_code) == ("exited", 0), done
        assert b"".join(client.stream_logs("job-files")) == b"over grpc\n"
        client.remove_container("job-files")
