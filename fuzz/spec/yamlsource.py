"""Load YAML into plain Python data plus a source map of where every value came from.

The document is composed into PyYAML nodes (safe tags only) and walked by hand, so
that each path in the data (a tuple of mapping keys and list indices) remembers the
line and column of its key and of its value. Problems that YAML itself would hide
are reported: duplicate keys (YAML keeps the last one silently), an empty file, a
top level that is not a mapping. Syntax errors become a :class:`Problem` at the
position PyYAML names, never a traceback.

Aliases are bounded before anything is built: a few hundred bytes of nested
aliases ("billion laughs") would otherwise expand to billions of values. Composing
the document costs time and memory in proportion to its text (aliases share the
node they name); then each alias is charged the number of values it would expand
to, and past :data:`MAX_ALIAS_VALUES` in all the document is refused at the alias
that went over, before one value is built.

Speed: libyaml (PyYAML's C binding) reads the text, some ten times faster than
PyYAML's Python scanner. libyaml first counts the document's events without building
anything; within ``max_values`` (so are its values), a document without ``*`` (so no
alias) is composed in C, one with a ``*`` in Python from libyaml's events, recording
each alias. Any other document (more events than ``max_values``, a character PyYAML's
reader refuses, a syntax error, which libyaml words its own way) is read by PyYAML's
Python loader, as before: what is accepted, what is refused, every position and every
problem's words are PyYAML's either way.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from yaml._yaml import CParser
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import Reader
from yaml.resolver import Resolver

from fuzz.errors import ConfigError
from fuzz.spec.problems import Problem, SpecError, format_path

FieldPath = tuple[Hashable, ...]
"""A path into loaded data: mapping keys and list indices, outermost first."""

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_MAX_NODES = 1_000_000  # the most values one document may build, aliases or not

MAX_ALIAS_VALUES = 10_000
"""The most values all the aliases of one document may add when expanded: plenty for
shared defaults (``<<: *defaults``), far below what hurts a server."""


class Position(NamedTuple):
    """A 1-based line and column in a source file (a named tuple: one is made per value,
    and a tuple is made in a third of a frozen dataclass's time)."""

    line: int
    col: int


class SourceEntry(NamedTuple):
    """Where one value sits: its key (None for list items and the root) and the value itself."""

    key: Position | None
    value: Position


@dataclass
class SourceMap:
    """Positions of every path of a loaded YAML document, and the file name to show."""

    file: str
    entries: dict[FieldPath, SourceEntry] = field(default_factory=dict)

    def __contains__(self, path: object) -> bool:
        return path in self.entries

    def _nearest(self, path: FieldPath) -> SourceEntry | None:
        """The entry of ``path`` or, if it has none, of its closest ancestor that has one."""
        for end in range(len(path), -1, -1):
            entry = self.entries.get(path[:end])
            if entry is not None:
                return entry
        return None

    def value_position(self, path: FieldPath) -> Position:
        """Where the value at ``path`` starts (nearest known ancestor, else 1:1)."""
        entry = self._nearest(path)
        return entry.value if entry else Position(1, 1)

    def key_position(self, path: FieldPath) -> Position:
        """Where the key of ``path`` is; the value's position for list items and the root."""
        entry = self._nearest(path)
        if entry is None:
            return Position(1, 1)
        return entry.key or entry.value

    def problem(
        self, path: FieldPath, message: str, *, at: Literal["key", "value"] = "value"
    ) -> Problem:
        """A :class:`Problem` for ``path``, placed at its key or at its value."""
        pos = self.key_position(path) if at == "key" else self.value_position(path)
        return Problem(self.file, pos.line, pos.col, format_path(path), message)


@dataclass
class YamlDocument:
    """The outcome of loading: ``data`` (None when unusable), its source map and problems."""

    data: Any
    source: SourceMap
    problems: list[Problem]


def _position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a scalar"


class _Builder:
    """Walks composed nodes into Python data, filling a source map and a problem list."""

    def __init__(self, loader: SafeConstructor, source: SourceMap) -> None:
        self.loader = loader
        self.source = source
        self.problems: list[Problem] = []
        self.count = 0
        self.active: set[int] = set()

    def report(self, node: Node, path: FieldPath, message: str) -> None:
        pos = _position(node)
        problem = Problem(self.source.file, pos.line, pos.col, format_path(path), message)
        self.problems.append(problem)

    def build(self, node: Node, path: FieldPath, key: Position | None) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise _TooLarge(node)
        self.source.entries[path] = SourceEntry(key, _position(node))
        if isinstance(node, ScalarNode):
            value = self.scalar(node, path)
            return None if value is _INVALID else value
        if id(node) in self.active:
            self.report(node, path, "recursive alias: a value must not contain itself")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                if node.tag != _MAP_TAG:
                    self.report(node, path, f"unsupported YAML tag {node.tag!r}")
                return self.mapping(node, path)
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ_TAG:
                    self.report(node, path, f"unsupported YAML tag {node.tag!r}")
                return [
                    self.build(item, (*path, index), None) for index, item in enumerate(node.value)
                ]
            self.report(node, path, "unsupported YAML node")  # pragma: no cover
            return None
        finally:
            self.active.discard(id(node))

    def scalar(self, node: ScalarNode, path: FieldPath, *, report: bool = True) -> Any:
        """The Python value of a scalar; None (and a problem, if ``report``) when invalid."""
        if node.tag == _STR_TAG:  # most values: what the safe constructor makes of them
            return node.value
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            if report:
                self.report(node, path, exc.problem or "cannot read this value")
        except (ValueError, TypeError, OverflowError) as exc:
            if report:
                self.report(node, path, f"invalid value {node.value!r}: {exc}")
        return _INVALID

    def merge_sources(self, node: Node, path: FieldPath, report: bool) -> list[MappingNode]:
        """The mappings named by a ``<<`` merge key, earliest (strongest) first."""
        if isinstance(node, MappingNode):
            return [node]
        if isinstance(node, SequenceNode) and all(
            isinstance(item, MappingNode) for item in node.value
        ):
            return [item for item in node.value if isinstance(item, MappingNode)]
        if report:
            self.report(node, path, "a merge key '<<' needs a mapping or a list of mappings")
        return []

    def pairs(self, node: MappingNode, path: FieldPath, report: bool) -> list[_Pair]:
        """The effective entries of a mapping: its own keys, then keys merged in by ``<<``.

        Own keys win over merged ones and earlier merge sources over later ones, as
        YAML's merge key specifies. Duplicate own keys are reported (if ``report``).
        """
        own: dict[Hashable, _Pair] = {}
        merged: list[_Pair] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE_TAG:
                for source in self.merge_sources(value_node, path, report):
                    if id(source) in self.active:
                        if report:
                            self.report(source, path, "recursive alias in a merge key '<<'")
                        continue
                    self.active.add(id(source))
                    try:
                        merged.extend(self.pairs(source, path, report=False))
                    finally:
                        self.active.discard(id(source))
                continue
            if not isinstance(key_node, ScalarNode):
                if report:
                    self.report(
                        key_node,
                        path,
                        f"a mapping key must be a plain value, not {_describe(key_node)}",
                    )
                continue
            key = self.scalar(key_node, path, report=report)
            if key is _INVALID or not isinstance(key, Hashable):
                continue
            if key in own:
                if report:
                    first = own[key].key_node.start_mark.line + 1
                    self.report(
                        key_node, (*path, key), f"duplicate key {key!r} (first at line {first})"
                    )
                continue
            own[key] = _Pair(key, key_node, value_node)
        if not merged:
            return list(own.values())
        result = dict(own)
        for pair in merged:
            result.setdefault(pair.key, pair)
        return list(result.values())

    def mapping(self, node: MappingNode, path: FieldPath) -> dict[Hashable, Any]:
        """Build a mapping's entries, recording each key's and value's position."""
        return {
            pair.key: self.build(pair.value_node, (*path, pair.key), _position(pair.key_node))
            for pair in self.pairs(node, path, report=True)
        }


class _Pair(NamedTuple):
    """One effective mapping entry: the Python key and the nodes of key and value."""

    key: Hashable
    key_node: Node
    value_node: Node


_INVALID: Any = object()
"""Marks a scalar that could not be constructed (already reported)."""


class _ValueCounter:
    """Composes nodes as PyYAML does, also recording where each alias is, with the node
    it names, and stopping at the value past ``max_values`` (a YAML error there)."""

    alias_uses: list[tuple[yaml.Mark, Node]]
    max_values: int
    values: int

    def _start_counting(self, max_values: int) -> None:
        self.alias_uses = []
        self.max_values = max_values
        self.values = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        """Compose as PyYAML does, noting each alias (its own position, not its anchor's)."""
        mark: yaml.Mark = self.peek_event().start_mark  # type: ignore[attr-defined]
        alias = self.check_event(yaml.AliasEvent)  # type: ignore[attr-defined]
        if not alias:
            self.values += 1
            if self.values > self.max_values:
                raise yaml.MarkedYAMLError(
                    problem=f"the document has more than {self.max_values} values",
                    problem_mark=mark)
        node: Node | None = super().compose_node(parent, index)  # type: ignore[misc]
        if alias and node is not None:
            self.alias_uses.append((mark, node))
        return node


class _AliasCountingLoader(_ValueCounter, yaml.SafeLoader):
    """PyYAML's safe loader, all in Python, counting values (see :class:`_ValueCounter`):
    the one whose words a syntax error is reported in."""

    def __init__(self, stream: str, max_values: int) -> None:
        super().__init__(stream)
        self._start_counting(max_values)


class _EventCountingLoader(_ValueCounter, Composer, CParser, SafeConstructor, Resolver):
    """libyaml's events composed in Python, counting values (see :class:`_ValueCounter`)."""

    def __init__(self, stream: str, max_values: int) -> None:
        CParser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._start_counting(max_values)

    def get_single_node(self) -> Node | None:
        """Composed by :class:`~yaml.composer.Composer`, not in C: see compose_node."""
        return Composer.get_single_node(self)


class _CLoader(CParser, SafeConstructor, Resolver):
    """libyaml composing in C: for a document without aliases whose size is known."""

    def __init__(self, stream: str) -> None:
        CParser.__init__(self, stream)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.alias_uses: list[tuple[yaml.Mark, Node]] = []


_Loader = _AliasCountingLoader | _EventCountingLoader | _CLoader


def _libyaml_loader(text: str, max_values: int) -> _Loader | None:
    """A libyaml loader for ``text``, or None where PyYAML's Python loader must read it:
    a character its reader refuses, or more events than ``max_values`` (the Python loader
    stops at the value past the limit, where the problem is shown). Raises
    yaml.YAMLError where libyaml refuses the text."""
    if Reader.NON_PRINTABLE.search(text):
        return None
    probe = _CLoader(text)
    try:
        events = probe.raw_parse()  # no Python object made: cheap even for a dense file
    finally:
        probe.dispose()
    if events > max_values:  # within it, so are the values: each starts an event
        return None
    if "*" in text:  # maybe an alias: compose in Python, to record where each one is
        return _EventCountingLoader(text, max_values)
    return _CLoader(text)


def _expanded_size(node: Node, sizes: dict[int, int], active: set[int]) -> int:
    """How many values ``node`` builds into, aliases expanded (memoized in ``sizes``;
    a node that contains itself counts once there: the builder reports it)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    if id(node) in active or isinstance(node, ScalarNode):
        return 1
    active.add(id(node))
    children: list[Node] = []
    for item in node.value:
        children.extend(item if isinstance(item, tuple) else (item,))
    size = 1 + sum(_expanded_size(child, sizes, active) for child in children)
    active.discard(id(node))
    sizes[id(node)] = size
    return size


def _alias_bomb(loader: _Loader) -> yaml.Mark | None:
    """The alias at which the document's aliases add more than MAX_ALIAS_VALUES values."""
    sizes: dict[int, int] = {}
    added = 0
    for mark, node in loader.alias_uses:
        added += _expanded_size(node, sizes, set())
        if added > MAX_ALIAS_VALUES:
            return mark
    return None


class _TooLarge(Exception):
    """Raised when a document expands to more nodes than we are willing to build."""

    def __init__(self, node: Node) -> None:
        super().__init__("document too large")
        self.node = node


def _offset_position(text: str, offset: int) -> Position:
    """The line and column of a character offset into ``text``."""
    before = text[:offset]
    line = before.count("\n") + 1
    return Position(line, offset - (before.rfind("\n") + 1) + 1)


def _syntax_problem(file: str, text: str, exc: yaml.YAMLError) -> Problem:
    """One problem line for a YAML syntax (or reader) error."""
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        code = f"#x{ord(char) if isinstance(char, str) else char:04x}"
        pos = _offset_position(text, exc.position)
        return Problem(file, pos.line, pos.col, "", f"unacceptable character {code}: {exc.reason}")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        message = problem
        if exc.context and exc.problem:
            ctx_mark = exc.context_mark
            if problem.startswith("but "):
                message = f"{exc.context}, {problem}"
            elif ctx_mark is not None:
                message = (
                    f"{problem} ({exc.context} started at line {ctx_mark.line + 1},"
                    f" column {ctx_mark.column + 1})"
                )
            else:
                message = f"{problem} ({exc.context})"
        if mark is not None:
            return Problem(file, mark.line + 1, mark.column + 1, "", message)
        return Problem(file, 1, 1, "", message)
    return Problem(file, 1, 1, "", str(exc) or "invalid YAML")  # pragma: no cover


def parse_yaml(text: str, file: str, max_values: int = _MAX_NODES) -> YamlDocument:
    """Parse one YAML document whose top level must be a mapping.

    ``file`` is the name shown in problems; a document of more than ``max_values``
    values (aliases not expanded) is refused where it passes that count. The
    result's ``data`` is None when the document cannot be used at all (syntax
    error, empty file, top level not a mapping, too many values); otherwise it
    holds the data even if ``problems`` lists duplicate keys, so that validation
    can go on and report everything in one run.
    """
    try:
        fast = _libyaml_loader(text, max_values)
        if fast is not None:
            return _compose_and_build(text, file, fast)
    except yaml.YAMLError:
        pass  # PyYAML's Python parser reads it again, to word the problem as always
    try:
        loader = _AliasCountingLoader(text, max_values)
    except yaml.YAMLError as exc:  # the reader checks for unprintable characters up front
        return YamlDocument(None, SourceMap(file), [_syntax_problem(file, text, exc)])
    try:
        return _compose_and_build(text, file, loader)
    except yaml.YAMLError as exc:
        return YamlDocument(None, SourceMap(file), [_syntax_problem(file, text, exc)])


def _compose_and_build(text: str, file: str, loader: _Loader) -> YamlDocument:
    """:func:`parse_yaml` with ``loader`` (disposed of here); raises yaml.YAMLError for a
    document YAML cannot read."""
    source = SourceMap(file)
    try:
        root = loader.get_single_node()
        if root is None:
            return YamlDocument(None, source, [Problem(file, 1, 1, "", "file is empty")])
        if not isinstance(root, MappingNode):
            pos = _position(root)
            message = f"the top level must be a mapping, not {_describe(root)}"
            return YamlDocument(None, source, [Problem(file, pos.line, pos.col, "", message)])
        bomb = _alias_bomb(loader)
        if bomb is not None:
            message = (f"aliases expand the document by more than {MAX_ALIAS_VALUES} values "
                       "(an alias bomb?)")
            return YamlDocument(None, source,
                                [Problem(file, bomb.line + 1, bomb.column + 1, "", message)])
        builder = _Builder(loader, source)
        try:
            data = builder.build(root, (), None)
        except _TooLarge as exc:
            pos = _position(exc.node)
            message = f"document expands to more than {_MAX_NODES} values (alias bomb?)"
            return YamlDocument(None, source, [Problem(file, pos.line, pos.col, "", message)])
        return YamlDocument(data, source, builder.problems)
    finally:
        loader.dispose()


def read_source(path: Path, file: str) -> bytes:
    """The bytes of a spec file; ``file`` is the name errors show.

    Raises ConfigError (``fuzz.yaml: no such file``) when the file cannot be read.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: no such file") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{file}: is a directory, not a file") from exc
    except PermissionError as exc:
        raise ConfigError(f"{file}: permission denied") from exc
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from exc


def decode_source(raw: bytes, file: str) -> str:
    """A spec file's bytes as text (UTF-8, a leading BOM dropped).

    Raises SpecError with one problem at the first byte that is not UTF-8.
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        good = raw[: exc.start].decode("utf-8-sig")
        pos = _offset_position(good, len(good))
        raise SpecError([Problem(file, pos.line, pos.col, "", "not valid UTF-8 text")]) from exc


def read_yaml(path: Path, file: str | None = None) -> YamlDocument:
    """Read and parse a YAML file (see :func:`parse_yaml`); ``file`` is the name to show.

    Raises ConfigError (``fuzz.yaml: no such file``) when the file cannot be read.
    Text that is not UTF-8 is reported as a problem at the first bad byte.
    """
    name = file if file is not None else str(path)
    raw = read_source(path, name)
    try:
        text = decode_source(raw, name)
    except SpecError as exc:
        return YamlDocument(None, SourceMap(name), exc.problems)
    return parse_yaml(text, name)
