"""YAML for the agent's own files (the declared inventory, CDI specs), with one-line errors.

The agent must stay light to import, so its files are read with plain
``yaml.safe_load`` and checked by hand rather than by pydantic models.
"""

from __future__ import annotations

from typing import Any

import yaml


def load_yaml(text: str) -> Any:
    """Parse ``text`` (YAML, and so JSON too); raise ValueError with a one-line reason.

    The reason reads ``not valid YAML: <problem> at line <n>``.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "syntax error"
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"not valid YAML: {problem}{where}") from exc
