"""The benchmarks' peers (bench/peers/) run for real: a one-node Slurm with munge, and
podman pulling from a local registry. Each is started, runs a few jobs whose output is
checked, and is torn down with nothing left behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bench.peers.podman import podman
from bench.peers.slurm import container_bundle, slurm
from fuzz.substrate.runtime.bundle import ContainerSpec, oci_config
from fuzz.testing.oci import PushedImage, run_checked


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def test_slurm_peer_runs_steps_arrays_and_containers_then_leaves_nothing(
        busybox_layout: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "unpacked"
    run_checked(["umoci", "unpack", "--image", f"{busybox_layout}:latest", str(unpacked)])
    rootfs = unpacked / "rootfs"
    config = oci_config(ContainerSpec(id="peer", rootfs=rootfs, args=("/bin/true",)), rootfs,
                        nofile=1024)
    bundle = container_bundle(unpacked, config)
    marks = tmp_path / "array-marks"
    with slurm(2) as peer:
        workdir = peer.workdir
        node = peer.client("scontrol", "show", "node", "bench").stdout
        assert "CPUTot=2 " in node and "State=IDLE" in node

        steps = peer.steps(4, ("sh", "-c", "echo step $SLURM_STEP_ID"))
        assert sorted(steps.output.split("\n")[:-1]) == [f"step {i}" for i in range(4)]

        boxed = peer.steps(3, ("/bin/sh", "-c", "echo boxed $(hostname) $(id -u)"),
                           container=bundle)
        assert boxed.output.splitlines() == ["boxed job 65534"] * 3  # the bundle's hostname, user

        array = peer.array(3, ("sh", "-c", f"echo $SLURM_ARRAY_TASK_ID >> {marks}"))
        assert sorted(marks.read_text().split()) == ["1", "2", "3"]

        single = peer.srun_per_job(2, ("sh", "-c", "echo $SLURM_JOB_ID"))
        assert len(set(single.output.split())) == 2  # each srun its own job
        assert all(result.seconds > 0 for result in (steps, boxed, array, single))
    assert not workdir.exists()
    assert _processes_mentioning(str(workdir)) == []


def test_podman_peer_runs_the_registry_image_then_leaves_nothing(
        busybox_image: PushedImage) -> None:
    with podman() as peer:
        workdir = peer.root.parent
        peer.pull(busybox_image.reference)
        seconds, output = peer.run(busybox_image.reference, ("sh", "-c", "echo $(hostname) ok"))
        assert output == f"{os.uname().nodename} ok\n"  # the host's network (and uts): as asked
        assert seconds > 0
    assert not workdir.exists()
    mounts = subprocess.run(["mount"], capture_output=True, text=True).stdout
    assert str(workdir) not in mounts
