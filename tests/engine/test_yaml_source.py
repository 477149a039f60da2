"""Where every value of a YAML document sits: the positions and values problems are built on.

These pin down what :func:`fuzz.spec.yamlsource.parse_yaml` gives for each YAML form
a Fuzzfile uses (block and flow collections, quoted and block scalars, empty values,
complex keys, unicode, anchors, aliases and merge keys, duplicate keys), and the words
of its syntax errors, however it parses.
"""

from __future__ import annotations

from fuzz.spec.yamlsource import parse_yaml

PLAIN = """\
# every YAML form a Fuzzfile uses, without anchors
version: v1
"quoted key": 'single'
jobs:
  a:
    name: "é😀 unicode"
    list:
      - plain
      - 'quoted'
      - {flow: [1, 2.5, true, null, ~], "x": -0x1F}
    script: |
      #!/bin/sh
      echo hi
    folded: >-
      one
      two
    empty:
    spaced:    value   # trailing comment
  ? complex
  : value
dup: 1
dup: 2
"""

ALIASES = """\
# a comment
base: &base {cores: 2, "quoted key": 'single'}
jobs:
  a:
    <<: *base
    cores: 4
    name: "é😀 unicode"
    list:
      - plain
      - 'quoted'
      - {flow: [1, 2.5, true, null, ~]}
    script: |
      #!/bin/sh
      echo hi
    folded: >-
      one
      two
    empty:
    ref: *base
  ? complex
  : value
dup: 1
dup: 2
"""


Spot = tuple[int, int]


def _positions(text: str) -> dict[tuple[object, ...], tuple[Spot | None, Spot]]:
    source = parse_yaml(text, "t.yaml").source
    return {path: ((entry.key.line, entry.key.col) if entry.key else None,
                   (entry.value.line, entry.value.col))
            for path, entry in source.entries.items()}


def test_values_and_positions_of_every_form_without_anchors() -> None:
    document = parse_yaml(PLAIN, "t.yaml")
    assert document.data == {
        "version": "v1", "quoted key": "single",
        "jobs": {
            "a": {"name": "é😀 unicode",
                  "list": ["plain", "quoted", {"flow": [1, 2.5, True, None, None], "x": -31}],
                  "script": "#!/bin/sh\necho hi\n", "folded": "one two", "empty": None,
                  "spaced": "value"},
            "complex": "value"},
        "dup": 1}
    assert [str(problem) for problem in document.problems] == [
        "t.yaml:22:1: dup: duplicate key 'dup' (first at line 21)"]
    assert _positions(PLAIN) == {
        (): (None, (2, 1)),
        ('version',): ((2, 1), (2, 10)),
        ('quoted key',): ((3, 1), (3, 15)),
        ('jobs',): ((4, 1), (5, 3)),
        ('jobs', 'a'): ((5, 3), (6, 5)),
        ('jobs', 'a', 'name'): ((6, 5), (6, 11)),
        ('jobs', 'a', 'list'): ((7, 5), (8, 7)),
        ('jobs', 'a', 'list', 0): (None, (8, 9)),
        ('jobs', 'a', 'list', 1): (None, (9, 9)),
        ('jobs', 'a', 'list', 2): (None, (10, 9)),
        ('jobs', 'a', 'list', 2, 'flow'): ((10, 10), (10, 16)),
        ('jobs', 'a', 'list', 2, 'flow', 0): (None, (10, 17)),
        ('jobs', 'a', 'list', 2, 'flow', 1): (None, (10, 20)),
        ('jobs', 'a', 'list', 2, 'flow', 2): (None, (10, 25)),
        ('jobs', 'a', 'list', 2, 'flow', 3): (None, (10, 31)),
        ('jobs', 'a', 'list', 2, 'flow', 4): (None, (10, 37)),
        ('jobs', 'a', 'list', 2, 'x'): ((10, 41), (10, 46)),
        ('jobs', 'a', 'script'): ((11, 5), (11, 13)),
        ('jobs', 'a', 'folded'): ((14, 5), (14, 13)),
        ('jobs', 'a', 'empty'): ((17, 5), (17, 11)),
        ('jobs', 'a', 'spaced'): ((18, 5), (18, 16)),
        ('jobs', 'complex'): ((19, 5), (20, 5)),
        ('dup',): ((21, 1), (21, 6)),
    }


def test_values_and_positions_with_anchors_aliases_and_merge_keys() -> None:
    document = parse_yaml(ALIASES, "t.yaml")
    base = {"cores": 2, "quoted key": "single"}
    assert document.data == {
        "base": base,
        "jobs": {
            "a": {"cores": 4, "name": "é😀 unicode",
                  "list": ["plain", "quoted", {"flow": [1, 2.5, True, None, None]}],
                  "script": "#!/bin/sh\necho hi\n", "folded": "one two", "empty": None,
                  "ref": base, "quoted key": "single"},
            "complex": "value"},
        "dup": 1}
    assert [str(problem) for problem in document.problems] == [
        "t.yaml:23:1: dup: duplicate key 'dup' (first at line 22)"]
    assert _positions(ALIASES) == {
        (): (None, (2, 1)),
        ('base',): ((2, 1), (2, 7)),
        ('base', 'cores'): ((2, 14), (2, 21)),
        ('base', 'quoted key'): ((2, 24), (2, 38)),
        ('jobs',): ((3, 1), (4, 3)),
        ('jobs', 'a'): ((4, 3), (5, 5)),
        ('jobs', 'a', 'cores'): ((6, 5), (6, 12)),
        ('jobs', 'a', 'name'): ((7, 5), (7, 11)),
        ('jobs', 'a', 'list'): ((8, 5), (9, 7)),
        ('jobs', 'a', 'list', 0): (None, (9, 9)),
        ('jobs', 'a', 'list', 1): (None, (10, 9)),
        ('jobs', 'a', 'list', 2): (None, (11, 9)),
        ('jobs', 'a', 'list', 2, 'flow'): ((11, 10), (11, 16)),
        ('jobs', 'a', 'list', 2, 'flow', 0): (None, (11, 17)),
        ('jobs', 'a', 'list', 2, 'flow', 1): (None, (11, 20)),
        ('jobs', 'a', 'list', 2, 'flow', 2): (None, (11, 25)),
        ('jobs', 'a', 'list', 2, 'flow', 3): (None, (11, 31)),
        ('jobs', 'a', 'list', 2, 'flow', 4): (None, (11, 37)),
        ('jobs', 'a', 'script'): ((12, 5), (12, 13)),
        ('jobs', 'a', 'folded'): ((15, 5), (15, 13)),
        ('jobs', 'a', 'empty'): ((18, 5), (18, 11)),
        ('jobs', 'a', 'ref'): ((19, 5), (2, 7)),
        ('jobs', 'a', 'ref', 'cores'): ((2, 14), (2, 21)),
        ('jobs', 'a', 'ref', 'quoted key'): ((2, 24), (2, 38)),
        ('jobs', 'a', 'quoted key'): ((2, 24), (2, 38)),
        ('jobs', 'complex'): ((20, 5), (21, 5)),
        ('dup',): ((22, 1), (22, 6)),
    }


def test_a_star_inside_a_value_is_no_alias() -> None:
    document = parse_yaml("cmd: [rm, -f, '*.tmp', a*b]\nglob: '**/*.csv'\n", "t.yaml")
    assert document.data == {"cmd": ["rm", "-f", "*.tmp", "a*b"], "glob": "**/*.csv"}
    assert document.problems == []


def test_syntax_errors_are_worded_as_before() -> None:
    cases = {
        "a: {b: 1\nc: 2\n": "t.yaml:2:2: expected ',' or '}', but got ':' (while parsing a flow"
                          " mapping started at line 1, column 4)",
        "a: 1\n---\nb: 2\n": "t.yaml:2:1: expected a single document in the stream, but found"
                            " another document",
        "a: *nowhere\n": "t.yaml:1:4: found undefined alias 'nowhere'",
        "a:\tb\n  c: [\n": "t.yaml:1:3: found character '\\t' that cannot start any token"
                          " (while scanning for the next token)",
        "a: \x07\n": "t.yaml:1:4: unacceptable character #x0007: special characters are not"
                     " allowed",
    }
    for text, line in cases.items():
        assert [str(problem) for problem in parse_yaml(text, "t.yaml").problems] == [line], text


def test_columns_count_characters_not_bytes() -> None:
    assert _positions('x: {a: "é😀中", b: 1}\ny: [😀, z]\n') == {
        (): (None, (1, 1)),
        ("x",): ((1, 1), (1, 4)),
        ("x", "a"): ((1, 5), (1, 8)),
        ("x", "b"): ((1, 15), (1, 18)),
        ("y",): ((2, 1), (2, 4)),
        ("y", 0): (None, (2, 5)),
        ("y", 1): (None, (2, 8)),
    }
