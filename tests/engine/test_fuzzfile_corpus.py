"""The Fuzzfile corpus (``tests/fuzzfiles``): every file gives what the reference says.

One test per corpus file (its id is the file's name, ``v1/volume-name.yaml``): a
valid file parses and gives the plan of jobs and volumes in ``NAME.plan.json``, an
invalid one fails with exactly the lines of ``NAME.errors``. Every valid v1 file,
upgraded to v4 and parsed again, gives the same plan, and so does a workflow written
by hand in both dialects (``v1/NAME.yaml`` beside ``v4/NAME.yaml``). A start refuses exactly what
``start_refusals.json`` lists and starts every other valid file. Every file has its
expectation and every expectation its file. See docs/fuzzfile.md, "The test corpus".
"""

from __future__ import annotations

import json

import pytest

from fuzz.spec.fuzzfile_upgrade import upgrade_text
from tests.fuzzfiles.corpus import (
    ERRORS_SUFFIX,
    PLAN_SUFFIX,
    ROOT,
    CorpusFile,
    corpus_files,
    expectation_files,
    plan_of,
    problems,
    read_errors,
    start_refusals,
)

FILES = corpus_files()
VALID = [file for file in FILES if file.kind == "valid"]

KNOWN_GAPS: dict[str, str] = {}
"""Files the reference says are valid that the code refuses today, and who fixes them.
Strict: when one starts passing, the test fails until it leaves this table (then run
``python -m tests.fuzzfiles.regen NAME`` for its expectation)."""


def _marks(file: CorpusFile) -> list[pytest.MarkDecorator]:
    reason = KNOWN_GAPS.get(file.name)
    return [pytest.mark.xfail(reason=reason, strict=True)] if reason else []


def _params(files: list[CorpusFile]) -> list[object]:
    return [pytest.param(file, id=file.name, marks=_marks(file)) for file in files]


@pytest.mark.parametrize("file", _params(FILES))
def test_corpus_file_gives_its_expectation(file: CorpusFile) -> None:
    found = problems(file.text, file.path.name)
    if file.kind == "invalid":
        assert found == read_errors(file.expectation)
        return
    assert found == []
    assert plan_of(file.text, file.path.name) == _expected_plan(file)


def _expected_plan(file: CorpusFile) -> object:
    return json.loads(file.expectation.read_text(encoding="utf-8"))


@pytest.mark.parametrize("file", _params([file for file in VALID if file.dialect == "v1"]))
def test_v1_file_upgraded_to_v4_gives_the_same_plan(file: CorpusFile) -> None:
    upgraded = upgrade_text(file.text)
    assert "version: v4" in upgraded
    assert problems(upgraded, file.path.name) == []
    assert plan_of(upgraded, file.path.name) == _expected_plan(file)


TWINS = sorted({file.path.name for file in VALID if file.dialect == "v1"}
               & {file.path.name for file in VALID if file.dialect == "v4"})
"""Workflows written by hand in both dialects (``v1/NAME.yaml`` and ``v4/NAME.yaml``)."""


@pytest.mark.parametrize("name", TWINS)
def test_a_workflow_written_in_both_dialects_has_one_plan(name: str) -> None:
    v1, v4 = (CorpusFile(ROOT / dialect / name) for dialect in ("v1", "v4"))
    assert plan_of(v4.text, name) == plan_of(v1.text, name) == _expected_plan(v1)


@pytest.mark.parametrize("file", _params(VALID))
def test_a_start_refuses_exactly_what_the_table_lists(file: CorpusFile) -> None:
    expected = start_refusals().get(file.name, [])
    assert problems(file.text, file.path.name, for_start=True) == expected


def test_every_file_has_its_expectation_and_no_expectation_is_orphaned() -> None:
    files = {file.path: file for file in FILES}
    expected = {file.expectation for file in FILES}
    missing = sorted(file.name for file in FILES
                     if not file.expectation.exists() and file.name not in KNOWN_GAPS)
    assert missing == [], "run `python -m tests.fuzzfiles.regen NAME` and review the result"
    orphans = sorted(path.relative_to(ROOT).as_posix() for path in expectation_files()
                     if path not in expected)
    assert orphans == [], "expectation files without their Fuzzfile (or of the other kind)"
    strays = sorted(path.relative_to(ROOT).as_posix() for dialect in ("v1", "v4")
                    for path in (ROOT / dialect).iterdir()
                    if path not in files and not path.name.endswith((PLAN_SUFFIX, ERRORS_SUFFIX)))
    assert strays == [], "only NAME.yaml, NAME.plan.json and NAME.errors belong in the corpus"
    assert set(start_refusals()) <= {file.name for file in VALID}
    assert set(KNOWN_GAPS) <= {file.name for file in FILES}


def test_the_corpus_covers_both_dialects() -> None:
    dialects = {file.dialect for file in FILES}
    assert dialects == {"v1", "v4"}
    assert len(TWINS) >= 4
