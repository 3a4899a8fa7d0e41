"""One boto3 session per provider instance, and one client per service and region.

boto3 sessions are not thread-safe, clients are: clients are built under a lock
and then shared by the fan-out threads. botocore's own retries are off; the
engine's tenacity policy is the one budget.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from providers.aws.errors import aws_call

CLIENT_CONFIG = Config(
    retries={"total_max_attempts": 1, "mode": "standard"},
    connect_timeout=5,
    read_timeout=15,
    max_pool_connections=32,
)


class Clients:
    def __init__(
        self, *, profile: str | None, role_arn: str | None, endpoint_url: str | None
    ) -> None:
        self.profile = profile
        self.role_arn = role_arn
        self.endpoint_url = endpoint_url
        self._lock = threading.Lock()
        self._session: boto3.Session | None = None
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._session_locked().client(
                        service,  # type: ignore[call-overload]
                        region_name=region,
                        endpoint_url=self.endpoint_url,
                        config=CLIENT_CONFIG,
                    )
                    self._clients[key] = client
        return client

    def _session_locked(self) -> boto3.Session:
        if self._session is None:
            base = boto3.Session(profile_name=self.profile)
            if self.role_arn is None:
                self._session = base
            else:
                sts = base.client(
                    "sts",
                    endpoint_url=self.endpoint_url,
                    config=CLIENT_CONFIG,
                    region_name=base.region_name or "us-east-1",
                )
                with aws_call(f"sts:AssumeRole {self.role_arn}"):
                    creds = sts.assume_role(RoleArn=self.role_arn, RoleSessionName="killswitch")[
                        "Credentials"
                    ]
                self._session = boto3.Session(
                    aws_access_key_id=creds["AccessKeyId"],
                    aws_secret_access_key=creds["SecretAccessKey"],
                    aws_session_token=creds["SessionToken"],
                )
        return self._session
