"""Fixture: moto's S3 with request signatures checked, for the data transfer tests.

``moto_s3`` is moto's S3 (and IAM) server in a thread, with request signing
checked: it yields the credentials of an IAM user that may use S3, so wrong
credentials really fail. moto keeps its data and its auth switch per process, so
the fixture restores the switch when it ends and buckets should have unique names.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
import pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
S3_POLICY = {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


@dataclass(frozen=True)
class MotoS3:
    """A running moto server and the credentials of an IAM user allowed to use S3."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str = REGION

    def client(self) -> S3Client:
        """An S3 client with the user's credentials."""
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key)

    def new_user(self, policy: dict[str, object]) -> tuple[str, str]:
        """A new IAM user whose only policy is ``policy``: their (key id, secret key)."""
        previous = _set_auth(self.endpoint_url, "inf")  # creating users is not S3's
        try:
            iam = boto3.client("iam", endpoint_url=self.endpoint_url, region_name=self.region,
                               aws_access_key_id="setup", aws_secret_access_key="setup")
            name = f"fuzz-{uuid.uuid4().hex[:8]}"
            iam.create_user(UserName=name)
            iam.put_user_policy(UserName=name, PolicyName="only",
                                PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=name)["AccessKey"]
        finally:
            _set_auth(self.endpoint_url, previous)
        return key["AccessKeyId"], key["SecretAccessKey"]

    def new_bucket(self) -> str:
        """Create a bucket with a unique name and return the name."""
        name = f"fuzz-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


def _set_auth(endpoint_url: str, unauthenticated_requests: str) -> str:
    """Let only the next ``unauthenticated_requests`` requests skip signature checks
    ("0": none, "inf": all); return the previous setting."""
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/reset-auth", data=unauthenticated_requests.encode(),
        method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as response:
        previous: str = json.load(response)["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
        return previous


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    """moto's server on 127.0.0.1 (a free port) that checks S3 request signatures."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.fail("moto's server is missing: install the dev extras "
                    "(pip install -e '.[dev]', which includes moto[server])")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    iam = boto3.client("iam", endpoint_url=endpoint_url, region_name=REGION,
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    user = f"fuzz-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(S3_POLICY))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    previous = _set_auth(endpoint_url, "0")
    try:
        yield MotoS3(endpoint_url, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        _set_auth(endpoint_url, previous)
        server.stop()
