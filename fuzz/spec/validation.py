"""Validate a loaded YAML document against a pydantic model plus cross-field rules.

Cluster specs and Fuzzfiles are checked the same way: every problem is collected
(YAML duplicates, pydantic errors, cross-field :class:`~fuzz.spec.problems.Issue`
values found on the raw data) and raised together as one SpecError, in file order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fuzz.spec.problems import (
    Issue,
    Problem,
    SpecError,
    issues_to_problems,
    problems_from_validation_error,
    sort_problems,
)
from fuzz.spec.yamlsource import YamlDocument

ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_document(
    document: YamlDocument,
    model: type[ModelT],
    issues: Callable[[Mapping[Any, Any]], Iterable[Issue]],
    context: dict[str, Any] | None = None,
) -> ModelT:
    """``document``'s data validated by ``model``, with ``issues(data)`` as further rules.

    ``context`` is pydantic's validation context (a Fuzzfile's dialect, say).

    Raises SpecError listing every problem in file order. ``issues`` gets the raw data
    (a mapping), so its findings are reported even when the model rejects other parts.
    """
    if document.data is None:
        raise SpecError(document.problems)
    found: list[Problem] = []
    result: ModelT | None = None
    try:
        result = model.model_validate(document.data, context=context)
    except ValidationError as exc:
        found += problems_from_validation_error(exc, document.source, model=model)
    found += issues_to_problems(issues(document.data), document.source)
    # a value YAML could not read (an unknown tag, say) is loaded as null: do not
    # report it a second time as "must be a string"
    yaml_positions = {(problem.line, problem.col) for problem in document.problems}
    problems = document.problems + [
        problem for problem in found if (problem.line, problem.col) not in yaml_positions
    ]
    if problems or result is None:
        raise SpecError(sort_problems(problems))
    return result
