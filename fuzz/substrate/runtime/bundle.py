"""What one job's container is, and the OCI runtime config that makes runc run it.

Pure data: :class:`ContainerSpec` (validated on construction) and
:func:`oci_config`, which turns a spec into the ``config.json`` of an OCI bundle.
The only I/O here is :func:`device_node`, which stats a host device so that the
config can name its type and its major and minor numbers.

The root filesystem is the per-container overlay mounted by the node's container
monitor (:mod:`fuzz.substrate.monitor.job`): the unpacked image is its read-only
lower layer, shared by every job from that image, and the upper layer lives in
the container's directory. The root is therefore writable (``readonly: false``)
like on any container engine, while the image on the host never changes; a
readonly root plus tmpfs would break every job that writes next to its binaries,
and runc could not create mount points for volumes in it without writing them
into the shared image. (Measured, a readonly root is no faster to start than an
overlay mounted in advance, which is what the monitor does.)
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from fuzz.errors import ConfigError
from fuzz.spec import containerfiles
from fuzz.substrate.monitor.firewall import parse_peer
from fuzz.substrate.runtime import seccomp

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOFILE_LIMIT = 65536
CGROUP_PARENT = "/fuzz"
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# a host name of dot-separated labels (an MPI rank's is its address, which resolves itself)
HOSTNAME_PATTERN = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
HOSTS_NAME_PATTERN = re.compile(r"(?=.{1,253}$)[A-Za-z0-9][A-Za-z0-9_-]{0,62}"
                                r"(\.[A-Za-z0-9][A-Za-z0-9_-]{0,62})*")
"""A name in an ``/etc/hosts`` line: a host name's labels, also with ``_`` and a last
``-`` (``my_db.svc``: a Fuzzfile's service names may have them, and the resolver's files
source takes them)."""
RESERVED_DESTINATIONS = ("/proc", "/sys", "/dev")
# The OCI hooks runc runs (``prestart`` is deprecated in the runtime spec; CDI has no use for it).
HOOK_STAGES = ("createRuntime", "createContainer", "startContainer", "poststart", "poststop")

# Capabilities a root job keeps: Docker's default set without NET_RAW and
# NET_BIND_SERVICE (a job of a `network: host` pool shares the node's network
# namespace, where these would be raw sockets and privileged ports on the host)
# and without MKNOD (devices are granted explicitly). A non-root job gets no capabilities at all.
ROOT_CAPABILITIES = (
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)

# As runc's default spec (``runc spec``) has them.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


class ContainerSpecError(ConfigError):
    """A container spec is invalid (bad id, relative path, ``..``, negative limit...)."""


def _check_container_path(what: str, value: str) -> None:
    """Refuse a path inside the container that is relative or climbs with ``..``."""
    path = PurePosixPath(value)
    if not path.is_absolute():
        raise ContainerSpecError(f"{what} {value!r} must be an absolute path")
    if ".." in path.parts:
        raise ContainerSpecError(f"{what} {value!r} must not contain '..'")


def check_env(entries: Sequence[str]) -> None:
    """Refuse (ContainerSpecError) an environment entry that is not ``KEY=VALUE``."""
    for item in entries:
        if not isinstance(item, str) or "=" not in item or item.startswith("="):
            raise ContainerSpecError(f"env entry {item!r} must look like KEY=VALUE")


def merge_env(*layers: Sequence[str]) -> tuple[str, ...]:
    """KEY=VALUE entries, each layer set over the ones before (image, job, devices)."""
    merged: dict[str, str] = {}
    for entry in (entry for layer in layers for entry in layer):
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise ContainerSpecError(f"environment entry {entry!r} is not KEY=VALUE")
        merged[key] = value
    return tuple(f"{k}={v}" for k, v in merged.items())


@dataclass(frozen=True)
class Mount:
    """A host directory or file bind-mounted into the container (a volume)."""

    source: Path
    destination: str
    readonly: bool = False

    def __post_init__(self) -> None:
        """Validate both ends of the mount."""
        if not Path(self.source).is_absolute() or ".." in Path(self.source).parts:
            raise ContainerSpecError(
                f"mount source {str(self.source)!r} must be an absolute path without '..'"
            )
        _check_container_path("mount destination", self.destination)
        clean = str(PurePosixPath(self.destination))
        if clean == "/" or any(
            clean == top or clean.startswith(top + "/") for top in RESERVED_DESTINATIONS
        ):
            raise ContainerSpecError(
                f"mount destination {self.destination!r} is reserved (/, /proc, /sys, /dev)"
            )


@dataclass(frozen=True)
class ContainerFile:
    """A file given to the job: ``content`` bind-mounted read-only at ``path`` in the
    container (written to the container's directory first; see
    :mod:`fuzz.substrate.monitor.placed`)."""

    path: str
    content: bytes

    def __post_init__(self) -> None:
        """Validate the path (:func:`fuzz.spec.containerfiles.path_problem`) and the content."""
        problem = containerfiles.path_problem(self.path)
        if problem is not None:
            raise ContainerSpecError(f"file {self.path!r}: {problem}")
        if not isinstance(self.content, bytes):
            raise ContainerSpecError(f"file {self.path}: content must be bytes")


def _check_files(files: Sequence[ContainerFile], mounts: Sequence[Mount]) -> None:
    """Refuse more files or bytes than the agent takes for one container, and a file at,
    under or above another file or a mount: the caller is not trusted to have checked."""
    if len(files) > containerfiles.MAX_FILES:
        raise ContainerSpecError(f"{len(files)} files, over the agent's limit of"
                                 f" {containerfiles.MAX_FILES} per container")
    total = sum(len(item.content) for item in files)
    if total > containerfiles.MAX_FILES_BYTES:
        raise ContainerSpecError(f"its files hold {total:,} bytes, over the agent's limit of"
                                 f" {containerfiles.MAX_FILES_BYTES:,} per container")
    locations = [str(PurePosixPath(mount.destination)) for mount in mounts]
    for index, item in enumerate(files):
        mounted = next((at for at in locations if containerfiles.overlaps(item.path, at)), None)
        if mounted is not None:
            raise ContainerSpecError(f"file {item.path} collides with the mount at {mounted}")
        other = next((earlier.path for earlier in files[:index]
                      if containerfiles.overlaps(item.path, earlier.path)), None)
        if other is not None:
            raise ContainerSpecError(f"file {item.path} collides with the file at {other}")


@dataclass(frozen=True)
class DeviceNode:
    """A device node made in the container at ``path`` and allowed in its devices cgroup.

    ``kind`` (``c`` or ``b``), ``major`` and ``minor`` name the device;
    ``file_mode`` and ``uid``/``gid`` are the node's permission bits and owner in
    the container; ``permissions`` is the cgroup access granted (a subset of ``rwm``).
    """

    path: str
    kind: Literal["c", "b"]
    major: int
    minor: int
    file_mode: int = 0o666
    permissions: str = "rwm"
    uid: int = 0
    gid: int = 0

    def __post_init__(self) -> None:
        """Validate the node: a path under /dev/, known type, numbers and access."""
        _check_container_path("device", self.path)
        if not self.path.startswith("/dev/"):
            raise ContainerSpecError(f"device {self.path!r} must be under /dev/")
        if self.kind not in ("c", "b"):
            raise ContainerSpecError(f"device {self.path}: type {self.kind!r} must be c or b")
        for name in ("major", "minor", "file_mode", "uid", "gid"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ContainerSpecError(
                    f"device {self.path}: {name} must be a non-negative integer, not {value!r}"
                )
        if not self.permissions or set(self.permissions) - set("rwm"):
            raise ContainerSpecError(
                f"device {self.path}: permissions {self.permissions!r} must be letters of rwm"
            )


def device_node(host_path: str, path: str | None = None) -> DeviceNode:
    """Stat the host device at ``host_path`` (the one piece of I/O in this module).

    The node is made at ``path`` in the container (default: ``host_path``) with
    the host node's type, numbers and permission bits.
    """
    try:
        info = os.stat(host_path)
    except OSError as exc:
        raise ContainerSpecError(f"device {host_path}: {exc.strerror}") from exc
    if stat.S_ISCHR(info.st_mode):
        kind: Literal["c", "b"] = "c"
    elif stat.S_ISBLK(info.st_mode):
        kind = "b"
    else:
        raise ContainerSpecError(f"device {host_path} is not a character or block device")
    return DeviceNode(path or host_path, kind, os.major(info.st_rdev), os.minor(info.st_rdev),
                      stat.S_IMODE(info.st_mode))


@dataclass(frozen=True)
class Hook:
    """A program runc runs at ``stage`` of the container's life (an OCI hook).

    ``path`` is absolute on the host; ``args`` is its whole argv (``args[0]``
    included) and ``env`` its whole environment; ``timeout`` is in seconds.
    """

    stage: str
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None

    def __post_init__(self) -> None:
        """Validate the hook: a known stage, an absolute path, KEY=VALUE env, timeout > 0."""
        if self.stage not in HOOK_STAGES:
            raise ContainerSpecError(
                f"hook stage {self.stage!r} must be one of {', '.join(HOOK_STAGES)}"
            )
        if not PurePosixPath(self.path).is_absolute():
            raise ContainerSpecError(f"hook path {self.path!r} must be absolute")
        if not all(isinstance(arg, str) for arg in self.args):
            raise ContainerSpecError(f"hook {self.path}: args must be strings")
        check_env(self.env)
        if self.timeout is not None and (
            isinstance(self.timeout, bool) or not isinstance(self.timeout, int) or self.timeout < 1
        ):
            raise ContainerSpecError(
                f"hook {self.path}: timeout must be a positive integer, not {self.timeout!r}"
            )


@dataclass(frozen=True)
class ContainerSpec:
    """Everything the agent needs to run one job's container.

    ``rootfs`` is the unpacked image on the host (never written to); ``cpus``
    and ``memory_bytes`` (0: unlimited) come from the lease; ``timeout_seconds``
    is the wall-clock limit, after which the job gets SIGTERM and, after
    ``stop_grace_seconds``, SIGKILL. ``devices`` are the device nodes (GPUs) the
    container gets, and ``hooks`` what runc runs around it (both from the lease's
    devices, see :mod:`fuzz.substrate.capacity.devices`). ``peers`` are the
    addresses of the other containers of its multinode job, which it may reach
    (and be reached from) through the node's job network; ``hosts`` are lines
    (``ADDRESS NAME [ALIAS...]``) its ``/etc/hosts`` gets after localhost's. ``files`` are
    placed in the container, read-only (:class:`ContainerFile`). ``job_namespaces``: the
    folder (``/proc/PID/ns``) of the IPC and PID namespaces it joins (its multinode job's
    on this machine, see :mod:`fuzz.substrate.launch.sharedns`); empty: its own.
    ``job_shm``: the host folder bind-mounted at ``/dev/shm`` (its multinode job's on this
    machine, shared with the job's other containers there); empty: a tmpfs of its own.
    """

    id: str
    rootfs: Path
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    uid: int = 65534
    gid: int = 65534
    cpus: tuple[int, ...] = ()
    memory_bytes: int = 0
    mounts: tuple[Mount, ...] = ()
    timeout_seconds: float | None = None
    hostname: str = "job"
    devices: tuple[DeviceNode, ...] = ()
    hooks: tuple[Hook, ...] = ()
    stop_grace_seconds: float = 10.0
    log_limit_bytes: int = 0  # of each of stdout and stderr; 0: unlimited
    peers: tuple[str, ...] = ()
    files: tuple[ContainerFile, ...] = ()
    hosts: tuple[str, ...] = ()
    job_namespaces: str = ""
    job_shm: str = ""
    sandbox: str = ""

    def __post_init__(self) -> None:
        """Validate every field; raise ContainerSpecError on the first problem."""
        if self.job_namespaces and not PurePosixPath(self.job_namespaces).is_absolute():
            raise ContainerSpecError(
                f"job namespaces {self.job_namespaces!r} must be an absolute path")
        if self.job_shm and not PurePosixPath(self.job_shm).is_absolute():
            raise ContainerSpecError(f"job shm {self.job_shm!r} must be an absolute path")
        for line in self.hosts:
            _check_hosts_line(line)
        for peer in self.peers:
            try:
                parse_peer(peer)
            except ValueError:
                raise ContainerSpecError(
                    f"peer {peer!r} is not ADDRESS, ADDRESS:PROTO/PORT or jobs[:PROTO/PORT]"
                ) from None
        if not ID_PATTERN.fullmatch(self.id):
            raise ContainerSpecError(
                f"container id {self.id!r} must be 1-128 letters, digits, '_', '.' or '-',"
                " starting with a letter or digit"
            )
        rootfs = Path(self.rootfs)
        if not rootfs.is_absolute() or ".." in rootfs.parts:
            raise ContainerSpecError(f"rootfs {str(self.rootfs)!r} must be an absolute path")
        if any(ch in str(rootfs) for ch in ",:\\"):
            raise ContainerSpecError(f"rootfs {str(rootfs)!r} must not contain ',', ':' or '\\'")
        if not self.args or not all(isinstance(arg, str) for arg in self.args):
            raise ContainerSpecError(f"container {self.id}: args must be a non-empty list")
        check_env(self.env)
        _check_container_path("cwd", self.cwd)
        for name in ("uid", "gid"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ContainerSpecError(f"{name} must be a non-negative integer, not {value!r}")
        if any(cpu < 0 for cpu in self.cpus) or len(set(self.cpus)) != len(self.cpus):
            raise ContainerSpecError(f"cpus {list(self.cpus)} must be distinct and >= 0")
        if self.memory_bytes < 0:
            raise ContainerSpecError(f"memory_bytes must be >= 0, not {self.memory_bytes}")
        if self.timeout_seconds is not None and self.timeout_seconds <= 0:
            raise ContainerSpecError(f"timeout_seconds must be > 0, not {self.timeout_seconds}")
        if self.log_limit_bytes < 0:
            raise ContainerSpecError(f"log_limit_bytes must be >= 0, not {self.log_limit_bytes}")
        if self.stop_grace_seconds < 0:
            raise ContainerSpecError(
                f"stop_grace_seconds must be >= 0, not {self.stop_grace_seconds}"
            )
        if not HOSTNAME_PATTERN.fullmatch(self.hostname):
            raise ContainerSpecError(f"hostname {self.hostname!r} is not a valid host name")
        paths = [str(PurePosixPath(device.path)) for device in self.devices]
        if len(set(paths)) != len(paths):
            raise ContainerSpecError(f"container {self.id}: two devices share a path")
        destinations = [str(PurePosixPath(mount.destination)) for mount in self.mounts]
        if len(set(destinations)) != len(destinations):
            raise ContainerSpecError(f"container {self.id}: two mounts share a destination")
        _check_files(self.files, self.mounts)


def _check_hosts_line(line: str) -> None:
    """An ``/etc/hosts`` line: an IP address, then one or more valid host names."""
    words = line.split(" ") if isinstance(line, str) else []
    try:
        ipaddress.ip_address(words[0] if words else "")
    except ValueError:
        raise ContainerSpecError(f"hosts line {line!r} must begin with an IP address") from None
    if len(words) < 2 or not all(HOSTS_NAME_PATTERN.fullmatch(word) for word in words[1:]):
        raise ContainerSpecError(f"hosts line {line!r}: its names must be valid host names")


def hosts_file(spec: ContainerSpec) -> str:
    """The text of ``spec``'s ``/etc/hosts``: localhost, then ``spec.hosts``."""
    return "\n".join(("127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback",
                      *spec.hosts)) + "\n"


def cpuset_string(cpus: Sequence[int]) -> str:
    """Render CPU ids as a cpuset list: ``(0, 2, 3, 4)`` -> ``"0,2-4"``."""
    parts: list[str] = []
    ordered = sorted(cpus)
    index = 0
    while index < len(ordered):
        end = index
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        first, last = ordered[index], ordered[end]
        parts.append(str(first) if first == last else f"{first}-{last}")
        index = end + 1
    return ",".join(parts)


def spec_to_json(spec: ContainerSpec) -> dict[str, Any]:
    """The spec as a JSON-able dict (what ``spec.json`` holds)."""
    return {
        "id": spec.id,
        "rootfs": str(spec.rootfs),
        "args": list(spec.args),
        "env": list(spec.env),
        "cwd": spec.cwd,
        "uid": spec.uid,
        "gid": spec.gid,
        "cpus": list(spec.cpus),
        "memory_bytes": spec.memory_bytes,
        "mounts": [
            {"source": str(m.source), "destination": m.destination, "readonly": m.readonly}
            for m in spec.mounts
        ],
        "timeout_seconds": spec.timeout_seconds,
        "hostname": spec.hostname,
        "devices": [asdict(device) for device in spec.devices],
        "hooks": [asdict(hook) for hook in spec.hooks],
        "stop_grace_seconds": spec.stop_grace_seconds,
        "log_limit_bytes": spec.log_limit_bytes,
        "peers": list(spec.peers),
        "files": [{"path": item.path, "content": base64.b64encode(item.content).decode()}
                  for item in spec.files],
        "hosts": list(spec.hosts),
        "job_namespaces": spec.job_namespaces,
        "job_shm": spec.job_shm,
        "sandbox": spec.sandbox,
    }


def sandbox_key(spec: ContainerSpec) -> str | None:
    """The task sandbox ``spec``'s task runs in (a hash of its ``sandbox`` group, the task
    array's workflow and job, and of every field but its id, env and CPUs); None: a
    container of its own (no group, or devices, hooks, peers or a multinode job's
    namespaces, which a sandbox does not give each task)."""
    if not spec.sandbox or spec.devices or spec.hooks or spec.peers or spec.job_namespaces \
            or spec.job_shm:
        return None
    fields = spec_to_json(spec)
    for name in ("id", "env", "cpus"):
        del fields[name]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def spec_from_json(data: Mapping[str, Any]) -> ContainerSpec:
    """Rebuild (and re-validate) a spec written by :func:`spec_to_json`."""
    try:
        return ContainerSpec(
            id=data["id"],
            rootfs=Path(data["rootfs"]),
            args=tuple(data["args"]),
            env=tuple(data.get("env", ())),
            cwd=data.get("cwd", "/"),
            uid=data.get("uid", 65534),
            gid=data.get("gid", 65534),
            cpus=tuple(data.get("cpus", ())),
            memory_bytes=data.get("memory_bytes", 0),
            mounts=tuple(
                Mount(Path(m["source"]), m["destination"], bool(m.get("readonly", False)))
                for m in data.get("mounts", ())
            ),
            timeout_seconds=data.get("timeout_seconds"),
            hostname=data.get("hostname", "job"),
            devices=tuple(DeviceNode(**device) for device in data.get("devices", ())),
            hooks=tuple(
                Hook(**{**hook, "args": tuple(hook["args"]), "env": tuple(hook["env"])})
                for hook in data.get("hooks", ())
            ),
            stop_grace_seconds=data.get("stop_grace_seconds", 10.0),
            log_limit_bytes=data.get("log_limit_bytes", 0),
            peers=tuple(data.get("peers", ())),
            files=tuple(ContainerFile(item["path"], base64.b64decode(item["content"]))
                        for item in data.get("files", ())),
            hosts=tuple(data.get("hosts", ())),
            job_namespaces=data.get("job_namespaces", ""),
            job_shm=data.get("job_shm", ""),
            sandbox=data.get("sandbox", ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ContainerSpecError(f"container spec is malformed: {exc}") from None


@dataclass(frozen=True)
class JobNamespace:
    """The network namespace a job joins (a bind-mounted nsfs file) and its resolv.conf."""

    netns: str
    resolv_conf: Path


def _mount(destination: str, kind: str, source: str, options: Sequence[str]) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": list(options)}


def _mounts(spec: ContainerSpec) -> list[dict[str, Any]]:
    """The standard container mounts (``/dev/shm`` the job's on this machine when it has
    one), a tmpfs /tmp, then the requested volumes."""
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount(
            "/dev/pts",
            "devpts",
            "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        _mount("/dev/shm", "bind", spec.job_shm, ["rbind", "rprivate", "nosuid", "noexec",
                                                  "nodev"]) if spec.job_shm else
        _mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777"]),
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        _mount(
            "/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", "ro"]
        ),
    ]
    destinations = {str(PurePosixPath(m.destination)) for m in spec.mounts}
    if "/tmp" not in destinations:
        # tmpfs pages are charged to the job's memory cgroup, so /tmp counts
        # against the memory limit instead of filling the node's disk.
        mounts.append(_mount("/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777"]))
    for volume in spec.mounts:
        options = ["rbind", "rprivate", "nosuid", "nodev"]
        if volume.readonly:
            options.append("ro")
        mounts.append(_mount(volume.destination, "bind", str(volume.source), options))
    return mounts


def _namespaces(spec: ContainerSpec) -> list[dict[str, Any]]:
    """The config's namespaces but the network's: new ones, or the job's PID and IPC
    namespaces of ``spec.job_namespaces``, joined."""
    joined = ("pid", "ipc") if spec.job_namespaces else ()
    return [{"type": kind, "path": f"{spec.job_namespaces}/{kind}"} if kind in joined
            else {"type": kind} for kind in ("pid", "ipc", "uts", "mount")]


def _placed_files(spec: ContainerSpec, files_dir: str | Path | None) -> list[dict[str, Any]]:
    """The read-only binds of ``spec.files``, from ``files_dir/0``, ``/1``, ..."""
    if spec.files and files_dir is None:
        raise ContainerSpecError(f"container {spec.id}: its files need a files_dir")
    return [_mount(item.path, "bind", str(Path(str(files_dir)) / str(index)),
                   ["bind", "rprivate", "nosuid", "nodev", "ro"])
            for index, item in enumerate(spec.files)]


def _hooks(hooks: Sequence[Hook]) -> dict[str, list[dict[str, Any]]]:
    """The OCI ``hooks`` object: each stage's hooks in the order given."""
    stages: dict[str, list[dict[str, Any]]] = {}
    for hook in hooks:
        entry: dict[str, Any] = {"path": hook.path}
        if hook.args:
            entry["args"] = list(hook.args)
        if hook.env:
            entry["env"] = list(hook.env)
        if hook.timeout is not None:
            entry["timeout"] = hook.timeout
        stages.setdefault(hook.stage, []).append(entry)
    return stages


def oci_config(
    spec: ContainerSpec, rootfs_path: str | Path, nofile: int = NOFILE_LIMIT,
    network: JobNamespace | None = None, hosts: Path | None = None,
    files_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The OCI runtime ``config.json`` for ``spec``, rooted at ``rootfs_path``.

    ``rootfs_path`` is where the container's writable overlay is mounted (see the
    module docstring); ``nofile`` is the job's open-files limit (soft and hard;
    runc cannot raise it above the agent's own hard limit without
    CAP_SYS_RESOURCE). With ``network`` the job joins that network namespace and
    gets its resolv.conf (read-only); without, it keeps the host's network
    namespace (an admin's opt-in). ``hosts``: a file (:func:`hosts_file`) bound on its
    ``/etc/hosts`` (read-only). A ``PATH`` is added to its env when it has none.
    Each of ``spec.devices`` is made in the container and allowed (with its
    permissions) in the devices cgroup, and ``spec.hooks`` become the config's ``hooks``.
    ``spec.files`` are bound read-only from ``files_dir`` (where the container's files
    are written, ``0``, ``1``, ...), after every other mount, so a file under ``/tmp`` or
    at ``/etc/resolv.conf`` is the job's own.
    """
    env = list(spec.env)
    if not any(item.startswith("PATH=") for item in env):
        env.insert(0, DEFAULT_PATH)
    capabilities = list(ROOT_CAPABILITIES) if spec.uid == 0 else []
    process: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": spec.uid, "gid": spec.gid, "additionalGids": [spec.gid]},
        "args": list(spec.args),
        "env": env,
        "cwd": spec.cwd,
        "capabilities": {
            "bounding": capabilities,
            "effective": capabilities,
            "permitted": capabilities,
            "inheritable": [],
            "ambient": [],
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        "noNewPrivileges": True,
    }
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    for device in spec.devices:
        resources["devices"].append(
            {
                "allow": True,
                "type": device.kind,
                "major": device.major,
                "minor": device.minor,
                "access": device.permissions,
            }
        )
    if spec.cpus:
        resources["cpu"] = {"cpus": cpuset_string(spec.cpus)}
    if spec.memory_bytes > 0:
        # swap == limit: memory+swap may not exceed the limit, so no swap escape.
        resources["memory"] = {"limit": spec.memory_bytes, "swap": spec.memory_bytes}
    config: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": str(rootfs_path), "readonly": False},
        "hostname": spec.hostname,
        "mounts": _mounts(spec),
        "linux": {
            "namespaces": _namespaces(spec),
            "cgroupsPath": f"{CGROUP_PARENT}/{spec.id}",
            "resources": resources,
            "devices": [
                {
                    "path": device.path,
                    "type": device.kind,
                    "major": device.major,
                    "minor": device.minor,
                    "fileMode": device.file_mode,
                    "uid": device.uid,
                    "gid": device.gid,
                }
                for device in spec.devices
            ],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp.default_profile(),  # syscalls: an allow-list, as Docker's
        },
    }
    if network is not None:
        config["linux"]["namespaces"].append({"type": "network", "path": network.netns})
        config["mounts"].append(_mount("/etc/resolv.conf", "bind", str(network.resolv_conf),
                                       ["rbind", "rprivate", "nosuid", "nodev", "ro"]))
    if hosts is not None:
        config["mounts"].append(_mount("/etc/hosts", "bind", str(hosts),
                                       ["rbind", "rprivate", "nosuid", "nodev", "ro"]))
    config["mounts"] += _placed_files(spec, files_dir)
    if spec.hooks:
        config["hooks"] = _hooks(spec.hooks)
    return config
