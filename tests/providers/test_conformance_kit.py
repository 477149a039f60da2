"""The conformance kit itself: it passes a sound provider and fails each broken one."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SUITE = Path(__file__).parents[1] / "support" / "conformance_memory.py"
ERROR_TESTS = [f"test_errors_are_typed[{c}]" for c in ("auth", "capacity", "not-found", "quota")]
BOOTING = ("TestSound", "TestPayloadWithoutToken")  # the classes whose payload test runs (slow)
EXPECTED_FAILURES = {
    "TestSound": set(),
    "TestDuplicateCreates": {"test_create_is_idempotent_by_client_token"},
    "TestIgnoresCluster": {"test_read_finds_created_nodes_by_their_tags"},
    "TestStrictDelete": {"test_delete_is_idempotent_and_read_reports_gone"},
    "TestUntypedErrors": set(ERROR_TESTS),
    "TestPayloadWithoutToken": {
        "test_bootstrap_payload_carries_the_join_token_and_starts_the_agent"
    },
    "TestUnexplainedExemption": {"test_errors_are_typed[not-found]"},
}


def test_the_kit_fails_exactly_the_broken_behaviours(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
         f"--basetemp={tmp_path / 'base'}", "-k", f"{' or '.join(BOOTING)} or not bootstrap",
         str(SUITE)],
        capture_output=True, text=True, timeout=300, cwd=SUITE.parent,
    )
    assert report.exists(), proc.stdout + proc.stderr
    failed: dict[str, set[str]] = {name: set() for name in EXPECTED_FAILURES}
    ran: dict[str, int] = dict.fromkeys(EXPECTED_FAILURES, 0)
    for case in ET.parse(report).iter("testcase"):
        cls = case.get("classname", "").rpartition(".")[2]
        ran[cls] += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed[cls].add(case.get("name", ""))
    assert failed == EXPECTED_FAILURES, proc.stdout[-4000:]
    assert ran == {name: 11 if name in BOOTING else 10 for name in EXPECTED_FAILURES}, ran
