"""An application's form: fields from its ``values.yaml``, checked with the CLI's messages.

Nothing is checked twice in two languages: as the user types, the page asks the
server (htmx) for the field's message, made by :func:`fuzz.catalog.values.resolve_values`
exactly as ``fuzz app start --set NAME=VALUE`` makes it; the launch checks the whole
form the same way, then renders and checks the Fuzzfile (:func:`render_application`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fuzz.catalog.application import VALUES_FILE, Application
from fuzz.catalog.values import TemplateValue, resolve_values
from fuzz.errors import FuzzError

REQUIRED_MARK = "[required]"


@dataclass(frozen=True)
class Field:
    """One input of the form as the page shows it."""

    name: str
    label: str
    kind: str
    value: str
    options: tuple[str, ...]
    required: bool
    problem: str | None

    @property
    def element_id(self) -> str:
        """The input's id (its label's ``for``)."""
        return f"value-{self.name}"


@dataclass(frozen=True)
class Section:
    """The fields of one ``display_category``."""

    title: str
    fields: tuple[Field, ...]


def shown(value: TemplateValue | str | int | bool) -> str:
    """A default or a value as a form shows it (bools as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _label(value: TemplateValue) -> str:
    label = value.display_name.replace(REQUIRED_MARK, "").replace("[Required]", "").strip()
    return label or value.name


def field_problem(app: Application, value: TemplateValue, text: str) -> str | None:
    """The CLI's message for ``--set NAME=TEXT`` of ``value`` (None: acceptable)."""
    try:
        resolve_values([value], [f"{value.name}={text}"], app.bundle.file(VALUES_FILE))
    except FuzzError as exc:
        return str(exc)
    return None


def sections(app: Application, given: Mapping[str, str] | None = None) -> list[Section]:
    """The form's fields by category (in ``values.yaml``'s order), with ``given`` texts
    (a submitted form) and their problems, or else the defaults."""
    by_category: dict[str, list[Field]] = {}
    for value in app.values:
        text = given[value.name] if given is not None and value.name in given \
            else shown(value.default)
        problem = field_problem(app, value, text) if given is not None else None
        kind = "bool" if value.kind == "bool" else value.kind
        options = value.options or (("true", "false") if value.kind == "bool" else ())
        by_category.setdefault(value.category or "Settings", []).append(Field(
            value.name, _label(value), kind, text, options, value.required, problem))
    return [Section(title, tuple(fields)) for title, fields in by_category.items()]


def overrides(app: Application, given: Mapping[str, str]) -> list[str]:
    """The submitted form as ``--set`` strings (values the form did not send are left at
    their defaults)."""
    return [f"{value.name}={given[value.name]}" for value in app.values if value.name in given]


def problems(form: Sequence[Section]) -> list[str]:
    """Every field's problem, in the form's order."""
    return [field.problem for section in form for field in section.fields if field.problem]
