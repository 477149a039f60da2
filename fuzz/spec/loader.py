"""Load ``fuzz.yaml`` into a validated :class:`ClusterSpec` that remembers where it came from.

Every problem is collected (YAML duplicates, pydantic errors, cross-field rules)
and raised together as one :class:`~fuzz.spec.problems.SpecError`, one line each.
Plugins validate their own parts of the spec later with :func:`validate_block`,
whose errors still point at the right line of the original file.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fuzz.spec.cluster import ClusterSpec, cluster_issues
from fuzz.spec.problems import SpecError, problems_from_validation_error
from fuzz.spec.validation import ModelT, validate_document
from fuzz.spec.yamlsource import SourceMap, read_yaml


@dataclass(frozen=True)
class LoadedSpec:
    """A validated cluster spec, its absolute ``path`` and the source map of its file."""

    spec: ClusterSpec
    path: Path
    source: SourceMap

    @property
    def base_dir(self) -> Path:
        """The spec's directory: relative paths in the spec are relative to it."""
        return self.path.parent


def load_cluster_spec(path: Path, display_name: str | None = None) -> LoadedSpec:
    """Read, parse and validate a cluster spec.

    ``display_name`` is how problems name the file (default: ``path`` as given).
    Raises SpecError listing every problem in file order, or ConfigError
    (``fuzz.yaml: no such file``) when the file cannot be read.
    """
    name = display_name if display_name is not None else str(path)
    document = read_yaml(path, name)
    spec = validate_document(document, ClusterSpec, cluster_issues)
    return LoadedSpec(spec=spec, path=path.absolute(), source=document.source)


def validate_block(
    loaded: LoadedSpec,
    path: tuple[Hashable, ...],
    schema: type[ModelT],
    data: Mapping[str, Any],
) -> ModelT:
    """Validate a plugin's part of the spec with the plugin's own pydantic ``schema``.

    ``path`` is where ``data`` sits in the file, e.g. ``("providers", "aws")`` for a
    provider block without its ``kind`` key, or ``("state",)`` for the state block
    without ``backend``. Raises SpecError whose problems point into the original
    file (``fuzz.yaml:9:5: providers.aws.regoin: unknown key 'regoin' (did you mean
    'region'?)``).
    """
    try:
        return schema.model_validate(dict(data))
    except ValidationError as exc:
        problems = problems_from_validation_error(
            exc, loaded.source, model=schema, base=tuple(path)
        )
        raise SpecError(problems) from None


def validate_provider_block(loaded: LoadedSpec, name: str, schema: type[ModelT]) -> ModelT:
    """Validate provider block ``name`` (its keys other than ``kind``) with ``schema``."""
    block = loaded.spec.providers[name]
    return validate_block(loaded, ("providers", name), schema, block.provider_config())


def validate_state_block(loaded: LoadedSpec, schema: type[ModelT]) -> ModelT:
    """Validate the ``state:`` block (its keys other than ``backend``) with ``schema``."""
    return validate_block(loaded, ("state",), schema, loaded.spec.state.backend_config())
