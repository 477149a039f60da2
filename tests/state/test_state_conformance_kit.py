"""The state conformance kit itself: it passes a sound backend and fails each broken one."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SUITE = Path(__file__).parents[1] / "support" / "state_conformance_memory.py"
KIT_TESTS = 9
EXPECTED_FAILURES = {
    "TestSound": set(),
    "TestUnconditionalWrite": {"test_a_write_based_on_an_outdated_read_is_refused"},
    "TestCachedReads": {"test_a_write_based_on_an_outdated_read_is_refused",
                        "test_a_store_refuses_a_change_based_on_an_older_serial"},
    "TestSharedLock": {"test_the_lock_admits_one_holder_and_names_it"},
    "TestAnyIdUnlocks": {"test_the_lock_admits_one_holder_and_names_it",
                         "test_force_unlock_needs_the_holders_id"},
    "TestForceIgnoresId": {"test_force_unlock_needs_the_holders_id"},
    "TestOldestFirst": {"test_versions_are_listed_newest_first_and_readable"},
    "TestLaxConfig": {"test_an_unknown_key_is_a_one_line_config_error"},
    "TestUntypedErrors": {"test_failures_are_one_line_state_and_lock_errors"},
    "TestUnexplainedExemption": {"test_versions_are_listed_newest_first_and_readable"},
}


def test_the_state_kit_fails_exactly_the_broken_behaviours(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
         f"--basetemp={tmp_path / 'base'}", str(SUITE)],
        capture_output=True, text=True, timeout=300, cwd=SUITE.parent,
    )
    assert report.exists(), proc.stdout + proc.stderr
    failed: dict[str, set[str]] = {name: set() for name in EXPECTED_FAILURES}
    ran: dict[str, int] = dict.fromkeys(EXPECTED_FAILURES, 0)
    skipped: dict[str, set[str]] = {name: set() for name in EXPECTED_FAILURES}
    for case in ET.parse(report).iter("testcase"):
        cls = case.get("classname", "").rpartition(".")[2]
        ran[cls] += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed[cls].add(case.get("name", ""))
        if case.find("skipped") is not None:
            skipped[cls].add(case.get("name", ""))
    assert failed == EXPECTED_FAILURES, proc.stdout[-4000:]
    assert ran == dict.fromkeys(EXPECTED_FAILURES, KIT_TESTS), ran
    # the one exemption the memory backend explains shows as a skip, nothing else does
    killed = "test_a_killed_holders_lock_goes_or_stays_breakable"
    assert skipped == {name: {killed} for name in EXPECTED_FAILURES}, skipped
