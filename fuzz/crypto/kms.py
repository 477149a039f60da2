"""AWS KMS as a key source for :mod:`fuzz.crypto.envelope`: envelope encryption with data keys.

Sealing asks KMS once per process for a data key (``GenerateDataKey``, AES-256)
and seals every blob with it, storing the KMS-wrapped copy of the data key in the
envelope header. Unsealing asks KMS to unwrap that copy (``Decrypt``), once per
distinct wrapped key. The header's key id is a hash of the KMS key's ARN, so the
configured key (an id, ARN or alias) that sealed a blob is found without a call
per candidate. boto3 is imported only when a KMS key is configured (``pip install
'fuzz[kms]'``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fuzz.crypto.envelope import DecryptionError, SealingKey, key_id_of
from fuzz.errors import ConfigError, FuzzError

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient


def kms_client(region: str | None = None, endpoint_url: str | None = None) -> KMSClient:
    """A boto3 KMS client (credentials from the usual AWS chain)."""
    try:
        import boto3
    except ImportError as exc:
        raise ConfigError("a KMS key needs boto3: pip install 'fuzz[kms]'") from exc
    return boto3.session.Session().client("kms", region_name=region, endpoint_url=endpoint_url)


class KmsKeySource:
    """Data keys from one KMS key (kind 3 of the envelope format). Thread-safe."""

    kind = 3

    def __init__(self, client: KMSClient, key_id: str) -> None:
        self.client = client
        self.key_id = key_id
        self._mutex = threading.Lock()
        self._sealing: SealingKey | None = None
        self._arn_id: bytes | None = None
        self._unwrapped: dict[bytes, bytes] = {}  # wrapped data key -> data key

    def describe(self) -> str:
        """``KMS key <id, ARN or alias>``."""
        return f"KMS key {self.key_id}"

    @contextmanager
    def _errors(self, action: str, error: type[FuzzError]) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            details = exc.response.get("Error", {})
            raise error(f"{self.describe()}: cannot {action}: {details.get('Code')}: "
                        f"{details.get('Message')}") from exc
        except BotoCoreError as exc:
            raise error(f"{self.describe()}: cannot {action}: {exc}") from exc

    def sealing_key(self) -> SealingKey:
        """This process's data key, generated on first use."""
        with self._mutex:
            if self._sealing is None:
                with self._errors("generate a data key", ConfigError):
                    answer = self.client.generate_data_key(KeyId=self.key_id, KeySpec="AES_256")
                arn_id = key_id_of(answer["KeyId"].encode())
                self._arn_id = arn_id
                self._sealing = SealingKey(self.kind, arn_id, answer["CiphertextBlob"],
                                           answer["Plaintext"])
                self._unwrapped[answer["CiphertextBlob"]] = answer["Plaintext"]
            return self._sealing

    def _own_id(self) -> bytes:
        with self._mutex:
            if self._arn_id is None:
                with self._errors("describe the key", DecryptionError):
                    arn = self.client.describe_key(KeyId=self.key_id)["KeyMetadata"]["Arn"]
                self._arn_id = key_id_of(arn.encode())
            return self._arn_id

    def unsealing_key(self, key_id: bytes, parameters: bytes) -> bytes | None:
        """Unwrap the blob's data key when the blob was sealed under this KMS key."""
        if key_id != self._own_id():
            return None
        with self._mutex:
            cached = self._unwrapped.get(parameters)
        if cached is not None:
            return cached
        with self._errors("decrypt the data key", DecryptionError):
            key = self.client.decrypt(CiphertextBlob=parameters, KeyId=self.key_id)["Plaintext"]
        with self._mutex:
            self._unwrapped[parameters] = key
        return key
