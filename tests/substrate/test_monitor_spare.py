"""What identifies an image directory to the monitor's spares (monitor/spare.py)."""

from __future__ import annotations

import os
from pathlib import Path

from fuzz.substrate.monitor.spare import image_identity


def test_an_image_is_its_real_path_and_inode(tmp_path: Path) -> None:
    rootfs = tmp_path / "images" / "sha256-1" / "rootfs"
    rootfs.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "images")
    info = rootfs.stat()
    expected = (str(rootfs.resolve()), info.st_dev, info.st_ino)
    assert image_identity(str(tmp_path / "link" / "sha256-1" / "rootfs")) == expected
    assert image_identity(str(rootfs) + "/") == expected


def test_a_file_or_a_missing_path_is_no_image(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert image_identity(str(tmp_path / "file")) is None
    assert image_identity(str(tmp_path / "missing")) is None
    os.symlink(tmp_path / "file", tmp_path / "to-file")
    assert image_identity(str(tmp_path / "to-file")) is None
