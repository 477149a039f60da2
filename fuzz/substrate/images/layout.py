"""OCI image layouts on disk: the image config in one, the size and removal of unpacked trees."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAYOUT_TAG = "image"


@dataclass(frozen=True)
class ImageConfig:
    """What a container of the image runs by default (from the OCI image config)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""

    @classmethod
    def from_oci(cls, config: Mapping[str, Any]) -> ImageConfig:
        """Read the ``config`` object of an OCI image configuration blob."""
        inner = config.get("config") or {}
        return cls(
            entrypoint=tuple(inner.get("Entrypoint") or ()),
            cmd=tuple(inner.get("Cmd") or ()),
            env=tuple(inner.get("Env") or ()),
            working_dir=str(inner.get("WorkingDir") or ""),
            user=str(inner.get("User") or ""),
        )

    def to_json(self) -> dict[str, Any]:
        """This config as a JSON object for the store's metadata."""
        return {
            "entrypoint": list(self.entrypoint),
            "cmd": list(self.cmd),
            "env": list(self.env),
            "working_dir": self.working_dir,
            "user": self.user,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageConfig:
        """The inverse of :meth:`to_json`."""
        return cls(
            entrypoint=tuple(data.get("entrypoint", ())),
            cmd=tuple(data.get("cmd", ())),
            env=tuple(data.get("env", ())),
            working_dir=str(data.get("working_dir", "")),
            user=str(data.get("user", "")),
        )


def tree_size(path: Path) -> int:
    """Bytes taken by the files and links under ``path`` (hard links counted once)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            try:
                info = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                continue
            key = (info.st_dev, info.st_ino)
            if info.st_nlink > 1:
                if key in seen:
                    continue
                seen.add(key)
            total += info.st_size
    return total


def remove_tree(path: Path) -> None:
    """Remove ``path`` even where the image made directories read-only."""

    def retry(func: Callable[..., Any], target: str, *_exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
        with contextlib.suppress(OSError):
            os.chmod(target, stat.S_IRWXU)
        func(target)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=retry)
        else:
            shutil.rmtree(path, onerror=retry)


def read_layout_config(layout: Path, tag: str) -> ImageConfig:
    """The image config of ``tag`` in the OCI layout at ``layout``."""

    def blob(digest: str) -> dict[str, Any]:
        algo, _, hexpart = digest.partition(":")
        data = json.loads((layout / "blobs" / algo / hexpart).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"blob {digest} is not a JSON object")
        return data

    index = json.loads((layout / "index.json").read_text())
    manifests = index.get("manifests") or []
    chosen = [
        m
        for m in manifests
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag
    ] or manifests
    if not chosen:
        raise ValueError(f"OCI layout {layout} has no manifest")
    manifest = blob(chosen[0]["digest"])
    return ImageConfig.from_oci(blob(manifest["config"]["digest"]))


def layout_key(digest: str) -> str:
    """The directory name for ``digest`` (no ``:``, which overlayfs options cannot hold)."""
    return digest.replace(":", "-", 1)
