"""CDI specs and what a lease's devices become: the reader, the selection, the fallback.

Stand-in GPUs are character devices made with the null device's numbers in a
temp dir, so nothing here needs (or touches) a real GPU.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from fuzz.substrate.capacity.cdi import (
    CdiError,
    ContainerEdits,
    NodeEdit,
    parse_spec,
    read_specs,
    select,
)
from fuzz.substrate.capacity.devices import lease_edits, nvidia_nodes
from fuzz.substrate.capacity.inventory import GpuInfo
from fuzz.substrate.runtime.bundle import DeviceNode, Hook, Mount

GPU = "nvidia.com/gpu"
SPEC = """\
cdiVersion: 0.6.0
kind: nvidia.com/gpu
devices:
  - name: "0"
    containerEdits:
      deviceNodes: [{path: /dev/nvidia0, type: c, major: 195, minor: 0}]
      env: [ONLY_0=yes]
  - name: GPU-bbbb
    containerEdits:
      deviceNodes: [{path: /dev/nvidia1, hostPath: /dev/null, permissions: rw, uid: 5}]
containerEdits:
  env: [FAKE_DRIVER=1]
  deviceNodes: [{path: /dev/nvidiactl, type: c, major: 195, minor: 255, fileMode: 384}]
  mounts:
    - {hostPath: /lib/libfake.so.1, containerPath: /usr/lib/libfake.so.1,
       options: [ro, nosuid, nodev, bind]}
    - {hostPath: /run/fake, containerPath: /run/fake, type: bind, options: [rw, rbind]}
  hooks: [{hookName: createContainer, path: /usr/bin/nvidia-ctk, args: [nvidia-ctk, hook],
           env: [A=1], timeout: 5}]
"""
GPUS = (GpuInfo(0, "GPU-aaaa", "A100", 0, ""), GpuInfo(1, "GPU-bbbb", "A100", 0, ""))


def _spec(text: str = SPEC, source: str = "/etc/cdi/nvidia.yaml") -> Any:
    return parse_spec(yaml.safe_load(text), source)


def _stand_in(path: Path) -> Path:
    """A harmless character device (the null device's numbers) that anyone may write."""
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(path, 0o666)  # mknod's mode is cut by the umask
    return path


def test_a_spec_is_read_into_common_and_per_device_edits() -> None:
    spec = _spec()
    assert (spec.source, spec.kind, sorted(spec.devices)) == (
        "/etc/cdi/nvidia.yaml", GPU, ["0", "GPU-bbbb"])
    assert spec.edits.env == ("FAKE_DRIVER=1",)
    assert spec.edits.mounts == (
        Mount(Path("/lib/libfake.so.1"), "/usr/lib/libfake.so.1", readonly=True),
        Mount(Path("/run/fake"), "/run/fake", readonly=False),
    )
    assert spec.edits.hooks == (
        Hook("createContainer", "/usr/bin/nvidia-ctk", ("nvidia-ctk", "hook"), ("A=1",), 5),)
    assert spec.edits.nodes == (NodeEdit(
        "/etc/cdi/nvidia.yaml: containerEdits.deviceNodes[0]", "/dev/nvidiactl", "/dev/nvidiactl",
        "c", 195, 255, 0o600),)
    second = spec.devices["GPU-bbbb"].nodes[0]
    assert (second.path, second.host_path, second.permissions, second.uid, second.kind) == (
        "/dev/nvidia1", "/dev/null", "rw", 5, None)


def test_json_specs_read_the_same() -> None:
    as_json = json.dumps(yaml.safe_load(SPEC))
    assert parse_spec(yaml.safe_load(as_json), "/etc/cdi/nvidia.yaml") == _spec()


def test_select_applies_common_edits_once_then_each_devices_own() -> None:
    spec = _spec()
    both = select([spec], GPU, [("0", "GPU-aaaa"), ("1", "GPU-bbbb")])  # the second by UUID
    assert both.env == ("FAKE_DRIVER=1", "ONLY_0=yes")
    assert [node.path for node in both.nodes] == ["/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia1"]
    assert len(both.mounts) == 2 and len(both.hooks) == 1
    one = select([spec], GPU, [("0",)])
    assert [node.path for node in one.nodes] == ["/dev/nvidiactl", "/dev/nvidia0"]
    with pytest.raises(CdiError, match=r"^no CDI device nvidia.com/gpu=1 or GPU-cccc in "
                                       r"/etc/cdi/nvidia.yaml$"):
        select([spec], GPU, [("1", "GPU-cccc")])


def test_a_later_spec_wins_and_brings_its_own_common_edits() -> None:
    early = _spec()
    late = _spec(SPEC.replace("FAKE_DRIVER=1", "FAKE_DRIVER=2").replace("ONLY_0", "LATE_0"),
                 "/var/run/cdi/nvidia.yaml")
    assert select([early, late], GPU, [("0",)]).env == ("FAKE_DRIVER=2", "LATE_0=yes")
    only_early = _spec(SPEC.replace('name: "0"', 'name: "7"'), "/var/run/cdi/other.yaml")
    assert select([early, only_early], GPU, [("0",)]).env == ("FAKE_DRIVER=1", "ONLY_0=yes")


def test_device_nodes_resolve_against_the_host(tmp_path: Path) -> None:
    gpu = _stand_in(tmp_path / "gpu0")
    stated = NodeEdit("f: n", "/dev/nvidia0", str(gpu), permissions="rw", uid=3, gid=4)
    assert stated.resolve() == DeviceNode("/dev/nvidia0", "c", 1, 3, 0o666, "rw", 3, 4)
    described = NodeEdit("f: n", "/dev/nvidia9", str(tmp_path / "absent"), "c", 195, 9, 0o640)
    assert described.resolve() == DeviceNode("/dev/nvidia9", "c", 195, 9, 0o640)
    partly = NodeEdit("f: n", "/dev/nvidia0", str(gpu), minor=7)
    assert (partly.resolve().major, partly.resolve().minor) == (1, 7)
    missing = NodeEdit("/etc/cdi/x.yaml: devices[0].containerEdits.deviceNodes[0]",
                       "/dev/nvidia9", str(tmp_path / "absent"))
    with pytest.raises(CdiError, match=r"^/etc/cdi/x.yaml: devices\[0\].containerEdits."
                                       r"deviceNodes\[0\]: device .*absent: No such file"):
        missing.resolve()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("{path: /dev/nvidia1, hostPath: /dev/null, permissions: rw, uid: 5}", "{type: c}",
         "devices[1].containerEdits.deviceNodes[0].path: required"),
        ("cdiVersion: 0.6.0\n", "", "cdiVersion: required"),
        ("kind: nvidia.com/gpu", "kind: gpu", "kind: must look like vendor.com/class, got 'gpu'"),
        ("path: /dev/nvidia0,", "path: /etc/nvidia0,",
         "devices[0].containerEdits.deviceNodes[0]: device '/etc/nvidia0' must be under /dev/"),
        ("type: c, major: 195, minor: 0", "type: p",
         "devices[0].containerEdits.deviceNodes[0].type: must be c or b, got 'p'"),
        ("permissions: rw", "permissions: rwx",
         "devices[1].containerEdits.deviceNodes[0]: device /dev/nvidia1: permissions 'rwx'"),
        ("uid: 5", "uid: -5", "devices[1].containerEdits.deviceNodes[0].uid: must be a "
         "non-negative integer, got -5"),
        ("env: [ONLY_0=yes]", "env: [ONLY_0]",
         "devices[0].containerEdits.env: env entry 'ONLY_0' must look like KEY=VALUE"),
        ("env: [ONLY_0=yes]", "additionalGids: [44]",
         "devices[0].containerEdits: unknown key 'additionalGids': expected one of env,"),
        ("containerPath: /usr/lib/libfake.so.1", "containerPath: /dev/fake",
         "containerEdits.mounts[0]: mount destination '/dev/fake' is reserved"),
        ("type: bind, options", "type: tmpfs, options",
         "containerEdits.mounts[1].type: only bind mounts are supported, got 'tmpfs'"),
        ("[rw, rbind]", "[rw, rbind, exec]",
         "containerEdits.mounts[1].options: 'exec' is not supported"),
        ("hookName: createContainer", "hookName: prestart",
         "containerEdits.hooks[0]: hook stage 'prestart' must be one of"),
        ("timeout: 5", "timeout: five",
         "containerEdits.hooks[0].timeout: must be a non-negative integer, got 'five'"),
        ('- name: GPU-bbbb', '- name: "0"', "devices[1].name: device '0' is defined twice"),
        ("devices:\n", "devices: []\nx:\n", "unknown key 'x': expected one of cdiVersion,"),
    ],
)
def test_invalid_specs_are_one_line_errors_naming_file_and_field(
    old: str, new: str, message: str
) -> None:
    assert old in SPEC
    with pytest.raises(CdiError) as caught:
        _spec(SPEC.replace(old, new, 1))
    assert str(caught.value).startswith("/etc/cdi/nvidia.yaml: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_read_specs_takes_the_kind_asked_from_every_dir_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "etc", tmp_path / "run"
    first.mkdir()
    second.mkdir()
    (first / "nvidia.yaml").write_text(SPEC)
    (first / "other.json").write_text('{"kind": "example.com/fpga", "devices": 3}')  # not ours
    (first / "notes.txt").write_text("not a spec: [")
    (second / "nvidia.json").write_text(json.dumps(yaml.safe_load(SPEC)))
    specs = read_specs([first, tmp_path / "missing", second], GPU)
    assert [spec.source for spec in specs] == [str(first / "nvidia.yaml"),
                                               str(second / "nvidia.json")]
    assert read_specs([first], "example.com/none") == []
    (second / "broken.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(CdiError, match=r"broken\.yaml: not valid YAML: .* at line 2$"):
        read_specs([first, second], GPU)


def test_the_nvidia_fallback_takes_the_nodes_that_exist(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        _stand_in(tmp_path / name)
    with caplog.at_level(logging.WARNING):
        edits = nvidia_nodes(["1", "2"], "job j", tmp_path)
    assert [(node.path, node.host_path) for node in edits.nodes] == [
        ("/dev/nvidia1", str(tmp_path / "nvidia1")),
        ("/dev/nvidiactl", str(tmp_path / "nvidiactl")),
        ("/dev/nvidia-uvm", str(tmp_path / "nvidia-uvm")),
    ]
    assert [node.resolve().major for node in edits.nodes] == [1, 1, 1]
    assert (edits.env, edits.mounts, edits.hooks) == ((), (), ())
    assert caplog.messages == [f"job j: nvidia.com/gpu 2 has no {tmp_path}/nvidia2 on this node"
                               " (a declared GPU?); the job starts without it"]


def test_lease_edits_use_cdi_when_a_spec_exists_else_the_fallback(tmp_path: Path) -> None:
    cdi, dev = tmp_path / "cdi", tmp_path / "dev"
    cdi.mkdir()
    dev.mkdir()
    _stand_in(dev / "nvidia1")
    fallback = lease_edits({GPU: ("1",)}, GPUS, [cdi], "job j", dev)
    assert [node.path for node in fallback.nodes] == ["/dev/nvidia1"]
    assert fallback.env == ("NVIDIA_VISIBLE_DEVICES=1",)
    assert lease_edits({GPU: ()}, GPUS, [cdi], "job j", dev) == ContainerEdits()
    assert lease_edits({}, GPUS, [cdi], "job j", dev) == ContainerEdits()
    (cdi / "nvidia.yaml").write_text(SPEC)
    by_cdi = lease_edits({GPU: ("0", "1")}, GPUS, [cdi], "job j", dev)  # "1" by its UUID
    assert [node.path for node in by_cdi.nodes] == ["/dev/nvidiactl", "/dev/nvidia0",
                                                    "/dev/nvidia1"]
    assert by_cdi.env == ("FAKE_DRIVER=1", "ONLY_0=yes", "NVIDIA_VISIBLE_DEVICES=0,1")
    (cdi / "nvidia.yaml").write_text(SPEC.replace("FAKE_DRIVER=1", "NVIDIA_VISIBLE_DEVICES=void"))
    assert lease_edits({GPU: ("0",)}, GPUS, [cdi], "job j", dev).env == (
        "NVIDIA_VISIBLE_DEVICES=void", "ONLY_0=yes")
    with pytest.raises(CdiError, match=r"^no CDI spec of kind example.com/fpga in .*/cdi$"):
        lease_edits({"example.com/fpga": ("0",)}, GPUS, [cdi], "job j", dev)
