"""The Fuzzfile corpus: every file of ``tests/fuzzfiles/v1`` and ``v4`` and what it must give.

Each ``NAME.yaml`` opens with a header written by hand from the reference
(``shared/fuzzfile-reference.md``)::

    # expect: valid            (or: invalid)
    # ref: §2.5.1 volumes.<name>.name: published Fuzzfiles repeat the key

and keeps its expected result beside it: ``NAME.plan.json`` (a valid file: the plan
of jobs and volumes, :func:`fuzz.spec.fuzzfile_plan.workflow_plan`) or ``NAME.errors``
(an invalid file: the exact ``file:line:col: field: message`` lines, one a line, the
file named by its base name). What ``fuzz workflow start`` refuses in a valid file
(``parse_fuzzfile(..., for_start=True)``) is in one small table,
``start_refusals.json`` (corpus name → lines); every other valid file must start.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.spec.fuzzfile_plan import workflow_plan
from fuzz.spec.problems import SpecError

ROOT = Path(__file__).parent
DIALECTS = ("v1", "v4")
START_REFUSALS = ROOT / "start_refusals.json"
PLAN_SUFFIX = ".plan.json"
ERRORS_SUFFIX = ".errors"
_EXPECT = re.compile(r"^# expect: (valid|invalid)\b", re.MULTILINE)

Kind = Literal["valid", "invalid"]


@dataclass(frozen=True)
class CorpusFile:
    """One Fuzzfile of the corpus and where its expectation lives."""

    path: Path

    @property
    def name(self) -> str:
        """``v1/volume-name.yaml``: the test id and the key in the tables."""
        return self.path.relative_to(ROOT).as_posix()

    @property
    def dialect(self) -> str:
        """``v1`` or ``v4`` (the folder it sits in)."""
        return self.path.parent.name

    @property
    def text(self) -> str:
        """The file's text."""
        return self.path.read_text(encoding="utf-8")

    @property
    def kind(self) -> Kind:
        """What its header says it is (``# expect: valid`` or ``invalid``)."""
        match = _EXPECT.search(self.text)
        if match is None:
            raise ValueError(f"{self.name}: no '# expect: valid|invalid' header")
        return "valid" if match.group(1) == "valid" else "invalid"

    @property
    def expectation(self) -> Path:
        """``NAME.plan.json`` for a valid file, ``NAME.errors`` for an invalid one."""
        suffix = PLAN_SUFFIX if self.kind == "valid" else ERRORS_SUFFIX
        return self.path.with_name(self.path.stem + suffix)


def corpus_files() -> list[CorpusFile]:
    """Every ``*.yaml`` of the corpus, v1 then v4, by name."""
    return [CorpusFile(path) for dialect in DIALECTS
            for path in sorted((ROOT / dialect).glob("*.yaml"))]


def expectation_files() -> list[Path]:
    """Every expectation file of the corpus (``*.plan.json``, ``*.errors``)."""
    return sorted(path for dialect in DIALECTS for path in (ROOT / dialect).iterdir()
                  if path.name.endswith((PLAN_SUFFIX, ERRORS_SUFFIX)))


def problems(text: str, file: str, *, for_start: bool = False) -> list[str]:
    """The problem lines parsing ``text`` (shown as ``file``) gives; [] when it is valid."""
    try:
        parse_fuzzfile(text, file, for_start=for_start)
    except SpecError as exc:
        return [str(problem) for problem in exc.problems]
    return []


def plan_of(text: str, file: str) -> Any:
    """The plan of jobs and volumes of a valid Fuzzfile, as JSON-ready data."""
    plan = workflow_plan(parse_fuzzfile(text, file).fuzzfile)
    return json.loads(json.dumps(plan))


def plan_json(plan: Any) -> str:
    """How a plan is written to ``NAME.plan.json``."""
    return json.dumps(plan, indent=2) + "\n"


def read_errors(path: Path) -> list[str]:
    """The expected lines of ``NAME.errors``."""
    return path.read_text(encoding="utf-8").splitlines()


def start_refusals() -> dict[str, list[str]]:
    """Corpus name → the lines a start refuses it with (files not named must start)."""
    table: dict[str, list[str]] = json.loads(START_REFUSALS.read_text(encoding="utf-8"))
    return table
