"""Problems in a spec file, one line each, and the translation of pydantic errors into them.

A :class:`Problem` reads ``fuzz.yaml:12:5: pools.gpu.max: must be >= min``.
:func:`problems_from_validation_error` turns a pydantic ``ValidationError`` into
such lines with the help of a source map (see :mod:`fuzz.spec.yamlsource`); it knows
nothing about cluster specs, so Fuzzfile models reuse it unchanged.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from fuzz.errors import ConfigError

if TYPE_CHECKING:
    from fuzz.spec.yamlsource import FieldPath, SourceMap


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec file, at a 1-based line and column."""

    file: str
    line: int
    col: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"

    def to_json(self) -> dict[str, str | int]:
        """The problem as a JSON-ready mapping (for ``fuzz validate --json``)."""
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "field": self.field,
            "message": self.message,
        }


@dataclass(frozen=True)
class Issue:
    """A problem found on data before it has a position: a path, a message, key or value."""

    path: tuple[Hashable, ...]
    message: str
    at: Literal["key", "value"] = "value"
    shown: tuple[Hashable, ...] | None = None
    """The field to name when it is not ``path``: an entry of a list reported as the list
    (``jobs.ufs.requires: unknown job 'untarr'``, placed at the entry)."""


class SpecError(ConfigError):
    """A spec file is invalid; ``problems`` lists every problem, ``str()`` one per line."""

    prefix = ""  # each line already starts with file:line:col

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def format_path(path: Sequence[Hashable]) -> str:
    """``("pools", "metal", "nodes", 1, "name")`` → ``pools.metal.nodes[1].name``."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``word``, or ``""``."""
    matches = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems in file order, without exact repeats."""
    unique = dict.fromkeys(problems)
    return sorted(unique, key=lambda p: (p.file, p.line, p.col, p.field, p.message))


def issues_to_problems(issues: Iterable[Issue], source: SourceMap) -> list[Problem]:
    """Place :class:`Issue` values in the file with the source map."""
    problems = []
    for issue in issues:
        problem = source.problem(issue.path, issue.message, at=issue.at)
        if issue.shown is not None:
            problem = replace(problem, field=format_path(issue.shown))
        problems.append(problem)
    return problems


# --- pydantic errors -------------------------------------------------------------------

_SIMPLE_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "decimal_type": "must be a number",
    "decimal_parsing": "must be a number",
    "string_type": "must be a string",
    "string_unicode": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dataclass_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "set_type": "must be a list",
    "frozen_set_type": "must be a list",
    "iterable_type": "must be a list",
    "none_required": "must be empty (null)",
    "missing": "required field missing",
    "date_type": "must be a date",
    "datetime_type": "must be a date and time",
}


def _count(n: object, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def short_message(error: ErrorDetails) -> str:
    """Pydantic's message for one error, made short and human (``must be an integer``)."""
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind in _SIMPLE_MESSAGES:
        return _SIMPLE_MESSAGES[kind]
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"]) or "is invalid"
    comparisons = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if kind in comparisons:
        bound = next(iter(ctx.values()), "?")
        return f"must be {comparisons[kind]} {bound}"
    if kind == "multiple_of":
        return f"must be a multiple of {ctx.get('multiple_of')}"
    if kind in ("literal_error", "enum"):
        return f"must be {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    if kind in ("string_too_short", "too_short"):
        least = ctx.get("min_length")
        if least == 1:
            return "must not be empty"
        noun = "character" if kind == "string_too_short" else "item"
        return f"must have at least {_count(least, noun)}"
    if kind in ("string_too_long", "too_long"):
        noun = "character" if kind == "string_too_long" else "item"
        return f"must have at most {_count(ctx.get('max_length'), noun)}"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if message.startswith("Input should be "):
        message = "must be " + message.removeprefix("Input should be ")
    if message[:2].isupper():  # starts with an acronym ("URL ...")
        return message
    return message[:1].lower() + message[1:]


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated[...]`` down to the annotated type."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _field_names(model: type[BaseModel]) -> list[str]:
    """The keys a user writes for a model: aliases where set, else field names."""
    names = []
    for name, info in model.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
        names.append(alias or name)
    return names


def _field_annotation(model: type[BaseModel], key: object) -> Any:
    for name, info in model.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
        if key in (name, alias):
            return info.annotation
    return None


def _models_at(tp: Any, loc: Sequence[int | str]) -> list[type[BaseModel]]:
    """The models that a pydantic ``loc`` can lead to from type ``tp`` (for did-you-mean)."""
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        found: list[type[BaseModel]] = []
        for member in typing.get_args(tp):
            if member is type(None):
                continue
            found += _models_at(member, loc)
            if loc and isinstance(loc[0], str):  # a union member's tag in the loc
                found += _models_at(member, loc[1:])
        return found
    is_model = isinstance(tp, type) and issubclass(tp, BaseModel)
    if not loc:
        return [tp] if is_model else []
    head, rest = loc[0], loc[1:]
    if is_model:
        annotation = _field_annotation(tp, head)
        return [] if annotation is None else _models_at(annotation, rest)
    args = typing.get_args(tp)
    if origin in (dict, Mapping) and len(args) == 2:
        return _models_at(args[1], rest)
    if origin in (list, tuple, set, frozenset, Sequence) and args:
        return _models_at(args[0], rest)
    return []


@dataclass
class _Located:
    field: str
    line: int
    col: int
    message: str
    union_at: FieldPath | None  # where a union member's tag was met in the loc
    depth: int


def _locate(
    error: ErrorDetails,
    source: SourceMap,
    model: type[BaseModel] | None,
    base: FieldPath,
) -> _Located:
    """Map one pydantic error's ``loc`` onto a data path and a position in the file."""
    loc = error["loc"]
    kind = error["type"]
    path: FieldPath = base
    union_at: FieldPath | None = None
    at_key = False
    missing_name: Hashable | None = None
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if part == "[key]":
            at_key = True
            continue
        if (*path, part) in source:
            path = (*path, part)
        elif last and kind == "missing":
            missing_name = part
        elif last and kind == "extra_forbidden":
            path = (*path, part)  # data given without a source position
        elif union_at is None:
            union_at = path  # a union member's tag, e.g. ('image', 'str')
    if kind == "missing":
        pos = source.key_position(path)
        field_path: FieldPath = path if missing_name is None else (*path, missing_name)
        message = short_message(error)
        return _Located(
            format_path(field_path), pos.line, pos.col, message, union_at, len(field_path)
        )
    if kind == "extra_forbidden":
        key = path[-1] if len(path) > len(base) else loc[-1]
        message = f"unknown key {str(key)!r}"
        if model is not None:
            names = {n for m in _models_at(model, loc[:-1]) for n in _field_names(m)}
            message += did_you_mean(key, sorted(names))
        pos = source.key_position(path)
        return _Located(format_path(path), pos.line, pos.col, message, union_at, len(path))
    message = short_message(error)
    if at_key:
        pos = source.key_position(path)
        if message.startswith("must be "):
            message = "key " + message
    else:
        pos = source.value_position(path)
    return _Located(format_path(path), pos.line, pos.col, message, union_at, len(path))


def problems_from_validation_error(
    error: ValidationError,
    source: SourceMap,
    *,
    model: type[BaseModel] | None = None,
    base: FieldPath = (),
) -> list[Problem]:
    """Turn a pydantic ``ValidationError`` into problem lines placed with ``source``.

    ``model`` is the model that was validated (used to suggest a field name for an
    unknown key); ``base`` is the path in the file of the data that was validated,
    when it is a part of the document (a provider block, say). Errors of several
    members of a union at the same place are merged into one line
    (``must be an integer or a string``).
    """
    located = [_locate(detail, source, model, base) for detail in error.errors()]
    # A union's members each fail in their own way. When the input went into one
    # member's structure (an error deeper than the union), the other members'
    # complaints about the input's type ("must be a string") are noise.
    deepest: dict[FieldPath, int] = {}
    for item in located:
        if item.union_at is not None:
            deepest[item.union_at] = max(deepest.get(item.union_at, 0), item.depth)
    merged: dict[tuple[str, int, int], _Located] = {}
    problems: list[Problem] = []
    for item in located:
        if item.union_at is None:
            problems.append(Problem(source.file, item.line, item.col, item.field, item.message))
            continue
        if item.depth == len(item.union_at) < deepest[item.union_at]:
            continue
        key = (item.field, item.line, item.col)
        if key not in merged:
            merged[key] = item
            continue
        earlier = merged[key]
        if item.message == earlier.message or f" or {item.message}" in earlier.message:
            continue
        addition = item.message.removeprefix("must be ")
        if earlier.message.startswith("must be ") and addition != item.message:
            earlier.message = f"{earlier.message} or {addition}"
        else:
            earlier.message = f"{earlier.message}; {item.message}"
    problems += [
        Problem(source.file, item.line, item.col, item.field, item.message)
        for item in merged.values()
    ]
    return sort_problems(problems)
