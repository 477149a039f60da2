"""Jobs with GPUs through a real agent: a declared node of 2 GPUs, CDI specs, runc containers.

The stand-in GPUs are character devices in a temp dir with the null device's
numbers (harmless to write to), named as the host side of ``/dev/nvidia0`` and
``/dev/nvidia1`` by a CDI spec in the agent's ``--cdi-dir``. Each job is a
busybox shell that says what it sees; the tests assert on what it said.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fuzz.clients.agent import AgentClient, AgentError
from fuzz.resources import ResourceRequest
from tests.substrate.test_substrate_agent import Agent
from tests.substrate.test_substrate_job_rpc import running_node
from tests.support.declared import declared_node_yaml
from tests.support.registry import PushedImage

GPU = "nvidia.com/gpu"
LIBRARY = "/usr/lib/libfake-nvidia.so.1"
# As nobody: the device nodes seen and written, the env, the driver library and a write to it.
SEE = f"""
for d in /dev/nvidia*; do if [ -c "$d" ]; then echo "char $d"; fi; done
for d in /dev/nvidia*; do if [ -c "$d" ] && echo probe > "$d"; then echo "wrote $d"; fi; done
echo "FAKE_DRIVER=$FAKE_DRIVER NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES"
cat {LIBRARY} 2>/dev/null || echo "no library"
if [ -e {LIBRARY} ]; then (echo tampered > {LIBRARY}) 2>/dev/null || echo "library read-only"; fi
"""
# Only looking: what the fallback gives a job, without touching a real GPU's nodes.
LOOK = """
for d in /dev/nvidia*; do if [ -c "$d" ]; then echo "char $d"; fi; done
echo "FAKE_DRIVER=$FAKE_DRIVER NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES"
"""
FALLBACK_NODES = ("nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
JOB_ENV = ["FAKE_DRIVER=job", "NVIDIA_VISIBLE_DEVICES=all"]  # what an image may say


@dataclass
class GpuNode:
    agent: Agent
    client: AgentClient
    image: str
    cdi: Path  # the agent's --cdi-dir
    spec: dict[str, object]  # what tests write there as nvidia.yaml
    library: Path
    hooks_log: Path

    def write_spec(self, spec: dict[str, object]) -> Path:
        path = self.cdi / "nvidia.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    def run(self, job: str, lease_id: str, script: str = SEE) -> list[str]:
        """Run ``script`` as job ``job`` under ``lease_id``; its output lines."""
        self.client.start_container(job, self.image, lease_id, args=["sh", "-c", script],
                                    env=JOB_ENV)
        done = self.client.wait_container(job, 30)
        assert (done.state, done.exit_code) == ("exited", 0), done
        return b"".join(self.client.stream_logs(job)).decode().splitlines()


def _stand_in_gpu(path: Path) -> Path:
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # the null device's numbers
    os.chmod(path, 0o666)  # mknod's mode is cut by the umask
    return path


@pytest.fixture
def gpu_node(tmp_path: Path, busybox_image: PushedImage) -> Iterator[GpuNode]:
    """An agent declaring 2 GPUs, whose --cdi-dir describes two stand-in GPUs."""
    inventory = tmp_path / "node.yaml"
    inventory.write_text(declared_node_yaml())
    gpus = tmp_path / "gpus"
    gpus.mkdir()
    library = tmp_path / "libfake-nvidia.so.1"
    library.write_text("fake driver\n")
    library.chmod(0o666)  # only the read-only mount may stop a write
    hooks_log = tmp_path / "hooks.log"
    spec: dict[str, object] = {
        "cdiVersion": "0.6.0",
        "kind": GPU,
        "devices": [
            {"name": str(index), "containerEdits": {"deviceNodes": [
                {"path": f"/dev/nvidia{index}",
                 "hostPath": str(_stand_in_gpu(gpus / f"stand-in-{index}"))}]}}
            for index in (0, 1)
        ],
        "containerEdits": {
            "env": ["FAKE_DRIVER=1"],
            "mounts": [{"hostPath": str(library), "containerPath": LIBRARY,
                        "options": ["ro", "nosuid", "nodev", "bind"]}],
            "hooks": [{"hookName": "createContainer", "path": "/bin/sh",
                       "args": ["sh", "-c", f'echo "$HOOK_SAYS" >> {hooks_log}'],
                       "env": ["HOOK_SAYS=hooked"]}],
        },
    }
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    with running_node(tmp_path, busybox_image, "--inventory", str(inventory),
                      "--cdi-dir", str(cdi)) as (agent, client):
        node = GpuNode(agent, client, busybox_image.reference, cdi, spec, library, hooks_log)
        node.write_spec(spec)
        yield node


def test_a_job_gets_exactly_its_leased_gpu_with_the_cdi_edits(gpu_node: GpuNode) -> None:
    client = gpu_node.client
    first = client.acquire_lease(1, devices={GPU: 1})
    second = client.acquire_lease(1, devices={GPU: 1})
    assert [list(lease.devices[GPU].ids) for lease in (first, second)] == [["0"], ["1"]]
    for lease, index in ((first, 0), (second, 1)):
        assert gpu_node.run(f"job-gpu{index}", lease.id) == [
            f"char /dev/nvidia{index}",
            f"wrote /dev/nvidia{index}",
            f"FAKE_DRIVER=1 NVIDIA_VISIBLE_DEVICES={index}",  # the device's env wins
            "fake driver",
            "library read-only",
        ]
    plain = client.acquire_lease(1)
    assert gpu_node.run("job-plain", plain.id) == [
        "FAKE_DRIVER=job NVIDIA_VISIBLE_DEVICES=all",
        "no library",
    ]
    assert gpu_node.library.read_text() == "fake driver\n"
    assert gpu_node.hooks_log.read_text() == "hooked\nhooked\n"  # GPU jobs only


def test_a_malformed_cdi_spec_fails_the_start_naming_file_and_field(gpu_node: GpuNode) -> None:
    client = gpu_node.client
    devices = gpu_node.spec["devices"]
    assert isinstance(devices, list)
    del devices[1]["containerEdits"]["deviceNodes"][0]["path"]
    path = gpu_node.write_spec(gpu_node.spec)
    lease = client.acquire_lease(1, devices={GPU: 1})
    reason = f"{path}: devices[1].containerEdits.deviceNodes[0].path: required"
    with pytest.raises(AgentError) as caught:
        gpu_node.run("job-bad-spec", lease.id)
    assert str(caught.value).endswith(reason) and "\n" not in str(caught.value)
    with pytest.raises(AgentError, match=r"deviceNodes\[0\]\.path: required$"):
        client.start_container("job-bad-spec", gpu_node.image, args=["true"],
                               lease=ResourceRequest(cores=1, devices={GPU: 1}))
    assert [x.id for x in client.list_leases()] == [lease.id]  # the one-call lease went back
    assert client.list_containers() == []
    assert "Traceback" not in gpu_node.agent.stderr()


def test_without_a_cdi_spec_a_declared_gpu_without_a_node_starts_and_says_so(
    gpu_node: GpuNode,
) -> None:
    (gpu_node.cdi / "nvidia.yaml").unlink()
    lease = gpu_node.client.acquire_lease(1, devices={GPU: 1})
    seen = gpu_node.run("job-declared", lease.id, LOOK)
    # On a machine with a real GPU 0 its nodes are there (looked at, never written to).
    host_has_it = Path("/dev/nvidia0").exists()
    expected = {f"char /dev/{name}" for name in FALLBACK_NODES if Path("/dev", name).exists()}
    assert set(seen[:-1]) == expected and len(seen) == len(expected) + 1
    assert seen[-1] == "FAKE_DRIVER=job NVIDIA_VISIBLE_DEVICES=0"
    # the agent's log records: "DATE TIME LEVEL LOGGER: MESSAGE" (fuzz.daemonlog)
    warnings = [line.split(" ", 2)[2] for line in gpu_node.agent.stderr().splitlines()
                if "declared GPU" in line]
    assert warnings == ([] if host_has_it else [
        "WARNING fuzz.substrate.capacity.devices: job job-declared: nvidia.com/gpu 0 has no "
        "/dev/nvidia0 on this node (a declared GPU?); the job starts without it"])
