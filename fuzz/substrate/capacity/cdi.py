"""Container Device Interface (CDI) specs: what a device needs in a container's OCI config.

A CDI spec is a YAML or JSON file that a device vendor's tooling writes on the
node (``nvidia-ctk cdi generate`` writes ``/etc/cdi/nvidia.yaml``)::

    cdiVersion: 0.6.0
    kind: nvidia.com/gpu
    devices:
      - name: "0"
        containerEdits: {deviceNodes: [{path: /dev/nvidia0}]}
    containerEdits:          # for every container that gets any device of this spec
      env: [NVIDIA_VISIBLE_DEVICES=void]
      deviceNodes: [{path: /dev/nvidiactl}]
      mounts: [{hostPath: /usr/lib/libcuda.so.1, containerPath: /usr/lib/libcuda.so.1,
                options: [ro, nosuid, nodev, bind]}]
      hooks: [{hookName: createContainer, path: /usr/bin/nvidia-ctk, args: [...]}]

:func:`read_specs` reads the specs of one kind from the CDI directories
(:data:`DEFAULT_CDI_DIRS`, lowest priority first: a device defined again in a
later directory, or a later file of the same directory, wins). Files of other
kinds are skipped unread beyond their ``kind``; a file of the wanted kind is
checked whole, and any problem is a :class:`CdiError` of one line naming the
file and the field. :func:`select` picks the edits of the devices a lease
grants: each spec's common ``containerEdits`` once, then each device's own.

Supported edits are ``env``, ``deviceNodes``, ``mounts`` (bind mounts only:
read-only unless the options say ``rw``; every mount is ``rbind,rprivate,nosuid,
nodev`` as job volumes are, and lands under the same rules: not on ``/``,
``/proc``, ``/sys`` or ``/dev``) and ``hooks``. Keys this agent does not know
(``additionalGids``, ``intelRdt``, ...) are errors rather than silently
ignored. There is no maintained Python library for CDI (the reference
implementation is Go), so this small reader is the agent's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

from fuzz.errors import FuzzError
from fuzz.substrate.capacity.yamltext import load_yaml
from fuzz.substrate.runtime.bundle import (
    ContainerSpecError,
    DeviceNode,
    Hook,
    Mount,
    check_env,
    device_node,
)

DEFAULT_CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
SPEC_SUFFIXES = (".json", ".yaml", ".yml")
TOP_KEYS = ("cdiVersion", "kind", "annotations", "devices", "containerEdits")
DEVICE_KEYS = ("name", "annotations", "containerEdits")
EDIT_KEYS = ("env", "deviceNodes", "mounts", "hooks")
NODE_KEYS = ("path", "hostPath", "type", "major", "minor", "fileMode", "permissions", "uid", "gid")
MOUNT_KEYS = ("hostPath", "containerPath", "type", "options")
HOOK_KEYS = ("hookName", "path", "args", "env", "timeout")
MOUNT_TYPES = ("bind", "none")
MOUNT_OPTIONS = ("bind", "rbind", "ro", "rw", "nosuid", "nodev", "private", "rprivate")


class CdiError(FuzzError):
    """A CDI spec is unreadable or invalid, or names no device the job was granted."""


@dataclass(frozen=True)
class NodeEdit:
    """A ``deviceNodes`` entry: the device as the spec describes it, before the host is asked.

    ``origin`` says where it came from (``FILE: FIELD``) for error messages;
    ``host_path`` is stat-ed for the type, numbers and mode the spec leaves out.
    """

    origin: str
    path: str
    host_path: str
    kind: Literal["c", "b"] | None = None
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    permissions: str = "rwm"
    uid: int = 0
    gid: int = 0

    def resolve(self) -> DeviceNode:
        """The node the container gets; CdiError (naming ``origin``) when the host lacks it."""
        try:
            if self.kind is None or self.major is None or self.minor is None:
                host = device_node(self.host_path, self.path)
            else:  # fully described: the host node need not exist (runc makes it)
                host = DeviceNode(self.path, self.kind, self.major, self.minor)
            return replace(
                host,
                kind=self.kind or host.kind,
                major=host.major if self.major is None else self.major,
                minor=host.minor if self.minor is None else self.minor,
                file_mode=host.file_mode if self.file_mode is None else self.file_mode,
                permissions=self.permissions,
                uid=self.uid,
                gid=self.gid,
            )
        except ContainerSpecError as exc:
            raise CdiError(f"{self.origin}: {exc}") from None


@dataclass(frozen=True)
class ContainerEdits:
    """Edits to a container: env entries set over the job's, device nodes, mounts, hooks."""

    env: tuple[str, ...] = ()
    nodes: tuple[NodeEdit, ...] = ()
    mounts: tuple[Mount, ...] = ()
    hooks: tuple[Hook, ...] = ()

    def __add__(self, other: ContainerEdits) -> ContainerEdits:
        """Both edits, ``self``'s first."""
        return ContainerEdits(self.env + other.env, self.nodes + other.nodes,
                              self.mounts + other.mounts, self.hooks + other.hooks)


@dataclass(frozen=True)
class CdiSpec:
    """One spec file: its ``kind``, the edits common to its devices, and each device's."""

    source: str
    kind: str
    edits: ContainerEdits
    devices: Mapping[str, ContainerEdits]


class _Reader:
    """Checks one spec's fields; every problem is a CdiError naming the file and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> CdiError:
        return CdiError(f"{self.source}: {field}: {problem}" if field
                        else f"{self.source}: {problem}")

    def mapping(self, value: Any, field: str, keys: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, f"must be a mapping with keys {', '.join(keys)}")
        for key in value:
            if key not in keys:
                raise self.fail(field, f"unknown key {key!r}: expected one of {', '.join(keys)}")
        return value

    def string(self, data: Mapping[str, Any], key: str, field: str) -> str:
        value = data.get(key)
        if value is None:
            raise self.fail(f"{field}{key}", "required")
        if not isinstance(value, str) or not value:
            raise self.fail(f"{field}{key}", f"must be a non-empty string, got {value!r}")
        return value

    def strings(self, data: Mapping[str, Any], key: str, field: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(f"{field}{key}", f"must be a list of strings, got {value!r}")
        return tuple(value)

    def number(self, data: Mapping[str, Any], key: str, field: str) -> int | None:
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise self.fail(f"{field}{key}", f"must be a non-negative integer, got {value!r}")
        return value

    def entries(self, data: Mapping[str, Any], key: str, field: str) -> list[tuple[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise self.fail(f"{field}{key}", "must be a list")
        return [(f"{field}{key}[{index}]", item) for index, item in enumerate(value)]


def _node(read: _Reader, data: Any, field: str) -> NodeEdit:
    entry = read.mapping(data, field, NODE_KEYS)
    path = read.string(entry, "path", f"{field}.")
    host_path = read.string(entry, "hostPath", f"{field}.") if "hostPath" in entry else path
    kind = entry.get("type")
    if kind is not None and kind not in ("c", "b"):
        raise read.fail(f"{field}.type", f"must be c or b, got {kind!r}")
    permissions = entry.get("permissions", "rwm")
    if not isinstance(permissions, str):
        raise read.fail(f"{field}.permissions", f"must be letters of rwm, got {permissions!r}")
    node = NodeEdit(
        origin=f"{read.source}: {field}",
        path=path,
        host_path=host_path,
        kind=cast(Literal["c", "b"] | None, kind),
        major=read.number(entry, "major", f"{field}."),
        minor=read.number(entry, "minor", f"{field}."),
        file_mode=read.number(entry, "fileMode", f"{field}."),
        permissions=permissions,
        uid=read.number(entry, "uid", f"{field}.") or 0,
        gid=read.number(entry, "gid", f"{field}.") or 0,
    )
    try:  # the node's own checks (path under /dev/, permissions), with stand-in numbers
        DeviceNode(node.path, node.kind or "c", node.major or 0, node.minor or 0,
                   permissions=node.permissions)
    except ContainerSpecError as exc:
        raise read.fail(field, str(exc)) from None
    return node


def _mount(read: _Reader, data: Any, field: str) -> Mount:
    entry = read.mapping(data, field, MOUNT_KEYS)
    source = read.string(entry, "hostPath", f"{field}.")
    destination = read.string(entry, "containerPath", f"{field}.")
    if entry.get("type") not in (None, *MOUNT_TYPES):
        raise read.fail(f"{field}.type", f"only bind mounts are supported, got {entry['type']!r}")
    options = read.strings(entry, "options", f"{field}.")
    for option in options:
        if option not in MOUNT_OPTIONS:
            raise read.fail(f"{field}.options", f"{option!r} is not supported: use "
                            f"{', '.join(MOUNT_OPTIONS)}")
    try:
        return Mount(Path(source), destination, readonly="rw" not in options)
    except ContainerSpecError as exc:
        raise read.fail(field, str(exc)) from None


def _hook(read: _Reader, data: Any, field: str) -> Hook:
    entry = read.mapping(data, field, HOOK_KEYS)
    stage = read.string(entry, "hookName", f"{field}.")
    path = read.string(entry, "path", f"{field}.")
    args = read.strings(entry, "args", f"{field}.")
    env = read.strings(entry, "env", f"{field}.")
    try:
        return Hook(stage, path, args, env, read.number(entry, "timeout", f"{field}."))
    except ContainerSpecError as exc:
        raise read.fail(field, str(exc)) from None


def _edits(read: _Reader, data: Any, field: str) -> ContainerEdits:
    if data is None:
        return ContainerEdits()
    entry = read.mapping(data, field, EDIT_KEYS)
    env = read.strings(entry, "env", f"{field}.")
    try:
        check_env(env)
    except ContainerSpecError as exc:
        raise read.fail(f"{field}.env", str(exc)) from None
    return ContainerEdits(
        env=env,
        nodes=tuple(_node(read, item, where)
                    for where, item in read.entries(entry, "deviceNodes", f"{field}.")),
        mounts=tuple(_mount(read, item, where)
                     for where, item in read.entries(entry, "mounts", f"{field}.")),
        hooks=tuple(_hook(read, item, where)
                    for where, item in read.entries(entry, "hooks", f"{field}.")),
    )


def parse_spec(data: Any, source: str) -> CdiSpec:
    """Check the loaded contents of one spec file (``source`` names it in errors)."""
    read = _Reader(source)
    top = read.mapping(data, "", TOP_KEYS)
    read.string(top, "cdiVersion", "")
    kind = read.string(top, "kind", "")
    if kind.count("/") != 1 or kind.startswith("/") or kind.endswith("/"):
        raise read.fail("kind", f"must look like vendor.com/class, got {kind!r}")
    listed = read.entries(top, "devices", "")
    if not listed:
        raise read.fail("devices", "required (a non-empty list)")
    devices: dict[str, ContainerEdits] = {}
    for field, item in listed:
        entry = read.mapping(item, field, DEVICE_KEYS)
        name = read.string(entry, "name", f"{field}.")
        if name in devices:
            raise read.fail(f"{field}.name", f"device {name!r} is defined twice")
        devices[name] = _edits(read, entry.get("containerEdits"), f"{field}.containerEdits")
    return CdiSpec(source, kind, _edits(read, top.get("containerEdits"), "containerEdits"),
                   devices)


def read_specs(dirs: Sequence[Path], kind: str) -> list[CdiSpec]:
    """Every spec of ``kind`` in ``dirs`` (missing ones are skipped), lowest priority first."""
    specs: list[CdiSpec] = []
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if path.suffix not in SPEC_SUFFIXES or not path.is_file():
                continue
            try:
                data = load_yaml(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise CdiError(f"{path}: cannot read: {reason}") from exc
            except ValueError as exc:
                raise CdiError(f"{path}: {exc}") from None
            if isinstance(data, dict) and isinstance(data.get("kind"), str) and (
                data["kind"] != kind
            ):
                continue  # another vendor's file: not ours to judge
            specs.append(parse_spec(data, str(path)))
    return specs


def select(specs: Sequence[CdiSpec], kind: str, wanted: Sequence[Sequence[str]]) -> ContainerEdits:
    """The edits that give a container the ``wanted`` devices of ``kind`` from ``specs``.

    Each wanted device is a list of names it may have (its id first, then e.g. a
    GPU's UUID); the last spec defining one of them wins. The common edits of
    every spec used come first (once each), then each device's own edits.
    """
    used: list[CdiSpec] = []
    own = ContainerEdits()
    for names in wanted:
        found = next(((spec, spec.devices[name]) for spec in reversed(specs) for name in names
                      if name in spec.devices), None)
        if found is None:
            where = ", ".join(spec.source for spec in specs)
            raise CdiError(f"no CDI device {kind}={' or '.join(names)} in {where}")
        spec, edits = found
        if not any(spec is seen for seen in used):
            used.append(spec)
        own += edits
    common = ContainerEdits()
    for spec in used:
        common += spec.edits
    return common + own
