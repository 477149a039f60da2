"""Checks of single Fuzzfile values: names, paths, env entries, images, secrets, volumes, uris.

Each function returns the value (normalised where that is said) or raises ValueError
with a short message; the models in :mod:`fuzz.spec.fuzzfile` use them as pydantic
validators, so a problem is reported at the value's own line and column.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from fuzz.spec import containerfiles

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
"""Job and volume names: letters, digits, '_' and '-', starting with a letter or digit, ≤ 63."""
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""Environment variable names, as POSIX shells accept them."""
SECRET_PREFIX = "secret://"
SECRET_PATTERN = re.compile(r"^secret://(user|account)/([A-Za-z0-9][A-Za-z0-9._-]*)$")
VOLUME_PATTERN = re.compile(r"^volume://(user|account|group)/(ephemeral|persistent)(?:/(.*))?$")
"""``volume://SCOPE/CLASS[/NAME]``: this cluster's classes are ephemeral and persistent."""
FILE_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
"""Keys of the top-level ``files``: file names (``params.csv``), no '/'."""
EPHEMERAL_VOLUME = "volume://user/ephemeral"
PERSISTENT_VOLUME_PREFIX = "volume://user/persistent/"
DEFAULT_PERSISTENT_NAME = "persistent"
"""The persistent volume ``volume://user/persistent`` (no name) means: the class's own."""
PERSISTENT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
DOCKER_PREFIX = "docker://"
ORAS_PREFIX = "oras://"
"""An Apptainer SIF image stored in an OCI registry."""
FILE_PREFIX = "file://"

# An image reference as the OCI distribution grammar defines it
# ([domain[:port]/]path[:tag][@sha256:hex]). Written out here because no maintained
# Python package parses references without pulling in a whole Docker client.
_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
IMAGE_REFERENCE_PATTERN = re.compile(
    rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_IMAGE_FORMS = (
    "use docker://REPOSITORY[:TAG], docker://REPOSITORY@sha256:DIGEST or oras://REPOSITORY[:TAG]"
)


def _named(pattern: re.Pattern[str], value: str, what: str, characters: str) -> str:
    """``value`` if ``pattern`` matches it whole, else ValueError saying what a ``what``
    may hold: 1-63 of ``characters``, starting with a letter or digit."""
    if not pattern.fullmatch(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1-63 {characters}, starting with a letter or digit")
    return value


def check_name(value: str) -> str:
    """A job or volume name (see :data:`NAME_PATTERN`)."""
    return _named(NAME_PATTERN, value, "name", "letters, digits, '_' or '-'")


def _path_parts(path: str) -> list[str]:
    """The components of a slash-separated path, without empty and '.' parts."""
    return [part for part in path.split("/") if part not in ("", ".")]


def absolute_path(value: str) -> str:
    """An absolute path in a container, normalised (``/data//x/`` → ``/data/x``); no '..'."""
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, not {value!r}")
    parts = _path_parts(value)
    if ".." in parts:
        raise ValueError(f"{value!r} must not contain '..'")
    return "/" + "/".join(parts)


def mount_location(value: str) -> str:
    """Where a volume is mounted: an absolute, normalised path other than ``/``."""
    location = absolute_path(value)
    if location == "/":
        raise ValueError("cannot mount a volume over '/'")
    problem = containerfiles.reserved_problem(location)
    if problem is not None:
        raise ValueError(problem)
    return location


def container_file_path(value: str) -> str:
    """Where a job's ``files`` entry goes in its container (see
    :func:`fuzz.spec.containerfiles.path_problem`): given in normal form, not normalised
    here, so that two spellings of one path cannot both be keys."""
    problem = containerfiles.path_problem(value) or containerfiles.reserved_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def env_entry(value: str) -> str:
    """An environment entry ``NAME=VALUE`` with a valid name (the value may be empty); a
    VALUE that starts with ``secret://`` must be a valid secret reference (the job gets
    the secret's value, so a misspelt reference would otherwise reach the job as text)."""
    name, equals, text = value.partition("=")
    if not equals:
        raise ValueError(f"must be NAME=VALUE, not {value!r}")
    if not ENV_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid variable name {name!r}: use letters, digits and '_', not starting"
            " with a digit"
        )
    if text.startswith(SECRET_PREFIX):
        secret_reference(text)
    return value


def secret_reference(value: str) -> str:
    """A secret reference: ``secret://user/NAME`` or ``secret://account/NAME``."""
    if not SECRET_PATTERN.fullmatch(value):
        raise ValueError(f"invalid secret {value!r}: use secret://user/NAME or secret://account/NAME")
    return value


def secret_name(reference: str) -> str:
    """The bare name of a valid secret reference (``secret://user/ghcr`` → ``ghcr``)."""
    return reference.rsplit("/", 1)[1]


def secret_scope(reference: str) -> str:
    """Whose secret a valid reference names: ``user`` or ``account``."""
    return reference.split("/")[2]


def image_uri(value: str) -> str:
    """A container image: ``docker://REPOSITORY[:TAG]`` or ``docker://REPOSITORY@sha256:…``,
    or a SIF image in the same forms after ``oras://``."""
    prefix = next((p for p in (DOCKER_PREFIX, ORAS_PREFIX) if value.startswith(p)), None)
    if prefix is None:
        raise ValueError(f"unsupported image uri {value!r}: {_IMAGE_FORMS}")
    if not IMAGE_REFERENCE_PATTERN.fullmatch(value.removeprefix(prefix)):
        raise ValueError(f"invalid image uri {value!r}: {_IMAGE_FORMS}")
    return value


def no_decryption_secret(value: object) -> object:
    """Refuse ``decryption-secret``: decrypting encrypted SIF images is not supported."""
    raise ValueError(
        "encrypted SIF images are not supported: fuzz cannot decrypt them; "
        "use an unencrypted image"
    )


def volume_reference(value: str) -> str:
    """``volume://SCOPE/CLASS[/NAME]``: scope user, account or group (Fuzzball's newer word
    for account), class ephemeral or persistent, an optional name of 1-63 characters."""
    match = VOLUME_PATTERN.fullmatch(value)
    if match is None:
        raise ValueError(
            f"invalid volume reference {value!r}: use volume://user/ephemeral or"
            " volume://user/persistent[/NAME] (or volume://account/...)"
        )
    name = match.group(3)
    if name is not None:
        persistent_name(name)
    return value


V4_VOLUME_USES = ("ephemeral", "persistent")
"""What a v4 volume's ``use`` may name here: fuzz's two kinds of user volume (it has no
storage provisioners to name)."""


def persistent_name(value: str) -> str:
    """The name of a persistent volume (see :data:`PERSISTENT_NAME_PATTERN`)."""
    return _named(PERSISTENT_NAME_PATTERN, value, "persistent volume name",
                  "letters, digits, '.', '_' or '-'")


def v4_volume_reference(use: str | None, name: str | None) -> str:
    """The ``volume://`` reference a v4 volume chooses with ``use`` and ``name``: a named
    persistent volume, the user's own persistent one, else a new ephemeral one."""
    if name is not None:
        return PERSISTENT_VOLUME_PREFIX + name
    if use == "persistent":
        return PERSISTENT_VOLUME_PREFIX.rstrip("/")
    return EPHEMERAL_VOLUME


def volume_parts(reference: str) -> tuple[str, str, str | None]:
    """(scope, class, name or None) of a valid volume reference; ``group`` reads ``account``."""
    match = VOLUME_PATTERN.fullmatch(reference)
    assert match is not None, reference
    scope = "account" if match.group(1) == "group" else match.group(1)
    return scope, match.group(2), match.group(3)


def file_key(value: str) -> str:
    """A key of the top-level ``files`` (see :data:`FILE_KEY_PATTERN`)."""
    if not FILE_KEY_PATTERN.fullmatch(value):
        raise ValueError(
            f"invalid file key {value!r}: use 1-255 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return value


def inline_file_key(uri: str) -> str | None:
    """``KEY`` of ``file://KEY`` (an entry of the top-level ``files``), else None."""
    if not uri.startswith(FILE_PREFIX):
        return None
    key = uri.removeprefix(FILE_PREFIX)
    return key if FILE_KEY_PATTERN.fullmatch(key) else None


def placed_file_key(value: str) -> str | None:
    """``KEY`` of a job's ``files`` value ``file://KEY`` (the top-level entry it copies),
    else None: the value is the content itself. Fuzzball tells the two apart by the
    prefix alone, so ``file://`` followed by anything is a reference."""
    return value.removeprefix(FILE_PREFIX) if value.startswith(FILE_PREFIX) else None


def scalar_text(value: object) -> object:
    """A YAML number or boolean as the string Fuzzball makes of it (``8`` → ``"8"``,
    ``true`` → ``"true"``); anything else unchanged, for the type check to judge."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def upper_text(value: object) -> object:
    """A string upper-cased (Fuzzball matches enum words in any case); anything else unchanged."""
    return value.upper() if isinstance(value, str) else value


def lower_text(value: object) -> object:
    """A string lower-cased (Fuzzball matches enum words in any case); anything else unchanged."""
    return value.lower() if isinstance(value, str) else value


def volume_path(uri: str) -> str:
    """The path inside a volume named by ``file://path``, normalised and relative.

    A leading ``/`` (``file:///results/x``) is the volume's root, as in Fuzzball's own
    files: a volume path never names the host.
    """
    if not uri.startswith(FILE_PREFIX):
        raise ValueError(f"must be a path inside the volume (file://relative/path), not {uri!r}")
    parts = _path_parts(uri.removeprefix(FILE_PREFIX))
    if ".." in parts:
        raise ValueError(f"{uri!r} must not leave the volume ('..')")
    if not parts:
        raise ValueError(f"{uri!r} names no path inside the volume")
    return "/".join(parts)


def external_uri(uri: str, schemes: tuple[str, ...], *, inline_files: bool = False) -> str:
    """A uri outside the workflow: one of ``schemes`` (from http, https, s3, file).

    With ``inline_files``, ``file://KEY`` (an entry of the top-level ``files``) is one too.

    http(s) needs a host, s3 a bucket, and file an absolute path (``file:///srv/in``).
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        *others, last = (f"{name}://" for name in schemes)
        allowed = f"{', '.join(others)} or {last}" if others else last
        raise ValueError(f"unsupported uri {uri!r}: use {allowed}")
    if scheme in ("http", "https") and not parts.hostname:
        raise ValueError(f"{uri!r} names no host")
    if scheme == "s3" and not parts.netloc:
        raise ValueError(f"{uri!r} names no bucket (s3://BUCKET/KEY)")
    if scheme == "file":
        if inline_files and inline_file_key(uri) is not None:
            return uri
        if parts.netloc or not parts.path.startswith("/"):
            inline = " or name an entry of the top-level files (file://KEY)" if inline_files else ""
            raise ValueError(f"{uri!r} must be an absolute path (file:///path){inline}")
        absolute_path(parts.path)
    return uri
