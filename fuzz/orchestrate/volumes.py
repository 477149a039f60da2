"""Where a workflow's volumes live, and moving data into and out of them.

Volumes are directories under the cluster's volume root, a path every node sees
at the same place (a parallel or network file system on a real cluster; a local
directory when all nodes are on one machine). An ephemeral volume lives in
``<root>/ephemeral/<workflow id>/<name>`` for its workflow only; a persistent one
in ``<root>/persistent/<owner>/<name>`` outlives it. Volume directories belong to
the uid jobs run as, so jobs can write to them; transfers read and write them as that
uid and gid too. Transfers reach the orchestrator host's own files (``file:///``) only in
the owner's subtree of the admin's ``host_paths``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from fuzz.orchestrate import transfer
from fuzz.orchestrate.confined import Identity
from fuzz.orchestrate.host_roots import HostAccess, HostRoots
from fuzz.orchestrate.ingress_policy import IngressPolicy
from fuzz.orchestrate.records import TransferRecord, VolumeRecord
from fuzz.orchestrate.transfer import S3Credentials, TransferResult
from fuzz.spec.fuzzfile import VolumeSpec


class VolumeManager:
    """Creates, fills, empties and deletes volume directories."""

    def __init__(self, root: Path, uid: int, gid: int,
                 host_roots: HostRoots | None = None,
                 http_policy: IngressPolicy | None = None) -> None:
        """Keep volumes under ``root``, owned by ``uid``:``gid``; ``file:///`` transfers
        may use the owner's subtrees of ``host_roots`` only (none without it), ``http(s)://``
        ingress the addresses ``http_policy`` allows (None: public ones only)."""
        self.root = root
        self.uid = uid
        self.gid = gid
        self.host_roots = host_roots or HostRoots()
        self.http_policy = http_policy

    def host_path_problem(self, move: TransferRecord, owner: str) -> str | None:
        """Why ``move``'s path on the orchestrator host is refused for a workflow of
        ``owner``; None if it is allowed (or it has none)."""
        uri = move.source if move.direction == "ingress" else move.destination
        if not uri.lower().startswith("file://"):
            return None
        return HostAccess(self.host_roots, owner).problem(uri)

    def path_for(self, workflow_id: str, owner: str, name: str, spec: VolumeSpec) -> Path:
        """Where volume ``name`` of workflow ``workflow_id`` lives."""
        persistent: str | None = spec.persistent_name
        if persistent is not None:
            return self.root / "persistent" / owner / persistent
        return self.root / "ephemeral" / workflow_id / name

    def create(self, volume: VolumeRecord) -> None:
        """Make the volume's directory (kept if it exists: persistent, or a restart)."""
        path = Path(volume.path)
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, self.uid, self.gid)

    def move(self, record: TransferRecord, volume: VolumeRecord, owner: str,
             credentials: S3Credentials | None,
             progress: Callable[[int, int | None], None]) -> TransferResult:
        """Run one ingress or egress of ``volume`` of a workflow of ``owner``, as the uid and
        gid of its jobs; TransferError says what failed."""
        directory = Path(volume.path)
        host = HostAccess(self.host_roots, owner)
        identity = Identity(self.uid, self.gid)
        if record.direction == "ingress":
            return transfer.ingress(record.source, record.destination, directory,
                                    credentials=credentials, progress=progress, host=host,
                                    identity=identity, http_policy=self.http_policy)
        return transfer.egress(record.source, record.destination, directory,
                               credentials=credentials, progress=progress, host=host,
                               identity=identity, http_policy=self.http_policy)

    def delete(self, volume: VolumeRecord) -> None:
        """Remove an ephemeral volume's directory (and its workflow's, once empty)."""
        if not volume.ephemeral:
            return
        path = Path(volume.path)
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):  # another volume of the workflow is still there
            path.parent.rmdir()
