"""``fuzz workflow upgrade``: the v4 text of a v1 Fuzzfile, everything else as written.

What changes (the reference's v1 → v4 mapping, §4.3):

- ``version: v1`` becomes ``version: v4``;
- every mount of a job, a service and ``defaults.job`` is keyed by its path:
  ``work: {location: /work}`` becomes ``/work: {volume: work}`` (a block mapping stays a
  block mapping, a flow mapping a flow mapping);
- a volume's ``name`` that only repeats its key is dropped (in v4 ``name`` names a
  persistent volume); ``reference`` is kept, as CIQ kept it in its own port;
- a service's legacy ``export`` (inert in v1) is dropped: v4 has none (CIQ removed it).

``requires`` is kept too, not rewritten into ``depends-on: FINISHED`` as CIQ's port did:
in fuzz ``requires`` waits for success and ``FINISHED`` for any end, so that rewrite
would run a job after its dependency failed. v4 reads ``requires`` as v1 does.

The upgrade edits the text at the spans PyYAML's nodes give (start and end marks), so
comments, key order, quoting, indentation, anchors and blank lines stay byte for byte.
Written by hand rather than with a round-trip library (ruamel.yaml) because such a
library re-emits the whole document in one indentation style of its own, reflowing
every line of a file that uses another. Then the upgraded text is parsed as v4, and
its plan (:func:`fuzz.spec.fuzzfile_plan.workflow_plan`) must equal the original's:
an upgrade that would change what runs is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from fuzz.errors import ConfigError
from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.spec.fuzzfile_plan import workflow_plan
from fuzz.spec.problems import Problem, SpecError


class AlreadyV4(ConfigError):
    """The file is written in v4 already: there is nothing to upgrade."""


@dataclass(frozen=True)
class _Edit:
    """Replace ``text[start:end]`` with ``new``."""

    start: int
    end: int
    new: str


def _entry(node: Node | None, key: str) -> tuple[ScalarNode, Node] | None:
    """The (key, value) nodes of ``key`` in a mapping node, or None."""
    if not isinstance(node, MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


def _value(node: Node | None, key: str) -> Node | None:
    found = _entry(node, key)
    return None if found is None else found[1]


def _span(text: str, node: Node) -> str:
    return text[node.start_mark.index:node.end_mark.index]


def _refuse(file: str, node: Node, message: str) -> SpecError:
    mark = node.start_mark
    return SpecError([Problem(file, mark.line + 1, mark.column + 1, "", message)])


def _mount_maps(root: Node) -> Iterator[Node]:
    """The ``mounts`` maps of every job, every service and ``defaults.job``."""
    yield from _maybe(_value(_value(_value(root, "defaults"), "job"), "mounts"))
    for section in ("jobs", "services"):
        items = _value(root, section)
        if isinstance(items, MappingNode):
            for _, item in items.value:
                yield from _maybe(_value(item, "mounts"))


def _maybe(node: Node | None) -> Iterator[Node]:
    if node is not None:
        yield node


def _within(inner: Node, outer: Node) -> bool:
    """Whether ``inner`` is written inside ``outer`` (not an alias of a node elsewhere)."""
    return (outer.start_mark.index <= inner.start_mark.index
            and inner.end_mark.index <= outer.end_mark.index)


def _mount_edits(text: str, file: str, mounts: Node) -> Iterator[_Edit]:
    """``VOLUME: {location: PATH}`` → ``PATH: {volume: VOLUME}``, by swapping the two
    scalars and renaming ``location``: the layout around them is untouched."""
    if not isinstance(mounts, MappingNode):
        return
    for key_node, target in mounts.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise _refuse(file, key_node, "a YAML merge key ('<<') in mounts: upgrade these"
                          " mounts by hand")
        found = _entry(target, "location")
        if found is None:
            continue  # a valid v1 file has none such
        location_key, location = found
        if not all(_within(node, mounts) for node in (key_node, target, location)):
            raise _refuse(file, key_node, "a YAML alias inside a mount: upgrade this mount"
                          " by hand")
        for scalar in (key_node, location):
            if scalar.start_mark.line != scalar.end_mark.line:
                raise _refuse(file, scalar, "a mount written over several lines: upgrade it"
                              " by hand")
        yield _Edit(key_node.start_mark.index, key_node.end_mark.index, _span(text, location))
        yield _Edit(location_key.start_mark.index, location_key.end_mark.index, "volume")
        yield _Edit(location.start_mark.index, location.end_mark.index, _span(text, key_node))


def _line_bounds(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The whole lines from ``start`` to ``end`` (with the line break) if nothing else
    but blanks and a comment shares them, else None."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end + 1
    before, after = text[line_start:start], text[end:line_end].strip()
    if before.strip() or (after and not after.startswith("#")):
        return None
    return line_start, line_end


def _drop_entry(text: str, file: str, mapping: MappingNode, index: int) -> _Edit:
    """Remove entry ``index`` of ``mapping`` (not its only one) from the text."""
    key_node, value_node = mapping.value[index]
    if not mapping.flow_style:
        lines = _line_bounds(text, key_node.start_mark.index, value_node.end_mark.index)
        if lines is None:
            raise _refuse(file, key_node, f"cannot drop this {key_node.value}: upgrade it"
                          " by hand")
        return _Edit(*lines, "")
    if index + 1 < len(mapping.value):  # "name: x, " up to the next key
        return _Edit(key_node.start_mark.index, mapping.value[index + 1][0].start_mark.index, "")
    previous = mapping.value[index - 1][1]  # ", name: x" after the previous value
    return _Edit(previous.end_mark.index, value_node.end_mark.index, "")


def _key_drops(text: str, file: str, root: Node, section: str, key: str) -> Iterator[_Edit]:
    """Drop ``key`` from each entry of the top-level ``section`` (a volume's ``name``,
    which in a valid v1 file repeats the map key; a service's legacy ``export``)."""
    items = _value(root, section)
    if not isinstance(items, MappingNode):
        return
    for _, item in items.value:
        if not isinstance(item, MappingNode):
            continue
        for index, (key_node, _) in enumerate(item.value):
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                yield _drop_entry(text, file, item, index)


def _edits(text: str, file: str, root: Node) -> list[_Edit]:
    """Every edit of the upgrade, each node edited once (a node YAML aliases is one node)."""
    version = _value(root, "version")
    assert isinstance(version, ScalarNode), "a valid Fuzzfile has a version"
    edits = [_Edit(version.start_mark.index, version.end_mark.index,
                   _span(text, version).replace("v1", "v4"))]
    seen: set[int] = set()
    for mounts in _mount_maps(root):
        if id(mounts) not in seen:
            seen.add(id(mounts))
            edits += _mount_edits(text, file, mounts)
    edits += _key_drops(text, file, root, "volumes", "name")
    edits += _key_drops(text, file, root, "services", "export")
    return sorted(set(edits), key=lambda edit: edit.start)


def _apply(text: str, edits: list[_Edit]) -> str:
    parts: list[str] = []
    position = 0
    for edit in edits:
        parts += [text[position:edit.start], edit.new]
        position = edit.end
    return "".join([*parts, text[position:]])


def upgrade_text(text: str, file: str = "Fuzzfile") -> str:
    """The v4 text of the v1 Fuzzfile ``text``; ``file`` is the name problems show.

    Raises SpecError (the file's problems, one line each) for an invalid file or one
    whose form the upgrade cannot rewrite, and :class:`AlreadyV4` for a v4 file.
    """
    original = parse_fuzzfile(text, file)
    if original.fuzzfile.version == "v4":
        raise AlreadyV4(f"{file} is already v4: nothing to upgrade")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    assert root is not None, "a valid Fuzzfile is a mapping"
    upgraded = _apply(text, _edits(text, file, root))
    try:
        result = parse_fuzzfile(upgraded, file)
    except SpecError as exc:  # a bug of the upgrade's, said rather than written out
        raise SpecError([Problem(file, 1, 1, "", "the upgrade would not be valid v4 (a bug):"
                                 f" {problem}") for problem in exc.problems]) from exc
    if workflow_plan(result.fuzzfile) != workflow_plan(original.fuzzfile):
        raise SpecError([Problem(file, 1, 1, "", "the upgrade would change what the workflow"
                                 " runs (a bug): upgrade this file by hand")])
    return upgraded
