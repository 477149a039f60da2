"""Where a workflow's volumes live, and moving data into and out of them.

Volumes are directories under the cluster's volume root, a path every node sees
at the same place (a parallel or network file system on a real cluster; a local
directory when all nodes are on one machine). An ephemeral volume lives in
``<root>/ephemeral/<workflow id>/<name>`` for its workflow only; a persistent one
in ``<root>/persistent/<owner>/<name>`` outlives it. A volume's directory belongs
to its owner's job ids (:mod:`fuzz.orchestrate.workflows.jobids`), mode 0700: the owner's
jobs can write to it, another owner's cannot enter it; transfers read and write it as
those ids too. An account's persistent volume (``volume://account/persistent[/NAME]``)
lives in ``<root>/account/<account>/<name>`` and belongs to the account's ids, mode
2770: the jobs of its members' workflows in that account run with the account's gid,
so they share it (new files take the account's group), and no one else enters it.
Transfers reach the orchestrator host's own files (``file:///``) only in the owner's
subtree of the admin's ``host_paths``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from fuzz.orchestrate.records import TransferRecord, VolumeRecord
from fuzz.orchestrate.transfer import ingress_egress as transfer
from fuzz.orchestrate.transfer.cache import IngressCache
from fuzz.orchestrate.transfer.confined import Identity
from fuzz.orchestrate.transfer.host_roots import HostAccess, HostRoots
from fuzz.orchestrate.transfer.ingress_egress import ByteBudget, S3Credentials, TransferResult
from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
from fuzz.orchestrate.workflows.jobids import JobIds
from fuzz.spec.fuzzfile import VolumeSpec


class VolumeManager:
    """Creates, fills, empties and deletes volume directories."""

    def __init__(self, root: Path, host_roots: HostRoots | None = None,
                 http_policy: IngressPolicy | None = None, cache: IngressCache | None = None,
                 cache_links: bool = True) -> None:
        """Keep volumes under ``root``; ``file:///`` transfers may use the owner's subtrees
        of ``host_roots`` only (none without it), ``http(s)://`` ingress the addresses
        ``http_policy`` allows (None: public ones only). Ingress goes through ``cache``
        (None: none), placed as hard links with ``cache_links``, else as copies."""
        self.root = root
        self.host_roots = host_roots or HostRoots()
        self.http_policy = http_policy
        self.cache = cache
        self.cache_links = cache_links

    def host_path_problem(self, move: TransferRecord, owner: str,
                          inline_files: Mapping[str, str] | None = None) -> str | None:
        """Why ``move``'s path on the orchestrator host is refused for a workflow of
        ``owner``; None if it is allowed (or it has none: an ingress from ``file://KEY``,
        an entry of the Fuzzfile's ``inline_files``, has none)."""
        uri = move.source if move.direction == "ingress" else move.destination
        if not uri.lower().startswith("file://"):
            return None
        if move.direction == "ingress" and uri.removeprefix("file://") in (inline_files or {}):
            return None
        return HostAccess(self.host_roots, owner).problem(uri)

    def path_for(self, workflow_id: str, owner: str, name: str, spec: VolumeSpec,
                 account: str = "") -> Path:
        """Where volume ``name`` of ``owner``'s workflow ``workflow_id`` (running in
        ``account``, if any) lives."""
        persistent: str | None = spec.persistent_name
        if persistent is not None and spec.scope == "account":
            return self.root / "account" / account / persistent
        if persistent is not None:
            return self.root / "persistent" / owner / persistent
        return self.root / "ephemeral" / workflow_id / name

    def create(self, volume: VolumeRecord, ids: JobIds, shared: bool = False) -> None:
        """Make the volume's directory, ``ids``' own, 0700 (2770 when ``shared`` by an
        account's members; kept if it exists: persistent, or a restart).

        A persistent volume written before owners had ids of their own (by the shared
        job uid) is given to its owner's ids, its files included.
        """
        path = Path(volume.path)
        path.mkdir(parents=True, exist_ok=True)
        before = path.lstat()
        os.chown(path, ids.uid, ids.gid, follow_symlinks=False)
        os.chmod(path, 0o2770 if shared else 0o700, follow_symlinks=False)
        if (before.st_uid, before.st_gid) != (ids.uid, ids.gid):
            self._own(path, ids)

    def move(self, record: TransferRecord, volume: VolumeRecord, owner: str,
             credentials: S3Credentials | None,
             progress: Callable[[int, int | None], None], ids: JobIds,
             budget: ByteBudget | None = None,
             inline_files: Mapping[str, str] | None = None) -> TransferResult:
        """Run one ingress or egress of ``volume`` of a workflow of ``owner`` as the
        owner's job ``ids``; TransferError says what failed. ``budget``: the bytes an
        ingress may still write into the volume; ``inline_files``: the Fuzzfile's
        top-level ``files`` (an ingress from ``file://KEY`` copies one)."""
        directory = Path(volume.path)
        host = HostAccess(self.host_roots, owner)
        identity = Identity(ids.uid, ids.gid)
        if record.direction == "ingress":
            return transfer.ingress(record.source, record.destination, directory,
                                    credentials=credentials, progress=progress, host=host,
                                    identity=identity, http_policy=self.http_policy,
                                    budget=budget, inline_files=inline_files,
                                    cache=self.cache, hard_links=self.cache_links)
        return transfer.egress(record.source, record.destination, directory,
                               credentials=credentials, progress=progress, host=host,
                               identity=identity, http_policy=self.http_policy)

    @staticmethod
    def _own(directory: Path, ids: JobIds) -> None:
        """Give a volume written by the old shared job uid to its owner's ``ids``: walked
        through directory descriptors, never following a symlink (``fchownat`` with
        ``AT_SYMLINK_NOFOLLOW``), so a job's planted link cannot redirect the chown.
        Files root owns are the ingress cache's, hard-linked in: they stay read-only."""
        for _, dirs, files, dir_fd in os.fwalk(directory, follow_symlinks=False):
            for name in (*dirs, *files):
                if os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_uid != 0:
                    os.chown(name, ids.uid, ids.gid, dir_fd=dir_fd, follow_symlinks=False)

    def delete(self, volume: VolumeRecord) -> None:
        """Remove an ephemeral volume's directory (and its workflow's, once empty)."""
        if not volume.ephemeral:
            return
        path = Path(volume.path)
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):  # another volume of the workflow is still there
            path.parent.rmdir()
