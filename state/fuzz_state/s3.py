"""The S3 state backend: one object per state, conditional writes, a lock object.

* The state is the object ``key`` in ``bucket``. Every write is conditional on the
  ETag of what was read (``IfMatch``), or on there being no object yet
  (``IfNoneMatch="*"``), so an update based on an outdated read is refused by S3
  itself and can never overwrite someone else's.
* The lock is the object ``<key>.lock``, created with ``IfNoneMatch="*"`` and
  holding the holder's :class:`~fuzz.plugin.state.LockInfo` as JSON. It is deleted
  only by the id that took it (conditional on its ETag). A retried lock request
  that finds its own id in the lock object treats the lock as its own, so a lost
  response never leaves a process waiting for itself.
* With bucket versioning enabled, S3 keeps every version: ``fuzz state history``
  lists them and ``fuzz state rollback`` restores one.

Unlike the local ``flock``, the lock object outlives a killed holder; ``fuzz
force-unlock ID`` removes it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field

from fuzz.errors import FuzzError
from fuzz.plugin import (
    BackendConfig,
    LockError,
    LockInfo,
    RegisterStateBackend,
    StateBackendPlugin,
    StateError,
    StateVersion,
    hookimpl,
    lock_mismatch,
    parse_config,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

NAME = "s3"
_CONFLICT_CODES = ("PreconditionFailed", "ConditionalRequestConflict")
_MISSING_CODES = ("NoSuchKey", "404", "NotFound")
_LOCK_ATTEMPTS = 3  # a lock released while we looked at it is tried again


class S3Config(BackendConfig):
    """The ``state:`` block of the S3 backend."""

    bucket: str = Field(min_length=3, max_length=63, description="the bucket")
    key: str = Field(default="fuzz/state.json", min_length=1, description="the state object")
    region: str | None = Field(default=None, description="the bucket's region")
    endpoint_url: str | None = Field(
        default=None, description="an S3-compatible endpoint (MinIO, a test server)"
    )


def open_s3(config: Mapping[str, Any], base_dir: Path) -> S3Backend:
    """Build the S3 backend from a ``state:`` block (without backend and encryption)."""
    parsed = parse_config(S3Config, config, NAME)
    client = boto3.session.Session().client(
        "s3", region_name=parsed.region, endpoint_url=parsed.endpoint_url,
        config=BotoConfig(retries={"mode": "standard"}, connect_timeout=10, read_timeout=30),
    )
    return S3Backend(client, parsed.bucket, parsed.key)


@hookimpl
def fuzz_register_state_backends(register: RegisterStateBackend) -> None:
    """Register the ``s3`` backend."""
    register(StateBackendPlugin(NAME, S3Config, open_s3))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Backend:
    """A :class:`~fuzz.plugin.state.StateBackend` (and versioned backend) on one S3 object.

    Remembers the ETag of the last read or write; the next write is conditional on
    it. :class:`~fuzz.lifecycle.statestore.StateStore` serialises calls to one object.
    """

    shared = True

    def __init__(self, client: S3Client, bucket: str, key: str) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.lock_key = f"{key}.lock"
        self._etag: str | None = None  # of the object we last read or wrote; None: absent

    def describe(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"

    @contextmanager
    def _errors(self, action: str, error: type[FuzzError] = StateError) -> Iterator[None]:
        """Turn S3 and connection failures into one-line errors naming the object."""
        try:
            yield
        except ClientError as exc:
            message = exc.response.get("Error", {}).get("Message", "")
            raise error(f"cannot {action} {self.describe()}: {_code(exc)}: {message}") from exc
        except BotoCoreError as exc:
            raise error(f"cannot {action} {self.describe()}: {exc}") from exc

    # --- the document --------------------------------------------------------------

    def read(self) -> bytes | None:
        """Return the state object's bytes (remembering its ETag), or None if absent."""
        with self._errors("read"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self.key)
            except ClientError as exc:
                if _code(exc) not in _MISSING_CODES:
                    raise
                self._etag = None
                return None
            data = response["Body"].read()
        self._etag = response["ETag"]
        return data

    def write(self, data: bytes) -> None:
        """Replace the object if it is still what was last read; StateError if not.

        A write whose response was lost and whose retry is refused still counts as
        done when the object now holds exactly ``data``.
        """
        put = functools.partial(self.client.put_object, Bucket=self.bucket, Key=self.key,
                                Body=data, ContentType="application/octet-stream")
        with self._errors("write"):
            try:
                response = put(IfMatch=self._etag) if self._etag else put(IfNoneMatch="*")
            except ClientError as exc:
                if _code(exc) not in _CONFLICT_CODES:
                    raise
                if self.read() == data:
                    return
                raise StateError(
                    f"{self.describe()} changed since fuzz read it (another writer); "
                    "nothing was written: run the command again"
                ) from exc
        self._etag = response["ETag"]

    # --- versions ------------------------------------------------------------------

    def history(self, limit: int) -> list[StateVersion]:
        """The newest ``limit`` versions of the state object (bucket versioning)."""
        with self._errors("list the versions of"):
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            if status != "Enabled":
                raise StateError(
                    f"bucket {self.bucket} does not keep versions: enable bucket versioning "
                    "to get fuzz state history and rollback"
                )
            versions: list[StateVersion] = []
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=self.key
            )
            for page in pages:
                for item in page.get("Versions", []):
                    if item.get("Key") == self.key:
                        versions.append(StateVersion(
                            id=str(item.get("VersionId")),
                            created=item["LastModified"].isoformat(timespec="seconds"),
                            size=int(item.get("Size", 0)),
                            current=bool(item.get("IsLatest")),
                        ))
        current = [v for v in versions if v.current]
        older = sorted((v for v in versions if not v.current), key=lambda v: v.created,
                       reverse=True)
        return (current + older)[:limit]

    def read_version(self, version_id: str) -> bytes:
        """The state object as it was in ``version_id``."""
        with self._errors(f"read version {version_id} of"):
            try:
                response = self.client.get_object(
                    Bucket=self.bucket, Key=self.key, VersionId=version_id
                )
            except ClientError as exc:
                if _code(exc) not in (*_MISSING_CODES, "NoSuchVersion", "InvalidArgument"):
                    raise
                raise StateError(
                    f"{self.describe()} has no version {version_id} (see fuzz state history)"
                ) from exc
            return response["Body"].read()

    # --- the lock ------------------------------------------------------------------

    def _read_lock(self) -> tuple[LockInfo | None, str]:
        """The lock object's holder and ETag, or (None, "") when there is no lock."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.lock_key)
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                return None, ""
            raise
        body = response["Body"].read()
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or not data.get("id"):
                raise ValueError("no lock id")
        except ValueError:
            unreadable = f"an unknown holder (lock object s3://{self.bucket}/{self.lock_key} " \
                         "is unreadable)"
            return LockInfo("unknown", "unknown", unreadable, "unknown",
                            self.describe()), response["ETag"]
        return LockInfo.from_json(data), response["ETag"]

    def try_lock(self, info: LockInfo) -> LockInfo | None:
        """Create the lock object unless it exists: None when ours, else its holder."""
        held = LockInfo(info.id, info.operation, info.who, info.created,
                        info.path or self.describe())
        body = json.dumps(held.to_json(), indent=2).encode()
        holder: LockInfo | None = None
        with self._errors("lock", LockError):
            for _ in range(_LOCK_ATTEMPTS):
                try:
                    self.client.put_object(Bucket=self.bucket, Key=self.lock_key, Body=body,
                                           ContentType="application/json", IfNoneMatch="*")
                    return None
                except ClientError as exc:
                    if _code(exc) not in _CONFLICT_CODES:
                        raise
                holder, _ = self._read_lock()
                if holder is not None:
                    return None if holder.id == info.id else holder
        return holder or LockInfo("unknown", "unknown", "another process (the lock changed "
                                  "hands while fuzz looked)", "unknown", self.describe())

    def unlock(self, lock_id: str) -> None:
        """Delete the lock object if ``lock_id`` holds it; otherwise do nothing."""
        with self._errors("unlock", LockError):
            holder, etag = self._read_lock()
            if holder is not None and holder.id == lock_id:
                self._delete_lock(etag)

    def _delete_lock(self, etag: str) -> None:
        """Delete the lock object if it is still the one with ``etag``."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.lock_key, IfMatch=etag)
        except ClientError as exc:
            if _code(exc) not in (*_CONFLICT_CODES, *_MISSING_CODES):
                raise

    def lock_holder(self) -> LockInfo | None:
        """The lock object's holder, or None when there is no lock object."""
        with self._errors("read the lock of", LockError):
            return self._read_lock()[0]

    def force_unlock(self, lock_id: str) -> None:
        """Delete the lock object if it holds ``lock_id``; LockError if it holds another."""
        with self._errors("force-unlock", LockError):
            holder, etag = self._read_lock()
            if holder is None:
                return
            if holder.id != lock_id:
                raise lock_mismatch(lock_id, holder.id)
            self._delete_lock(etag)
