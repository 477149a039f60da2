"""What differs between the Fuzzfile dialects ``v1`` and ``v4``, for the models to use.

Both dialects parse into the one model of :mod:`fuzz.spec.fuzzfile`; the loader passes
the file's dialect in pydantic's validation context (:func:`dialect_context`), and the
few fields whose form differs read it (:func:`dialect`):

- ``mounts`` (of jobs, services and ``defaults.job``): v1 keys a mount by its volume
  (``work: {location: /work}``), v4 by the container path, with the long form
  ``/work: {volume: work}`` or the short form ``/work: work``. :func:`mounts_in_v1_form`
  turns a v4 map into the v1 form the model holds, each problem at its own key or value.
- the v4 volume keys ``use``, ``size``, ``annotations`` and the v4 service keys
  ``network.host`` and ``policy``: :func:`v4_only` refuses them in a v1 file.

A v1 form in a v4 file, and a v4 form in a v1 file, are each one clear line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
)
from pydantic_core import InitErrorDetails

from fuzz.spec import fuzzfile_values as values

Dialect = Literal["v1", "v4"]
CONTEXT_KEY = "fuzzfile_dialect"


def dialect_of(data: object) -> Dialect:
    """The dialect a Fuzzfile's raw data is written in: ``v4`` if it says so, else ``v1``
    (a file with no or a wrong ``version`` is checked as v1 and told about its version)."""
    if isinstance(data, Mapping) and data.get("version") == "v4":
        return "v4"
    return "v1"


def dialect_context(dialect: Dialect) -> dict[str, Any]:
    """The validation context that makes the models read ``dialect``."""
    return {CONTEXT_KEY: dialect}


def dialect(info: ValidationInfo) -> Dialect:
    """The dialect being validated (``v1`` when no context says otherwise)."""
    context = info.context if isinstance(info.context, Mapping) else {}
    found = context.get(CONTEXT_KEY, "v1")
    return "v4" if found == "v4" else "v1"


V4_ONLY = {
    "use": "v4 only (version: v4); a v1 volume is chosen by reference:"
           " volume://user/ephemeral or volume://user/persistent/NAME",
    "size": "v4 only (version: v4); a v1 volume has no size",
    "annotations": "v4 only (version: v4); a v1 volume is chosen by reference alone",
    "host": "v4 only (version: v4); v1 services have no host network",
    "policy": "v4 only (version: v4); v1 services have no policy",
    "export": "v1 only: the legacy service export was removed from v4 (services are"
              " reached by their network endpoints); leave it out",
}
"""Why a file of the other dialect may not hold a key, by key (``export`` is the one
v1-only key, :func:`v1_only`)."""


def v4_only(key: str) -> Callable[[Any, ValidationInfo], Any]:
    """A before-validator that refuses ``key`` in a v1 file, naming the dialect it is from."""
    return _only_in("v4", key)


def v1_only(key: str) -> Callable[[Any, ValidationInfo], Any]:
    """A before-validator that refuses the legacy v1 ``key`` in a v4 file."""
    return _only_in("v1", key)


def _only_in(allowed: Dialect, key: str) -> Callable[[Any, ValidationInfo], Any]:
    def check(value: Any, info: ValidationInfo) -> Any:
        if dialect(info) != allowed:  # placed at the key, as an unknown key is
            raise ValidationError.from_exception_data(
                key, [_error(("[key]",), value, V4_ONLY[key])])
        return value

    return check


def _error(loc: tuple[str | int, ...], value: object, message: str) -> InitErrorDetails:
    return {"type": "value_error", "loc": loc, "input": value,
            "ctx": {"error": ValueError(message)}}


def _raise(errors: list[InitErrorDetails]) -> None:
    """Raise ``errors`` (located inside the field being validated) as pydantic's own."""
    if errors:
        raise ValidationError.from_exception_data("mounts", errors)


class V4Mount(BaseModel):
    """The long v4 mount form ``{volume: NAME}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    volume: Annotated[str, AfterValidator(values.check_name)]


def _short_form(value: object) -> object:
    """``/data: NAME`` reads as ``/data: {volume: NAME}``."""
    if isinstance(value, str):
        return {"volume": value}
    if not isinstance(value, Mapping):
        raise ValueError("must be a volume name or {volume: NAME}")
    return value


def _v4_path(value: str) -> str:
    """A v4 mount key: an absolute container path other than ``/`` (kept as written: the
    model normalises it, and reports two keys that are one place)."""
    if not value.startswith("/"):
        raise ValueError(
            f"{value!r} is not a container path: a v4 mount is keyed by the absolute path"
            " where the volume appears (/PATH: {volume: NAME})")
    values.mount_location(value)
    return value


MountPath = Annotated[str, AfterValidator(_v4_path)]
MountTarget = Annotated[V4Mount, BeforeValidator(_short_form)]
_V4_MOUNTS: TypeAdapter[dict[str, V4Mount]] = TypeAdapter(dict[MountPath, MountTarget])


def _v1_form_entries(value: Mapping[Any, Any]) -> list[InitErrorDetails]:
    """Entries of a v4 mount map written in the v1 form (``work: {location: /work}``)."""
    errors: list[InitErrorDetails] = []
    for key, target in value.items():
        if isinstance(key, str) and not key.startswith("/") and isinstance(target, Mapping) \
                and "location" in target:
            where = target["location"]
            errors.append(_error((key, "[key]"), key, (
                f"the v1 mount form (VOLUME: {{location: PATH}}): in v4 a mount is keyed by"
                f" its path, {where}: {{volume: {key}}}")))
    return errors


def _v4_form_entries(value: Mapping[Any, Any]) -> list[InitErrorDetails]:
    """Entries of a v1 mount map keyed by a container path (the v4 form)."""
    errors: list[InitErrorDetails] = []
    for key, target in value.items():
        if isinstance(key, str) and key.startswith("/"):
            volume = target.get("volume") if isinstance(target, Mapping) else target
            shown = volume if isinstance(volume, str) else "VOLUME"
            errors.append(_error((key, "[key]"), key, (
                f"a mount keyed by its path is the v4 form (version: v4); in v1 write"
                f" {shown}: {{location: {key}}}")))
    return errors


def _v4_mounts(value: Mapping[Any, Any], info: ValidationInfo
               ) -> tuple[dict[str, V4Mount], list[InitErrorDetails]]:
    """The v4 entries of ``value`` validated, and the problems of all its entries."""
    errors = _v1_form_entries(value)
    written_v1 = {error["loc"][0] for error in errors}
    rest = {key: target for key, target in value.items() if key not in written_v1}
    try:
        return _V4_MOUNTS.validate_python(rest, context=info.context), errors
    except ValidationError as exc:
        for error in exc.errors():
            detail: InitErrorDetails = {
                "type": error["type"], "loc": error["loc"], "input": error["input"]}
            if "ctx" in error:
                detail["ctx"] = error["ctx"]
            errors.append(detail)
        return {}, errors


def mounts_in_v1_form(value: Any, handler: ValidatorFunctionWrapHandler,
                      info: ValidationInfo) -> Any:
    """Validate a ``mounts`` map in the file's dialect into the v1 form the model holds
    (volume → ``{location}``). In v4 a volume is mounted at one path per job or service."""
    if not isinstance(value, Mapping):
        return handler(value)
    if dialect(info) == "v1":
        _raise(_v4_form_entries(value))
        return handler(value)
    mounts, errors = _v4_mounts(value, info)
    by_volume: dict[str, dict[str, str]] = {}
    for path, mount in mounts.items():
        earlier = by_volume.get(mount.volume)
        if earlier is not None:
            errors.append(_error((path,), path, (
                f"volume {mount.volume!r} is already mounted at {earlier['location']}:"
                " fuzz mounts a volume at one path per job or service")))
            continue
        by_volume[mount.volume] = {"location": path}
    _raise(errors)
    return handler(by_volume)


def mount_volumes(mounts: object, dialect_name: Dialect) -> list[tuple[tuple[Any, ...], str]]:
    """(path inside ``mounts`` of the volume's name, the name) of each mount in raw data;
    entries of the wrong shape are left out (the models report them)."""
    if not isinstance(mounts, Mapping):
        return []
    if dialect_name == "v1":
        return [((key,), key) for key in mounts
                if isinstance(key, str) and not key.startswith("/")]  # a path: v4's form
    found: list[tuple[tuple[Any, ...], str]] = []
    for path, target in mounts.items():
        if isinstance(target, str):
            found.append(((path,), target))
        elif isinstance(target, Mapping) and isinstance(target.get("volume"), str):
            found.append(((path, "volume"), target["volume"]))
    return found


def mount_locations(mounts: object, dialect_name: Dialect) -> list[tuple[str, str]]:
    """(volume, location as written) of each well-formed mount in raw data, either form."""
    if not isinstance(mounts, Mapping):
        return []
    found: list[tuple[str, str]] = []
    for key, target in mounts.items():
        if dialect_name == "v1":
            volume, location = key, target.get("location") if isinstance(target, Mapping) \
                else None
        else:
            volume = target.get("volume") if isinstance(target, Mapping) else target
            location = key
        if isinstance(volume, str) and isinstance(location, str):
            found.append((volume, location))
    return found
