"""Where a workflow's volumes live, and moving data into and out of them.

Volumes are directories under the cluster's volume root, a path every node sees
at the same place (a parallel or network file system on a real cluster; a local
directory when all nodes are on one machine). An ephemeral volume lives in
``<root>/ephemeral/<workflow id>/<name>`` for its workflow only; a persistent one
in ``<root>/persistent/<owner>/<name>`` outlives it. Volume directories belong to
the uid jobs run as, so jobs can write to them. Transfers reach the orchestrator
host's own files (``file:///``) only inside the admin's ``host_paths``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from fuzz.orchestrate import transfer
from fuzz.orchestrate.records import TransferRecord, VolumeRecord
from fuzz.orchestrate.transfer import ByteBudget, S3Credentials, TransferError, TransferResult
from fuzz.spec.fuzzfile import VolumeSpec


class VolumeManager:
    """Creates, fills, empties and deletes volume directories."""

    def __init__(self, root: Path, uid: int, gid: int, host_roots: Sequence[Path] = ()) -> None:
        """Keep volumes under ``root``, owned by ``uid``:``gid``; ``file:///`` transfers
        may use the host directories ``host_roots`` only."""
        self.root = root
        self.uid = uid
        self.gid = gid
        self.host_roots = tuple(host_roots)

    def host_path_problem(self, move: TransferRecord) -> str | None:
        """Why ``move``'s path on the orchestrator host is refused; None if it is allowed
        (or it has none)."""
        uri = move.source if move.direction == "ingress" else move.destination
        if not uri.lower().startswith("file://"):
            return None
        try:
            transfer.host_path(uri, self.host_roots)
        except TransferError as exc:
            return str(exc)
        return None

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

    def move(self, record: TransferRecord, volume: VolumeRecord,
             credentials: S3Credentials | None,
             progress: Callable[[int, int | None], None],
             budget: ByteBudget | None = None) -> TransferResult:
        """Run one ingress or egress of ``volume``; TransferError says what failed.

        ``budget``: the bytes an ingress may still write into the volume.
        """
        directory = Path(volume.path)
        if record.direction == "ingress":
            result = transfer.ingress(record.source, record.destination, directory,
                                      credentials=credentials, progress=progress,
                                      host_roots=self.host_roots, budget=budget)
            self._own(directory)
            return result
        return transfer.egress(record.source, record.destination, directory,
                               credentials=credentials, progress=progress,
                               host_roots=self.host_roots)

    def _own(self, directory: Path) -> None:
        """Give what an ingress wrote to the jobs' uid (it was written as the server's)."""
        for base, dirs, files in os.walk(directory):
            for name in (*dirs, *files):
                os.lchown(os.path.join(base, name), self.uid, self.gid)

    def delete(self, volume: VolumeRecord) -> None:
        """Remove an ephemeral volume's directory (and its workflow's, once empty)."""
        if not volume.ephemeral:
            return
        path = Path(volume.path)
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):  # another volume of the workflow is still there
            path.parent.rmdir()
