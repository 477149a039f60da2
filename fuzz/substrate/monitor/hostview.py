"""The host's mounts as they are when a job starts, brought into the monitor's namespace.

The monitor lives in a mount namespace of its own
(:func:`~fuzz.substrate.monitor.syscalls.private_mount_namespace`), an ``rslave``
copy of the host's taken when it started. Where the host's mounts are shared
(systemd makes ``/`` shared), what the host mounts later reaches that copy; where
they are private (hosts without systemd, many containers), it never does, and a
volume on a parallel filesystem or NFS mounted after the node started would be
"no such file or directory" to runc.

So each bind mount of a job (its volumes, its ``resolv.conf``, CDI files) is taken
from the host's namespace as it is at the job's start: a forked child (``setns``
needs a process without threads, and the monitor has one) enters the host's
namespace, makes a detached copy of the source's mount tree (``open_tree``), comes
back and attaches the copy under the monitor's tmpfs run dir (``move_mount``); the
job's ``config.json`` then names the copy. The copy exists in the monitor's
namespace only (and in the container's, which runc copies from it), never on the
host; it is unmounted when the job is cleaned up, and goes with the namespace if
the monitor dies. On kernels before 5.2 (no ``open_tree``) the sources are left as
they are: the ``rslave`` copy is all there is.
"""

from __future__ import annotations

import json
import logging
import os
import stat

from fuzz.substrate.monitor.syscalls import (
    SysError,
    attach_mount_tree,
    clone_mount_tree,
    enter_mount_namespace,
    mount_api_available,
    unmount,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

logger = logging.getLogger(__name__)


class HostView:
    """Binds a job's mount sources from the host's mount namespace; see the module docstring."""

    def __init__(self, host_ns: int, own_ns: int, stage_root: str, own_dir: str) -> None:
        """``host_ns`` and ``own_ns``: descriptors of the host's mount namespace and of the
        monitor's; copies are attached under ``stage_root`` (on the monitor's tmpfs).
        Sources under ``own_dir`` (the monitor's state dir) are its own files: kept."""
        self.host_ns = host_ns
        self.own_ns = own_ns
        self.stage_root = stage_root
        self.own_dir = os.path.join(own_dir, "")
        self.available = mount_api_available()
        if not self.available:
            logger.warning("no open_tree on this kernel: jobs see only the mounts the host "
                        "had when the monitor started, or shared since")

    def bind_sources(self, job_id: str, config_text: str) -> str:
        """``config_text`` (an OCI config) with each bind source replaced by its copy.

        Raises :class:`SysError` (one line) when a source cannot be copied; what was
        attached before stays until :meth:`release`.
        """
        if not self.available:
            return config_text
        config: dict[str, Any] = json.loads(config_text)
        binds = [mount for mount in config.get("mounts", ())
                 if mount.get("type") == "bind" and self._from_host(str(mount.get("source")))]
        if not binds:
            return config_text
        staged = os.path.join(self.stage_root, job_id)
        os.makedirs(staged, mode=0o700, exist_ok=True)
        copies = [(str(mount["source"]), os.path.join(staged, str(index)))
                  for index, mount in enumerate(binds)]
        self._copy(copies)
        for mount, (_, target) in zip(binds, copies, strict=True):
            mount["source"] = target
        return json.dumps(config)

    def release(self, job_id: str) -> list[str]:
        """Unmount a job's copies and remove their mount points; the problems, one line each."""
        staged = os.path.join(self.stage_root, job_id)
        try:
            names = os.listdir(staged)
        except FileNotFoundError:
            return []
        problems = []
        for name in names:
            target = os.path.join(staged, name)
            problem = unmount(target)
            if problem is not None:
                problems.append(problem)
                continue
            remove = os.rmdir if os.path.isdir(target) else os.unlink
            remove(target)
        if not problems:
            os.rmdir(staged)
        return problems

    def _from_host(self, source: str) -> bool:
        return source.startswith("/") and not source.startswith(self.own_dir)

    def _copy(self, copies: list[tuple[str, str]]) -> None:
        """Attach on each target a copy of the host's mount tree at its source (in one
        child: its error, if any, comes back through a pipe)."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child only makes syscalls, then _exits
            os.close(read_end)
            code = 0
            try:
                self._copy_in_child(copies)
            except (SysError, OSError) as exc:
                os.write(write_end, str(exc).encode()[:1000])
                code = 1
            os._exit(code)
        os.close(write_end)
        try:
            with os.fdopen(read_end, "rb") as reader:
                error = reader.read().decode(errors="replace")
        finally:
            os.waitpid(pid, 0)
        if error:
            raise SysError(f"binding the host's paths: {error}")

    def _copy_in_child(self, copies: list[tuple[str, str]]) -> None:
        enter_mount_namespace(self.host_ns)
        trees = [clone_mount_tree(source) for source, _ in copies]
        enter_mount_namespace(self.own_ns)
        for tree, (_, target) in zip(trees, copies, strict=True):
            if stat.S_ISDIR(os.fstat(tree).st_mode):
                os.mkdir(target, 0o700)
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            attach_mount_tree(tree, target)
