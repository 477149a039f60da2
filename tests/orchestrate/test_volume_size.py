"""A v4 volume's ``size``: the most that volume may hold, under the cluster's limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.orchestrate.records import VolumeRecord
from fuzz.orchestrate.transfer.stream import TransferError
from fuzz.orchestrate.transfer.volume_limits import VolumeLimits

MiB = 2**20


def _volume(tmp_path: Path, held: int) -> VolumeRecord:
    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / "held.bin").write_bytes(b"x" * held)
    return VolumeRecord("wf.1", "data", "volume://user/ephemeral", str(tmp_path / "vol"),
                        ephemeral=True)


def test_a_volume_holding_more_than_its_size_is_over(tmp_path: Path) -> None:
    volume = _volume(tmp_path, 2 * MiB)
    limits = VolumeLimits(8 * MiB)
    assert limits.overrun(volume) is None  # within the cluster's limit
    assert limits.overrun(volume, size=4 * MiB) is None
    assert limits.overrun(volume, size=MiB) == (
        "holds 2.0 MiB (2097152 bytes), over the limit of 1.0 MiB (volumes.data.size)")
    # a size above the cluster's limit does not lift it (a start refuses such a size)
    assert VolumeLimits(MiB).overrun(volume, size=8 * MiB) == (
        "holds 2.0 MiB (2097152 bytes), over the limit of 1.0 MiB"
        " (orchestrator.limits.volume_bytes)")


def test_ingress_stops_at_the_volumes_size(tmp_path: Path) -> None:
    volume = _volume(tmp_path, MiB)
    budget = VolumeLimits(8 * MiB).ingress_budget(volume, size=2 * MiB)
    budget.take(MiB // 2, "http://127.0.0.1/x")  # 1.5 MiB in all: fine
    with pytest.raises(TransferError) as refused:
        budget.take(MiB, "http://127.0.0.1/x")
    assert str(refused.value) == (
        "http://127.0.0.1/x: the volume 'data' would hold more than its limit of 2.0 MiB"
        " (volumes.data.size); ingress stopped")
