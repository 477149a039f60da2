"""What the state backends share: config validation and the lock-id mismatch error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from fuzz.errors import ConfigError, LockError
from fuzz.spec.problems import did_you_mean

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class BackendConfig(BaseModel):
    """Base of a backend's ``state:`` block model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_config(schema: type[ConfigT], config: Mapping[str, Any], backend: str) -> ConfigT:
    """Validate ``config`` with ``schema``; the first problem becomes a one-line ConfigError.

    ``fuzz`` itself validates the block first with file and line numbers (through
    ``StateBackendPlugin.config_schema``); this catches direct callers of the plugin.
    """
    try:
        return schema.model_validate(dict(config))
    except ValidationError as exc:
        # an unknown key first: a misspelt key also makes the real one look missing
        error = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            keys = [field.alias or name for name, field in schema.model_fields.items()]
            hint = did_you_mean(where, keys).strip() or f"(known keys: {', '.join(keys)})"
            raise ConfigError(
                f"state: unknown key '{where}' for the {backend} backend {hint}"
            ) from None
        cause = error.get("ctx", {}).get("error")
        message = str(cause) if isinstance(cause, ValueError) else error["msg"]
        raise ConfigError(f"state.{where}: {message} ({backend} backend)") from None


def lock_mismatch(given: str, current: str) -> LockError:
    """The error for ``force-unlock ID`` naming another lock than the one held."""
    return LockError(f"lock ID {given} does not match the current lock (ID {current})")
