"""Errors name their cause: one line by default, the chained traceback with FUZZ_DEBUG=1.

Each test runs the real ``fuzz`` command on an error whose cause is the operating
system's (a missing directory, a spec path that is a directory).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.cliutil import fuzz_command

CHAINED = "The above exception was the direct cause of the following exception"


def _fuzz(cwd: Path, *args: str, debug: bool) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "FUZZ_DEBUG"}
    if debug:
        env["FUZZ_DEBUG"] = "1"
    return subprocess.run(fuzz_command(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=env)


def test_an_os_error_is_one_line_without_fuzz_debug(tmp_path: Path) -> None:
    result = _fuzz(tmp_path, "-C", str(tmp_path / "absent"), "plan", debug=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: -C {tmp_path / 'absent'}: No such file or directory"]


def test_fuzz_debug_shows_the_os_error_behind_a_one_line_error(tmp_path: Path) -> None:
    result = _fuzz(tmp_path, "-C", str(tmp_path / "absent"), "plan", debug=True)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "FileNotFoundError: [Errno 2] No such file or directory" in result.stderr
    assert CHAINED in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: -C {tmp_path / 'absent'}: No such file or directory")


def test_fuzz_debug_shows_why_the_spec_could_not_be_read(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").mkdir()
    quiet = _fuzz(tmp_path, "-f", "spec.yaml", "plan", debug=False)
    assert quiet.returncode == 1 and len(quiet.stderr.strip().splitlines()) == 1
    assert "Traceback" not in quiet.stderr
    loud = _fuzz(tmp_path, "-f", "spec.yaml", "plan", debug=True)
    assert loud.returncode == 1
    assert "IsADirectoryError" in loud.stderr and CHAINED in loud.stderr
    assert loud.stderr.strip().splitlines()[-1] == quiet.stderr.strip()
