"""Tests for :mod:`fuzz.engine.workflows`: declared workflows planned against recorded runs."""

from __future__ import annotations

from fuzz.engine.workflows import DeclaredWorkflow, RecordedRun, plan_workflows


def test_new_changed_and_unchanged_workflows() -> None:
    declared = [
        DeclaredWorkflow("nightly", "nightly.yaml", "b" * 64),
        DeclaredWorkflow("fresh", "fresh.yaml", "c" * 64),
        DeclaredWorkflow("steady", "steady.yaml", "d" * 64),
    ]
    recorded = {"nightly": RecordedRun(3, "SUCCEEDED", "a" * 64),
                "steady": RecordedRun(1, "FAILED", "d" * 64),
                "undeclared": RecordedRun(1, "SUCCEEDED", "e" * 64)}
    changes = {c.workflow.name: c for c in plan_workflows(declared, recorded)}
    assert [c for c in changes] == ["fresh", "nightly", "steady"]
    assert (changes["fresh"].action, changes["fresh"].reason) == ("start", "no run recorded")
    assert changes["nightly"].action == "rerun"
    assert changes["nightly"].reason == (
        "nightly.yaml changed since run 3 (sha256 aaaaaaaaaaaa -> bbbbbbbbbbbb)")
    assert changes["steady"].action == "none"
    assert changes["steady"].reason == "run 1 (failed) used this content"
    assert changes["fresh"].to_json()["action"] == "start"
