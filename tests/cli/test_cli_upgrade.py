"""``fuzz workflow upgrade FILE [-o OUT | --in-place]``: the v4 form of a v1 Fuzzfile."""

from __future__ import annotations

import os
from pathlib import Path

from fuzz.spec.fuzzfile_upgrade import upgrade_text
from tests.support.cliutil import run_fuzz

V1 = """\
version: v1   # upgraded by fuzz workflow upgrade
volumes:
  work: {name: work, reference: volume://user/ephemeral}
jobs:
  a:
    image: {uri: docker://alpine:3.20}
    command: [ls, /work]
    mounts:
      work: {location: /work}
"""

V4 = """\
version: v4   # upgraded by fuzz workflow upgrade
volumes:
  work: {reference: volume://user/ephemeral}
jobs:
  a:
    image: {uri: docker://alpine:3.20}
    command: [ls, /work]
    mounts:
      /work: {volume: work}
"""


def test_upgrade_prints_the_v4_form(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(V1)
    printed = run_fuzz(tmp_path, "workflow", "upgrade", "wf.yaml")
    assert (printed.code, printed.out, printed.err) == (0, V4, "")
    assert upgrade_text(V1, "wf.yaml") == V4
    assert (tmp_path / "wf.yaml").read_text() == V1  # printing changes nothing


def test_upgrade_writes_a_file_or_in_place(tmp_path: Path) -> None:
    source = tmp_path / "wf.yaml"
    source.write_text(V1)
    written = run_fuzz(tmp_path, "workflow", "upgrade", "wf.yaml", "-o", "wf4.yaml")
    assert (written.code, written.out, written.err.strip()) == (0, "", "wf4.yaml: written in v4")
    assert (tmp_path / "wf4.yaml").read_text() == V4 and source.read_text() == V1
    assert run_fuzz(tmp_path, "workflow", "validate", "wf4.yaml").code == 0

    os.chmod(source, 0o640)
    in_place = run_fuzz(tmp_path, "workflow", "upgrade", "--in-place", "wf.yaml")
    assert (in_place.code, in_place.err.strip()) == (0, "wf.yaml: written in v4")
    assert source.read_text() == V4 and source.stat().st_mode & 0o777 == 0o640
    assert sorted(path.name for path in tmp_path.iterdir()) == ["wf.yaml", "wf4.yaml"]

    again = run_fuzz(tmp_path, "workflow", "upgrade", "--in-place", "wf.yaml")
    assert (again.code, again.err.strip()) == (0, "wf.yaml is already v4: nothing to upgrade")
    assert source.read_text() == V4


def test_upgrade_refusals(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(V1.replace("location: /work", "location: work"))
    invalid = run_fuzz(tmp_path, "workflow", "upgrade", "-o", "out.yaml", "bad.yaml")
    assert (invalid.code, invalid.out) == (1, "")
    assert invalid.err.splitlines() == [
        "bad.yaml:9:24: jobs.a.mounts.work.location: must be an absolute path, not 'work'"]
    assert not (tmp_path / "out.yaml").exists()

    (tmp_path / "wf.yaml").write_text(V1)
    both = run_fuzz(tmp_path, "workflow", "upgrade", "-o", "x.yaml", "--in-place", "wf.yaml")
    assert (both.code, both.err.strip()) == (
        1, "Error: give -o/--output or --in-place, not both")
    missing = run_fuzz(tmp_path, "workflow", "upgrade", "gone.yaml")
    assert (missing.code, missing.err.strip()) == (1, "Error: gone.yaml: no such file")
    unwritable = run_fuzz(tmp_path, "workflow", "upgrade", "wf.yaml", "-o", "no/such/dir.yaml")
    assert unwritable.code == 1
    assert unwritable.err.strip() == (
        "Error: no/such/dir.yaml: cannot write: No such file or directory")
