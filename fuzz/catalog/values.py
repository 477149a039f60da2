"""An application's ``values.yaml``: its typed inputs, and the values one render uses.

Fuzzball's format (``../shared/fuzzfile-reference.md`` §5.3): a single ``values:`` list,
each entry a ``name``, a ``display_name``, an optional ``display_category`` and exactly
one default, ``string_value`` / ``uint_value`` / ``bool_value`` / ``secret_value`` /
``volume_value``, with ``options_input`` for a choice among strings. Problems are one
``values.yaml:line:col: field: message`` line each (:mod:`fuzz.spec.problems`).

``required``: the format has no such key; the catalog marks required inputs in their
``display_name`` with ``[required]``, and so does fuzz: such an input may not be left
empty (blank string, empty reference).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from fuzz.errors import ConfigError
from fuzz.spec.problems import Issue, Problem, SpecError, did_you_mean
from fuzz.spec.validation import validate_document
from fuzz.spec.yamlsource import SourceMap, parse_yaml

Kind = Literal["string", "uint", "bool", "secret", "volume"]
Value = str | int | bool
"""A value as the template sees it: secrets and volumes are their reference string."""

KINDS: tuple[Kind, ...] = ("string", "uint", "bool", "secret", "volume")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REQUIRED = re.compile(r"\[required\]", re.IGNORECASE)
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Reference(_Model):
    reference: StrictStr = ""
    type: StrictStr | None = None


class _Options(_Model):
    options: list[StrictStr] = Field(min_length=1)


class _Entry(_Model):
    name: StrictStr
    display_name: StrictStr = ""
    display_category: StrictStr | None = None
    string_value: StrictStr | None = None
    uint_value: StrictInt | None = Field(default=None, ge=0)
    bool_value: StrictBool | None = None
    secret_value: _Reference | None = None
    volume_value: _Reference | None = None
    options_input: _Options | None = None


class _ValuesFile(_Model):
    values: list[_Entry]


@dataclass(frozen=True)
class TemplateValue:
    """One input of an application: its name in the template, how the form shows it, its
    kind, default, choices and whether it may be left empty."""

    name: str
    display_name: str
    category: str | None
    kind: Kind
    default: Value
    options: tuple[str, ...]
    required: bool
    where: str
    """``values.yaml:line:col`` of the entry, for messages about it."""

    def to_json(self) -> dict[str, Any]:
        """The input as ``fuzz app show --json`` prints it."""
        return {"name": self.name, "display_name": self.display_name,
                "category": self.category, "type": self.kind, "default": self.default,
                "options": list(self.options), "required": self.required}


def _entry_issues(data: Mapping[Any, Any]) -> Iterable[Issue]:
    entries = data.get("values")
    if not isinstance(entries, list):
        return
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            continue
        path: tuple[Hashable, ...] = ("values", index)
        name = entry.get("name")
        if isinstance(name, str):
            if not _NAME.match(name):
                yield Issue((*path, "name"), f"{name!r} is not a template name "
                            "(letters, digits and _, not starting with a digit)")
            elif name in seen:
                yield Issue((*path, "name"), f"{name!r} is declared twice")
            seen.add(name)
        kinds = [kind for kind in KINDS if f"{kind}_value" in entry]
        if len(kinds) != 1:
            found = ", ".join(f"{kind}_value" for kind in kinds) or "none"
            yield Issue(path, "needs exactly one of string_value, uint_value, bool_value, "
                        f"secret_value, volume_value (found {found})", shown=path)
        options = entry.get("options_input")
        if options is not None and kinds and kinds != ["string"]:
            yield Issue((*path, "options_input"), "goes with a string_value only")
        elif isinstance(options, Mapping) and kinds == ["string"]:
            choices = options.get("options")
            default = entry.get("string_value")
            if isinstance(choices, list) and isinstance(default, str) \
                    and default not in choices:
                listed = ", ".join(map(str, choices))
                yield Issue((*path, "string_value"),
                            f"{default!r} is not one of the options ({listed})")


def _where(source: SourceMap, path: tuple[Hashable, ...]) -> str:
    position = source.value_position(path)
    return f"{source.file}:{position.line}:{position.col}"


def _template_value(entry: _Entry, where: str) -> TemplateValue:
    default: Value
    if entry.string_value is not None:
        kind: Kind = "string"
        default = entry.string_value
    elif entry.uint_value is not None:
        kind, default = "uint", entry.uint_value
    elif entry.bool_value is not None:
        kind, default = "bool", entry.bool_value
    elif entry.secret_value is not None:
        kind, default = "secret", entry.secret_value.reference
    else:
        assert entry.volume_value is not None  # one *_value is checked before
        kind, default = "volume", entry.volume_value.reference
    options = tuple(entry.options_input.options) if entry.options_input else ()
    return TemplateValue(entry.name, entry.display_name.strip(), entry.display_category,
                         kind, default, options, bool(_REQUIRED.search(entry.display_name)),
                         where)


def parse_values(text: str, file: str) -> list[TemplateValue]:
    """The inputs a ``values.yaml`` text declares; ``file`` is the name problems show.

    Raises SpecError, one ``file:line:col: field: message`` line per problem.
    """
    document = parse_yaml(text, file)
    parsed = validate_document(document, _ValuesFile, _entry_issues)
    return [_template_value(entry, _where(document.source, ("values", index)))
            for index, entry in enumerate(parsed.values)]


def _coerced(value: TemplateValue, text: str) -> Value:
    """``text`` (from ``--set`` or a form) as a value of ``value``'s kind, or ValueError."""
    if value.kind == "uint":
        if not re.fullmatch(r"\s*\d+\s*", text):
            raise ValueError("must be a whole number, 0 or more")
        return int(text)
    if value.kind == "bool":
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("must be true or false")
    return text


def check_value(value: TemplateValue, given: Value) -> str | None:
    """Why ``given`` is not acceptable for ``value`` (its options, required), else None."""
    if value.options and given not in value.options:
        return f"must be one of {', '.join(value.options)}"
    if value.required and isinstance(given, str) and not given.strip():
        return "is required"
    return None


def resolve_values(declared: Sequence[TemplateValue], overrides: Sequence[str],
                   values_file: str) -> dict[str, Value]:
    """The values one render uses: each input's default, with ``overrides``
    (``Name=value`` strings, typed by the declaration) over them.

    Raises ConfigError with one line naming the override (``--set Cores=x: ...``) or,
    for a default that fails a check, the entry (``values.yaml:7:5: values[2]: ...``).
    """
    by_name = {value.name: value for value in declared}
    chosen: dict[str, Value] = {value.name: value.default for value in declared}
    given_by_set: set[str] = set()
    for override in overrides:
        name, sep, text = override.partition("=")
        if not sep:
            raise ConfigError(f"--set {override}: give it as NAME=VALUE")
        value = by_name.get(name)
        if value is None:
            raise ConfigError(f"--set {override}: {values_file} declares no value {name!r}"
                              f"{did_you_mean(name, by_name)}")
        try:
            chosen[name] = _coerced(value, text)
        except ValueError as exc:
            raise ConfigError(f"--set {override}: {name} is a {value.kind} value "
                              f"({value.where}): {exc}") from exc
        given_by_set.add(name)
    problems: list[Problem] = []
    for value in declared:
        reason = check_value(value, chosen[value.name])
        if reason is None:
            continue
        if value.name in given_by_set:
            raise ConfigError(f"--set {value.name}={chosen[value.name]}: {value.name} {reason}")
        file, line, col = value.where.rsplit(":", 2)
        hint = "; give it with --set" if reason == "is required" else ""
        problems.append(Problem(file, int(line), int(col), value.name,
                                f"{reason} (default {value.default!r}){hint}"))
    if problems:
        raise SpecError(problems)
    return chosen
