"""One EC2 client per region, endpoint and profile, shared by all threads of this process.

A boto3 client costs a second of CPU to build (it loads the EC2 service model), so
clients are built once and kept; botocore clients are thread-safe, their creation
is not, hence the lock. A client is only kept once credentials were found, so that
credentials set up later are picked up.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import NoCredentialsError

from fuzz_aws.config import AwsConfig
from fuzz_aws.errors import ec2_errors

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

USER_AGENT = "fuzz"

_clients: dict[tuple[str, str | None, str | None, int], EC2Client] = {}
_lock = threading.Lock()


def ec2_client(config: AwsConfig, doing: str) -> EC2Client:
    """The EC2 client for ``config``; ``doing`` names the operation in errors."""
    key = (config.region, config.endpoint_url, config.profile, config.max_attempts)
    with _lock:
        client = _clients.get(key)
        if client is not None:
            return client
        with ec2_errors(doing):
            session = boto3.session.Session(profile_name=config.profile,
                                            region_name=config.region)
            if session.get_credentials() is None:
                raise NoCredentialsError()
            client = session.client(
                "ec2", endpoint_url=config.endpoint_url,
                config=Config(user_agent_extra=USER_AGENT,
                              retries={"mode": "standard", "max_attempts": config.max_attempts}))
        _clients[key] = client
        return client
