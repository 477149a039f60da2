"""``s3://`` transfers with boto3: credentials from a secret, objects and prefixes.

``s3://BUCKET/KEY`` is one object; a URI whose key is empty or ends with ``/`` is a
prefix: as a source it means every object under it, as a destination the files
are written under it. Uploads go through boto3's managed transfer (multipart for
large files); each object appears whole or not at all. When a tree upload fails,
the objects already uploaded stay (S3 has no rename to stage them with).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from fuzz.errors import ConfigError
from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
from fuzz.orchestrate.transfer.stream import (
    Item,
    Readable,
    Source,
    TransferError,
    reason_of,
    safe_relative,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

S3 = "s3://"
CLIENT_CONFIG = Config(
    connect_timeout=10, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
)
SECRET_KEYS = {
    "AWS_ACCESS_KEY_ID": "access_key_id",
    "AWS_SECRET_ACCESS_KEY": "secret_access_key",
    "AWS_SESSION_TOKEN": "session_token",
    "AWS_REGION": "region",
    "AWS_ENDPOINT_URL": "endpoint_url",
}
REQUIRED_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclass(frozen=True)
class S3Credentials:
    """Credentials (and optionally region and endpoint) for S3; secrets stay out of repr."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint_url: str | None = None


def s3_credentials_from_secret(value: bytes) -> S3Credentials:
    """Read S3 credentials from a secret's value.

    The value is a JSON object or ``KEY=VALUE`` lines (blank lines and ``#``
    comments allowed) with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and
    optionally AWS_SESSION_TOKEN, AWS_REGION and AWS_ENDPOINT_URL. Raises
    ConfigError naming what is wrong, never a value.
    """
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("S3 credentials secret is not UTF-8 text") from exc
    fields = _json_fields(text) if text.lstrip().startswith("{") else _line_fields(text)
    unknown = sorted(set(fields) - set(SECRET_KEYS))
    if unknown:
        raise ConfigError(f"S3 credentials secret: unknown key(s) {', '.join(unknown)}; "
                          f"expected {', '.join(SECRET_KEYS)}")
    missing = [key for key in REQUIRED_SECRET_KEYS if not fields.get(key)]
    if missing:
        raise ConfigError(f"S3 credentials secret: missing {', '.join(missing)}")
    return S3Credentials(**{SECRET_KEYS[key]: value for key, value in fields.items() if value})


def _json_fields(text: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "invalid"
        raise ConfigError(f"S3 credentials secret is not valid JSON: {message}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError("S3 credentials secret: the JSON must be an object of strings")
    return data


def _line_fields(text: str) -> dict[str, str]:
    fields = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if not equals:
            raise ConfigError(f"S3 credentials secret: line {number} is not KEY=VALUE")
        fields[key.strip()] = value.strip()
    return fields


def s3_client(credentials: S3Credentials | None, uri: str,
              policy: IngressPolicy | None = None) -> S3Client:
    """An S3 client with ``credentials``, or boto3's default credential chain when None.

    The endpoint a secret names (``AWS_ENDPOINT_URL``, chosen by the workflow's
    author) must be ``http(s)://`` on an address ``policy`` allows, as for http
    ingress (TransferError naming ``uri`` otherwise), and is addressed path-style, so
    that no bucket name becomes a host name to resolve. No proxy is taken from the
    environment: only the policy's.
    """
    policy = policy or IngressPolicy()
    proxy = policy.proxy
    config = CLIENT_CONFIG.merge(Config(proxies={"http": proxy, "https": proxy} if proxy else {}))
    if credentials is None:
        return _client(config=config)
    if credentials.endpoint_url is not None:
        _check_endpoint(credentials.endpoint_url, uri, policy)
        config = config.merge(Config(s3={"addressing_style": "path"}))
    return _client(config=config, endpoint_url=credentials.endpoint_url,
                   aws_access_key_id=credentials.access_key_id,
                   aws_secret_access_key=credentials.secret_access_key,
                   aws_session_token=credentials.session_token,
                   region_name=credentials.region)


_session: list[boto3.session.Session] = []  # one per process, made on first use
_session_lock = threading.Lock()


def _client(**options: Any) -> S3Client:
    """An S3 client from this process's one boto3 session, with ``options`` (the
    credentials among them: the session holds none, so nothing passes between users).

    One session because a new one loads botocore's service models again (a second or
    two of JSON per transfer); the lock because a session is not safe to make clients
    from on several threads at once (the clients themselves are).
    """
    with _session_lock:
        if not _session:
            _session.append(boto3.session.Session())
        return _session[0].client("s3", **options)


def _check_endpoint(endpoint: str, uri: str, policy: IngressPolicy) -> None:
    """TransferError unless every address of ``endpoint``'s host is one ``policy`` allows."""
    parts = urlsplit(endpoint)
    try:
        port = parts.port or {"http": 80, "https": 443}[parts.scheme]
        refusal = policy.destination_refusal(parts.hostname or "", port)
    except (KeyError, ValueError):
        refusal = "not an http:// or https:// URL"
    except OSError as exc:
        refusal = reason_of(exc)
    if refusal is not None:
        raise TransferError(f"{uri}: endpoint {endpoint}: {refusal}")


@contextmanager
def s3_errors(uri: str) -> Iterator[None]:
    """Turn botocore's exceptions into TransferError naming ``uri``."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code") or "Error"
        message = error.get("Message") or "failed"
        hint = ""
        if code in ("NoSuchKey", "404"):
            hint = " (for every object under a prefix, end the URI with '/')"
        if code in ("AccessDenied", "403"):  # a HEAD's 403 has no body to say it
            hint = " (these credentials may not read it)"
        raise TransferError(f"{uri}: {code}: {message}{hint}") from exc
    except BotoCoreError as exc:
        raise TransferError(f"{uri}: {exc}") from exc


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://BUCKET/KEY`` as (bucket, key); the key may be empty."""
    bucket, _, key = uri[len(S3):].partition("/") if uri.startswith(S3) else ("", "", "")
    if not bucket:
        raise TransferError(f"{uri}: expected s3://BUCKET/KEY")
    return bucket, key


def is_prefix(key: str) -> bool:
    """Whether ``key`` names a prefix (empty or ending with ``/``) rather than one object."""
    return not key or key.endswith("/")


@dataclass(frozen=True)
class PinnedObject:
    """An object as a listing or a HEAD saw it; a read of it must find the same ETag."""

    key: str
    size: int
    etag: str  # '' for any
    version_id: str = ""


def list_objects(uri: str, client: S3Client, bucket: str, prefix: str) -> list[PinnedObject]:
    """Every object under ``prefix`` (not the zero-byte "folders"); TransferError when
    there are none."""
    with s3_errors(uri):
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        objects = [PinnedObject(entry["Key"], entry["Size"], entry.get("ETag", ""))
                   for page in pages for entry in page.get("Contents", [])]
    objects = [entry for entry in objects if not entry.key.endswith("/")]
    if not objects:
        raise TransferError(f"{uri}: no objects under this prefix")
    return objects


def s3_source(uri: str, client: S3Client,
              pinned: Sequence[PinnedObject] | None = None) -> Source:
    """The object at ``uri``, or every object under it when it is a prefix; with
    ``pinned``, those objects, each read only if its ETag is still the one listed."""
    bucket, key = parse_s3_uri(uri)
    errors = partial(s3_errors, uri)
    if not is_prefix(key):
        etag = pinned[0].etag if pinned else ""
        name = key.rsplit("/", 1)[-1]
        return Source(uri, False, [Item(name, _opener(client, bucket, key, etag))], None,
                      errors)
    objects = list(pinned) if pinned is not None else list_objects(uri, client, bucket, key)
    items = [Item(safe_relative(entry.key[len(key):], uri),
                  _opener(client, bucket, entry.key, entry.etag)) for entry in objects]
    return Source(uri, True, items, sum(entry.size for entry in objects), errors)


def _opener(
    client: S3Client, bucket: str, key: str, etag: str
) -> Callable[[], AbstractContextManager[tuple[Readable, int | None]]]:
    @contextmanager
    def open_object() -> Iterator[tuple[Readable, int | None]]:
        if etag:
            response = client.get_object(Bucket=bucket, Key=key, IfMatch=etag)
        else:
            response = client.get_object(Bucket=bucket, Key=key)
        body = response["Body"]
        try:
            yield body, response["ContentLength"]
        finally:
            body.close()

    return open_object


class S3Sink:
    """Uploads a file to ``uri`` (under it when it is a prefix) or a tree under ``uri``."""

    def __init__(self, uri: str, client: S3Client, tree: bool) -> None:
        self.uri = uri
        self._client = client
        self._tree = tree
        self._bucket, self._key = parse_s3_uri(uri)

    def put(self, relative: str, stream: Readable) -> None:
        """Upload one file; boto3 reads ``stream`` in order (it cannot seek)."""
        if self._tree:
            prefix = self._key if is_prefix(self._key) else self._key + "/"
            key = prefix + relative
        else:
            key = self._key + relative if is_prefix(self._key) else self._key
        with s3_errors(self.uri):
            self._client.upload_fileobj(stream, self._bucket, key)  # type: ignore[arg-type]

    def commit(self) -> None:
        """Nothing to do: each object appeared whole when its upload finished."""

    def abort(self) -> None:
        """Nothing to do: an unfinished upload leaves no object (boto3 aborts multipart)."""
