"""One application of a catalog: ``metadata.md``, ``values.yaml`` and ``template.yaml``
(reference §5.1 to §5.3), read from a directory or from the texts an orchestrator sent,
and rendered into a checked Fuzzfile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from fuzz.catalog.render import render_template
from fuzz.catalog.values import TemplateValue, parse_values, resolve_values
from fuzz.errors import ConfigError
from fuzz.spec.fuzzfile_loader import LoadedFuzzfile, parse_fuzzfile
from fuzz.spec.problems import Problem, SpecError
from fuzz.spec.validation import validate_document
from fuzz.spec.yamlsource import decode_source, parse_yaml, read_source

TEMPLATE_FILE, VALUES_FILE, METADATA_FILE = "template.yaml", "values.yaml", "metadata.md"


class _FrontMatter(BaseModel):
    """``metadata.md``'s front matter; keys fuzz has no use for are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: StrictStr = Field(min_length=1)
    name: StrictStr = Field(min_length=1)
    category: StrictStr = Field(min_length=1)
    tags: list[StrictStr] = Field(default_factory=list)
    featured: StrictBool = False
    keyart: StrictStr | None = None
    key_art: StrictStr | None = None  # the docs' spelling of keyart


@dataclass(frozen=True)
class Metadata:
    """What ``metadata.md`` says of an application; ``description`` is its Markdown body."""

    id: str
    name: str
    category: str
    tags: tuple[str, ...]
    featured: bool
    keyart: str | None
    description: str


def parse_metadata(text: str, file: str) -> Metadata:
    """``metadata.md``: YAML front matter between the first two ``---`` lines (a comment
    line may come before it), then the Markdown description. Raises SpecError."""
    lines = text.splitlines()
    fences = [index for index, line in enumerate(lines) if line.rstrip() == "---"][:2]
    if len(fences) < 2:
        raise SpecError([Problem(file, 1, 1, "", "no front matter: put the application's "
                                 "id, name and category between two --- lines")])
    start, end = fences
    # blank lines keep the front matter's line numbers those of the file
    front = "\n" * (start + 1) + "\n".join(lines[start + 1:end]) + "\n"
    parsed = validate_document(parse_yaml(front, file), _FrontMatter, lambda _data: ())
    body = "\n".join(lines[end + 1:]).strip()
    return Metadata(parsed.id, parsed.name, parsed.category, tuple(parsed.tags),
                    parsed.featured, parsed.keyart or parsed.key_art, body)


@dataclass(frozen=True)
class Bundle:
    """An application's three texts and the names its files show in messages."""

    template: str
    values: str
    metadata: str
    where: str
    """The application's directory as messages name it (``catalog/applications/sweep``)."""

    def file(self, name: str) -> str:
        """How messages name one of the application's files."""
        return f"{self.where}/{name}"


def read_bundle(directory: Path, where: str | None = None) -> Bundle:
    """The three files of the application in ``directory``; ConfigError names one missing."""
    shown = where if where is not None else str(directory)
    def text(name: str) -> str:
        file = f"{shown}/{name}"
        return decode_source(read_source(directory / name, file), file)

    return Bundle(text(TEMPLATE_FILE), text(VALUES_FILE), text(METADATA_FILE), shown)


@dataclass(frozen=True)
class Application:
    """A checked application: ``key`` is its directory's name, ``catalog`` the catalog's."""

    catalog: str
    key: str
    metadata: Metadata
    values: tuple[TemplateValue, ...]
    bundle: Bundle

    @property
    def ref(self) -> str:
        """``CATALOG/KEY``, how commands name it when the key alone is ambiguous."""
        return f"{self.catalog}/{self.key}"

    def summary_json(self) -> dict[str, Any]:
        """What ``fuzz app list --json`` prints of it."""
        meta = self.metadata
        return {"catalog": self.catalog, "app": self.key, "ref": self.ref, "id": meta.id,
                "name": meta.name, "category": meta.category, "tags": list(meta.tags),
                "featured": meta.featured}

    def to_json(self) -> dict[str, Any]:
        """What ``fuzz app show --json`` prints: the summary, description and values."""
        return {**self.summary_json(), "description": self.metadata.description,
                "values": [value.to_json() for value in self.values]}


def load_application(catalog: str, key: str, bundle: Bundle) -> Application:
    """An application from its texts; SpecError lists the problems of one file."""
    metadata = parse_metadata(bundle.metadata, bundle.file(METADATA_FILE))
    values = parse_values(bundle.values, bundle.file(VALUES_FILE))
    return Application(catalog, key, metadata, tuple(values), bundle)


@dataclass(frozen=True)
class Rendered:
    """A rendered application: the text, and the Fuzzfile it checked as."""

    text: str
    loaded: LoadedFuzzfile


def render_checked(template: str, template_file: str, declared: Sequence[TemplateValue],
                   values_file: str, overrides: Sequence[str]) -> str:
    """``template`` rendered with ``declared``'s defaults and ``overrides`` (``Name=value``),
    before the Fuzzfile is checked."""
    values = resolve_values(declared, overrides, values_file)
    return render_template(template, values, template_file)


def check_rendered(text: str, name: str) -> LoadedFuzzfile:
    """The rendered text checked as a Fuzzfile; problems name ``name`` and the lines of
    the rendered text (not the template's)."""
    return parse_fuzzfile(text, name)


def rendered_name(template_file: str) -> str:
    """How problems of a rendered Fuzzfile name it: ``TEMPLATE (rendered)``."""
    return f"{template_file} (rendered)"


def render_application(app: Application, overrides: Sequence[str]) -> Rendered:
    """``app`` rendered with its defaults and ``overrides``, checked as a Fuzzfile.

    Raises ConfigError/SpecError with one line per problem (see :func:`render_checked`
    and :func:`check_rendered`).
    """
    template_file = app.bundle.file(TEMPLATE_FILE)
    text = render_checked(app.bundle.template, template_file, app.values,
                          app.bundle.file(VALUES_FILE), overrides)
    return Rendered(text, check_rendered(text, rendered_name(template_file)))


def is_application_dir(directory: Path) -> bool:
    """Whether ``directory`` holds the three files of an application."""
    return all((directory / name).is_file()
               for name in (TEMPLATE_FILE, VALUES_FILE, METADATA_FILE))


def not_found(what: str, choices: Sequence[str]) -> ConfigError:
    """The one-line error for an application no catalog holds."""
    listed = ", ".join(sorted(choices)) or "none: add a catalog with `fuzz app catalog add`"
    return ConfigError(f"no application {what!r} in the catalogs (known: {listed})")
