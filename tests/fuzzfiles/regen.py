"""Write the expectation files of the Fuzzfile corpus from what the code gives today.

    .venv/bin/python -m tests.fuzzfiles.regen            # every file
    .venv/bin/python -m tests.fuzzfiles.regen v1/x.yaml  # some files

For each ``NAME.yaml`` it writes ``NAME.plan.json`` (a valid file) or ``NAME.errors``
(an invalid one), and it rewrites ``start_refusals.json`` with what a start refuses in
each valid file. It never writes an expectation that contradicts a file's
``# expect:`` header: a file meant valid that the code refuses (or the other way
round) is printed as a DEFECT and left alone, for a person to fix the code or the
file. Every expectation it writes must then be read against the reference
(``git diff tests/fuzzfiles``): an expectation is what the reference says, not what
the code happens to do.
"""

from __future__ import annotations

import json
import sys

from tests.fuzzfiles.corpus import (
    START_REFUSALS,
    CorpusFile,
    corpus_files,
    plan_json,
    plan_of,
    problems,
    start_refusals,
)


def regenerate(file: CorpusFile) -> str | None:
    """Write ``file``'s expectation; return a DEFECT line when the code contradicts its header."""
    found = problems(file.text, file.path.name)
    if file.kind == "invalid":
        if not found:
            return f"DEFECT {file.name}: meant invalid, but the code accepts it"
        file.expectation.write_text("\n".join(found) + "\n", encoding="utf-8")
        return None
    if found:
        return f"DEFECT {file.name}: meant valid, but the code refuses it:\n  " + \
            "\n  ".join(found)
    file.expectation.write_text(plan_json(plan_of(file.text, file.path.name)), encoding="utf-8")
    return None


def regenerate_start_refusals(files: list[CorpusFile]) -> None:
    """Update ``start_refusals.json`` for ``files``: what a start refuses in each valid one."""
    table = start_refusals() if START_REFUSALS.exists() else {}
    for file in files:
        table.pop(file.name, None)
        if file.kind == "valid" and not problems(file.text, file.path.name):
            refused = problems(file.text, file.path.name, for_start=True)
            if refused:
                table[file.name] = refused
    START_REFUSALS.write_text(json.dumps(dict(sorted(table.items())), indent=2) + "\n",
                              encoding="utf-8")


def main(names: list[str]) -> int:
    """Regenerate the named corpus files (all without names); 1 if any is a DEFECT."""
    files = [file for file in corpus_files() if not names or file.name in names]
    unknown = set(names) - {file.name for file in files}
    if unknown:
        print(f"not in the corpus: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    defects = [line for line in map(regenerate, files) if line is not None]
    regenerate_start_refusals(files)
    for line in defects:
        print(line)
    print(f"{len(files) - len(defects)} of {len(files)} expectations written; review them with"
          " `git diff tests/fuzzfiles` against the reference")
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
